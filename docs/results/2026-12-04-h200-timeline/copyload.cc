// Ad-hoc (not built by CMake): does copy traffic beside cuDNN slow it down? On two GPUs, chunked
// steps hide the exchanges (copy-engine copies over NVLink) behind the kernel yet gain ~nothing
// at 32k and 128k. Here, one rank's cuDNN call at cp = 2 (16 q / 4 kv heads, D = 128, causal,
// bf16, random inputs, forward + backward) runs alone, then beside a stream of copies: device to
// device (the most memory traffic), and host to device plus device to host from pinned memory
// (copy engines for sure, at PCIe rates).
#include <cuda_runtime.h>

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

int main() {
  auto att_r = create_cudnn_attention(0);
  if (!att_r.is_ok()) return 1;
  LocalAttention& att = **att_r;
  std::mt19937 rng(45);
  const Device dev = Device::cuda(0);
  cudaStream_t ks, cs, cs2;
  cudaStreamCreateWithFlags(&ks, cudaStreamNonBlocking);
  cudaStreamCreateWithFlags(&cs, cudaStreamNonBlocking);
  cudaStreamCreateWithFlags(&cs2, cudaStreamNonBlocking);
  cudaEvent_t k0, k1, c0, c1, c2a, c2b;
  for (cudaEvent_t* e : {&k0, &k1, &c0, &c1, &c2a, &c2b}) cudaEventCreate(e);
  const std::size_t chunk = 64u << 20;
  void* src = dalloc(chunk);
  void* dst = dalloc(chunk);
  void *hsrc = nullptr, *hdst = nullptr;
  cudaMallocHost(&hsrc, chunk);
  cudaMallocHost(&hdst, chunk);
  for (std::int64_t S : {32768, 8192}) {
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
    auto kernel_ms = [&] {
      cudaEventRecord(k0, ks);
      check(att.forward(p, fa, ks));
      check(att.backward(p, ba, ks));
      cudaEventRecord(k1, ks);
    };
    // mode 0: alone; 1: beside device-to-device copies; 2: beside H2D and D2H copies.
    for (int mode = 0; mode < 3; ++mode) {
      float best = 1e9f, gbs = 0, gbs2 = 0;
      for (int it = 0; it < 6; ++it) {
        cudaDeviceSynchronize();
        // Enough copies to outlast the kernel (the kernel is timed by its own events).
        const int n = S >= 32768 ? (mode == 1 ? 1000 : 60) : (mode == 1 ? 60 : 6);
        if (mode > 0) {
          cudaEventRecord(c0, cs);
          for (int i = 0; i < n; ++i) {
            if (mode == 1) {
              cudaMemcpyAsync(dst, src, chunk, cudaMemcpyDeviceToDevice, cs);
            } else {
              cudaMemcpyAsync(dst, hsrc, chunk, cudaMemcpyHostToDevice, cs);
            }
          }
          cudaEventRecord(c1, cs);
          if (mode == 2) {
            cudaEventRecord(c2a, cs2);
            for (int i = 0; i < n; ++i)
              cudaMemcpyAsync(hdst, src, chunk, cudaMemcpyDeviceToHost, cs2);
            cudaEventRecord(c2b, cs2);
          }
        }
        kernel_ms();
        cudaDeviceSynchronize();
        float ms = 0, cms = 0, cms2 = 0;
        cudaEventElapsedTime(&ms, k0, k1);
        if (mode > 0) cudaEventElapsedTime(&cms, c0, c1);
        if (mode == 2) cudaEventElapsedTime(&cms2, c2a, c2b);
        if (it > 0 && ms < best) {
          best = ms;
          gbs = mode > 0 ? n * chunk / (cms * 1e-3) / 1e9 : 0;
          gbs2 = mode == 2 ? n * chunk / (cms2 * 1e-3) / 1e9 : 0;
          if (mode > 0 && cms < ms)
            std::printf("  (copies ended before the kernel: %.3f ms)\n", cms);
        }
      }
      const char* what[] = {"alone", "beside D2D copies", "beside H2D + D2H copies"};
      std::printf("S %6lld  16/4 heads fwd+bwd %-26s %8.3f ms", static_cast<long long>(S),
                  what[mode], best);
      if (mode == 1) std::printf("; copies %.0f GB/s (read + write each)", gbs);
      if (mode == 2) std::printf("; H2D %.0f GB/s, D2H %.0f GB/s", gbs, gbs2);
      std::printf("\n");
      std::fflush(stdout);
    }
    for (void* x : {q, k, v, o, d_o, dq, dk, dv, lse, ws}) cudaFree(x);
  }
  return 0;
}
