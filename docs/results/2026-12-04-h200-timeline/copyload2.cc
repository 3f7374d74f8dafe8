// Ad-hoc (not built by CMake), second version: does copy traffic beside cuDNN slow it down once
// the GPU runs at its power cap (as in sustained steps), not just after an idle moment? On two
// GPUs, chunked steps hide the exchanges (copy-engine copies over NVLink) behind the kernel yet
// gain ~nothing at 32k and 128k. Here, one rank's cuDNN call at cp = 2 (16 q / 4 kv heads, D = 128,
// causal, bf16, random inputs, forward + backward) runs alone, then beside a stream of copies:
// device to device (the most memory traffic), and host to device plus device to host from pinned
// memory (copy engines for sure, at PCIe rates).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "ulysses/attention.h"
#include "ulysses/gpu.h"

using namespace ulysses;

namespace {

void* dalloc(std::size_t n) {
  void* p = nullptr;
  if (cudaMalloc(&p, n) != cudaSuccess) std::abort();
  cudaMemset(p, 0, n);
  return p;
}

void fill(void* d, std::size_t bytes, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<std::uint16_t> h(bytes / 2);
  for (auto& x : h) {
    float f = nd(rng);
    std::uint32_t w;
    std::memcpy(&w, &f, 4);
    x = static_cast<std::uint16_t>(w >> 16);
  }
  cudaMemcpy(d, h.data(), bytes, cudaMemcpyHostToDevice);
}

void check(Status s) {
  if (!s.is_ok()) {
    std::printf("%s\n", s.to_string().c_str());
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t S = argc > 1 ? std::atoll(argv[1]) : 32768;
  auto att_r = create_cudnn_attention(0);
  if (!att_r.is_ok()) return 1;
  LocalAttention& att = **att_r;
  std::mt19937 rng(45);
  const Device dev = Device::cuda(0);
  cudaStream_t ks, cs, cs2;
  cudaStreamCreateWithFlags(&ks, cudaStreamNonBlocking);
  cudaStreamCreateWithFlags(&cs, cudaStreamNonBlocking);
  cudaStreamCreateWithFlags(&cs2, cudaStreamNonBlocking);
  const std::size_t chunk = 64u << 20;
  void* src = dalloc(chunk);
  void* dst = dalloc(chunk);
  void *hsrc = nullptr, *hdst = nullptr;
  cudaMallocHost(&hsrc, chunk);
  cudaMallocHost(&hdst, chunk);
  const int hq = 16, hkv = 4;
  LocalProblem p;
  p.config.num_heads_q = 32;
  p.config.num_heads_kv = 8;
  p.config.head_dim = 128;
  p.config.causal = true;
  p.seqlen = S;
  p.backward = true;
  p.num_heads_q_local = hq;
  p.num_heads_kv_local = hkv;
  const std::size_t qb = S * hq * 128 * 2, kb = S * hkv * 128 * 2;
  void *q = dalloc(qb), *k = dalloc(kb), *v = dalloc(kb), *o = dalloc(qb), *d_o = dalloc(qb);
  void *dq = dalloc(qb), *dk = dalloc(kb), *dv = dalloc(kb), *lse = dalloc(S * hq * 4);
  fill(q, qb, rng), fill(k, kb, rng), fill(v, kb, rng), fill(d_o, qb, rng);
  void* ws = dalloc(att.workspace_bytes(p) + 1);
  auto act = [&](void* d, int heads) {
    return TensorView::contiguous(d, DType::kBFloat16, {1, S, heads, 128}, dev);
  };
  LocalForwardArgs fa;
  fa.q = act(q, hq), fa.k = act(k, hkv), fa.v = act(v, hkv), fa.o = act(o, hq);
  fa.lse = TensorView::contiguous(lse, DType::kFloat32, {1, hq, S}, dev);
  fa.workspace = ws;
  LocalBackwardArgs ba;
  ba.q = fa.q, ba.k = fa.k, ba.v = fa.v, ba.o = fa.o, ba.lse = fa.lse;
  ba.d_o = act(d_o, hq), ba.dq = act(dq, hq), ba.dk = act(dk, hkv), ba.dv = act(dv, hkv);
  ba.workspace = ws;
  // Copies per step that last about a step: D2D at ~1.1 TB/s, H2D/D2H at ~50 GB/s (64 MiB each).
  const double step_ms = S >= 32768 ? 28.0 * (S / 32768.0) * (S / 32768.0) : 1.9;
  const int n_d2d = std::max(1, static_cast<int>(step_ms / 0.061));
  const int n_pcie = std::max(1, static_cast<int>(step_ms / 1.35));
  // 0: alone; 1: beside D2D copies; 2: beside H2D + D2H copies. Rounds of every mode, the GPU
  // never idle (the next step waits for the last one's copies on the device, not the host).
  const int warm = S >= 32768 ? static_cast<int>(2000 / step_ms) : 600;  // ~2 s at the cap
  const int rounds = 4, per = 3;
  struct Rec {
    int mode;
    cudaEvent_t a, b, ca, cb, da, db;
  };
  std::vector<Rec> recs;
  cudaEvent_t gate, cdone, ddone;
  cudaEventCreateWithFlags(&gate, cudaEventDisableTiming);
  cudaEventCreateWithFlags(&cdone, cudaEventDisableTiming);
  cudaEventCreateWithFlags(&ddone, cudaEventDisableTiming);
  for (int i = 0; i < warm; ++i) {
    check(att.forward(p, fa, ks));
    check(att.backward(p, ba, ks));
  }
  for (int r = 0; r < rounds; ++r) {
    for (int mode = 0; mode < 3; ++mode) {
      for (int i = 0; i < per; ++i) {
        Rec x{mode};
        for (cudaEvent_t* e : {&x.a, &x.b, &x.ca, &x.cb, &x.da, &x.db}) cudaEventCreate(e);
        cudaEventRecord(gate, ks);
        if (mode > 0) {
          cudaStreamWaitEvent(cs, gate);
          cudaEventRecord(x.ca, cs);
          for (int c = 0; c < (mode == 1 ? n_d2d : n_pcie); ++c) {
            cudaMemcpyAsync(dst, mode == 1 ? src : hsrc, chunk,
                            mode == 1 ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice, cs);
          }
          cudaEventRecord(x.cb, cs);
          cudaEventRecord(cdone, cs);
        }
        if (mode == 2) {
          cudaStreamWaitEvent(cs2, gate);
          cudaEventRecord(x.da, cs2);
          for (int c = 0; c < n_pcie; ++c) {
            cudaMemcpyAsync(hdst, src, chunk, cudaMemcpyDeviceToHost, cs2);
          }
          cudaEventRecord(x.db, cs2);
          cudaEventRecord(ddone, cs2);
        }
        cudaEventRecord(x.a, ks);
        check(att.forward(p, fa, ks));
        check(att.backward(p, ba, ks));
        cudaEventRecord(x.b, ks);
        if (mode > 0) cudaStreamWaitEvent(ks, cdone);
        if (mode == 2) cudaStreamWaitEvent(ks, ddone);
        recs.push_back(x);
      }
    }
  }
  cudaDeviceSynchronize();
  std::vector<std::vector<float>> ms(3), cms(3), dms(3);
  for (const Rec& x : recs) {
    float t = 0, c = 0, d = 0;
    cudaEventElapsedTime(&t, x.a, x.b);
    if (x.mode > 0) cudaEventElapsedTime(&c, x.ca, x.cb);
    if (x.mode == 2) cudaEventElapsedTime(&d, x.da, x.db);
    ms[x.mode].push_back(t), cms[x.mode].push_back(c), dms[x.mode].push_back(d);
  }
  const char* what[] = {"alone", "beside D2D copies", "beside H2D + D2H copies"};
  for (int mode = 0; mode < 3; ++mode) {
    std::vector<float> v = ms[mode];
    std::sort(v.begin(), v.end());
    std::printf(
        "S %6lld  16/4 heads fwd+bwd at the power cap, %-24s median %8.3f ms (min %8.3f, max "
        "%8.3f)",
        static_cast<long long>(S), what[mode], v[v.size() / 2], v.front(), v.back());
    if (mode > 0) {
      std::vector<float> c = cms[mode];
      std::sort(c.begin(), c.end());
      const int n = mode == 1 ? n_d2d : n_pcie;
      std::printf("; copies %.0f GB/s over %.2f ms", n * chunk / (c[c.size() / 2] * 1e-3) / 1e9,
                  c[c.size() / 2]);
    }
    std::printf("\n");
  }
  std::printf("per-step order (mode: ms):");
  for (std::size_t i = 0; i < recs.size(); ++i)
    std::printf(
        " %d:%.2f", recs[i].mode, ms[recs[i].mode][0] * 0 + [&] {
          float t = 0;
          cudaEventElapsedTime(&t, recs[i].a, recs[i].b);
          return t;
        }());
  std::printf("\n");
  return 0;
}
