// Ad-hoc (not built by CMake): how fast does a copy run beside a cuDNN call that fills the GPU?
// In emulate.cc's traced steps a 48 MiB device-to-device cudaMemcpyAsync issued just before a
// 32k forward call took ~3.5 ms (14 GB/s) instead of ~25 us, so a chunk's inbound exchange ended
// only with the previous chunk's call. The peer-copy transport's copies to the rank itself are
// such copies. Cases (each 6 times, interleaved; a 16 / 4-head forward at SEQ on stream A, a copy
// on stream B): the copy alone; issued before the call; after it; after it, as two halves; after
// it on a stream of the greatest priority; device to host after it; cudaMemcpyDefault after it;
// cudaMemcpyBatchAsync with cudaMemcpyFlagPreferOverlapWithCompute after it, and alone.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "ulysses/attention.h"
#include "ulysses/gpu.h"

using namespace ulysses;

namespace {

void cu(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::printf("%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

void check(const Status& s) {
  if (!s.is_ok()) {
    std::printf("%s\n", s.to_string().c_str());
    std::exit(1);
  }
}

void* dalloc(std::size_t n) {
  void* p = nullptr;
  cu(cudaMalloc(&p, n), "malloc");
  cu(cudaMemset(p, 0, n), "memset");
  return p;
}

void fill(void* d, std::size_t bytes, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<std::uint16_t> h(bytes / 2);
  for (auto& x : h) {
    const float f = nd(rng);
    std::uint32_t w;
    std::memcpy(&w, &f, 4);
    x = static_cast<std::uint16_t>(w >> 16);
  }
  cu(cudaMemcpy(d, h.data(), bytes, cudaMemcpyHostToDevice), "fill");
}

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t S = argc > 1 ? std::atoll(argv[1]) : 32768;
  const std::size_t bytes = argc > 2 ? std::atoll(argv[2]) << 20 : std::size_t{48} << 20;
  const int Hq = 16, Hkv = 4, D = 128;
  const Device dev = Device::cuda(0);
  auto att_r = create_cudnn_attention(0);
  check(att_r.status());
  LocalAttention& att = **att_r;
  std::mt19937 rng(53);
  LocalProblem p;
  p.config.num_heads_q = 32;
  p.config.num_heads_kv = 8;
  p.config.head_dim = D;
  p.config.causal = true;
  p.seqlen = S;
  p.backward = false;
  p.num_heads_q_local = Hq;
  p.num_heads_kv_local = Hkv;
  const std::size_t qb = S * Hq * D * 2, kb = S * Hkv * D * 2;
  void *q = dalloc(qb), *k = dalloc(kb), *v = dalloc(kb), *o = dalloc(qb);
  void *lse = dalloc(S * Hq * 4), *ws = dalloc(att.workspace_bytes(p) + 1);
  fill(q, qb, rng), fill(k, kb, rng), fill(v, kb, rng);
  auto act = [&](void* d, int h) {
    return TensorView::contiguous(d, DType::kBFloat16, {1, S, h, D}, dev);
  };
  LocalForwardArgs fa;
  fa.q = act(q, Hq), fa.k = act(k, Hkv), fa.v = act(v, Hkv), fa.o = act(o, Hq);
  fa.lse = TensorView::contiguous(lse, DType::kFloat32, {1, Hq, S}, dev);
  fa.workspace = ws;
  void *src = dalloc(bytes), *dst = dalloc(bytes), *host = nullptr;
  cu(cudaMallocHost(&host, bytes), "pinned");
  cudaStream_t A, B, Bhi;
  int lo = 0, hi = 0;
  cu(cudaDeviceGetStreamPriorityRange(&lo, &hi), "priorities");
  cu(cudaStreamCreateWithFlags(&A, cudaStreamNonBlocking), "stream");
  cu(cudaStreamCreateWithFlags(&B, cudaStreamNonBlocking), "stream");
  cu(cudaStreamCreateWithPriority(&Bhi, cudaStreamNonBlocking, hi), "stream");
  const char* names[] = {"copy alone",
                         "D2D issued before the call",
                         "D2D issued after the call",
                         "D2D after, as two halves",
                         "D2D after, stream of greatest priority",
                         "D2H after the call",
                         "D2D after, cudaMemcpyDefault",
                         "D2D batch, prefer overlap, after the call",
                         "D2D batch, prefer overlap, alone"};
  const int cases = 9;
  std::vector<std::vector<float>> copy_ms(cases), call_ms(cases);
  cudaEvent_t gate;
  cu(cudaEventCreateWithFlags(&gate, cudaEventDisableTiming), "event");
  for (int i = 0; i < 40; ++i) check(att.forward(p, fa, A));  // warm (graphs, clocks)
  cu(cudaDeviceSynchronize(), "sync");
  for (int r = 0; r < 6; ++r) {
    for (int c = 0; c < cases; ++c) {
      cudaEvent_t ka, kb2, ca, cb;
      for (cudaEvent_t* e : {&ka, &kb2, &ca, &cb}) cu(cudaEventCreate(e), "event");
      cudaStream_t cs = c == 4 ? Bhi : B;
      cu(cudaEventRecord(gate, A), "record");
      cu(cudaStreamWaitEvent(cs, gate), "wait");
      auto copy = [&] {
        cu(cudaEventRecord(ca, cs), "record");
        if (c == 3) {
          cu(cudaMemcpyAsync(dst, src, bytes / 2, cudaMemcpyDeviceToDevice, cs), "copy");
          cu(cudaMemcpyAsync(static_cast<char*>(dst) + bytes / 2,
                             static_cast<char*>(src) + bytes / 2, bytes / 2,
                             cudaMemcpyDeviceToDevice, cs),
             "copy");
        } else if (c == 7 || c == 8) {
          cudaMemcpyAttributes attr{};
          attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
          attr.flags = cudaMemcpyFlagPreferOverlapWithCompute;
          void* dsts[] = {dst};
          const void* srcs[] = {src};
          std::size_t sizes[] = {bytes}, idx[] = {0};
          cu(cudaMemcpyBatchAsync(dsts, srcs, sizes, 1, &attr, idx, 1, cs), "batch copy");
        } else if (c == 5) {
          cu(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, cs), "copy");
        } else {
          cu(cudaMemcpyAsync(dst, src, bytes, c == 6 ? cudaMemcpyDefault : cudaMemcpyDeviceToDevice,
                             cs),
             "copy");
        }
        cu(cudaEventRecord(cb, cs), "record");
      };
      if (c == 1) copy();
      cu(cudaEventRecord(ka, A), "record");
      if (c > 0 && c != 8) check(att.forward(p, fa, A));
      cu(cudaEventRecord(kb2, A), "record");
      if (c != 1) copy();
      cu(cudaStreamSynchronize(cs), "sync");
      cu(cudaStreamSynchronize(A), "sync");
      float t = 0;
      cu(cudaEventElapsedTime(&t, ca, cb), "elapsed");
      copy_ms[c].push_back(t);
      cu(cudaEventElapsedTime(&t, ka, kb2), "elapsed");
      call_ms[c].push_back(t);
    }
  }
  for (int c = 0; c < cases; ++c) {
    std::sort(copy_ms[c].begin(), copy_ms[c].end());
    std::sort(call_ms[c].begin(), call_ms[c].end());
    const float m = copy_ms[c][copy_ms[c].size() / 2];
    std::printf(
        "S %6lld  %zu MiB  %-40s copy %8.3f ms (%7.1f GB/s, min %.3f max %.3f)  call %7.3f ms\n",
        static_cast<long long>(S), bytes >> 20, names[c], m,
        static_cast<double>(bytes) / (m * 1e-3) / 1e9, copy_ms[c].front(), copy_ms[c].back(),
        call_ms[c][call_ms[c].size() / 2]);
  }
  return 0;
}
