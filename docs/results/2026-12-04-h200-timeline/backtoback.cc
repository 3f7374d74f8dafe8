// Ad-hoc (not built by CMake): why do cuDNN calls timed alone (--trace-calls: each call after a
// stream sync) add up to ~10% less than the same calls back to back in a step (cp = 1, 32k:
// 12.75 + 36.88 ms alone, 55.3 ms per step)? Forward and backward on the whole sequence (32 q / 8
// kv heads, D = 128, causal, bf16, random inputs), each call between its own events, with
// different gaps between the calls and between steps.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>
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
  std::mt19937 rng(46);
  const Device dev = Device::cuda(0);
  cudaStream_t st;
  cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking);
  cudaEvent_t e[4];
  for (auto& x : e) cudaEventCreate(&x);
  const int hq = 32, hkv = 8;
  LocalProblem p;
  p.config.num_heads_q = hq;
  p.config.num_heads_kv = hkv;
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
  // gap between fwd and bwd: -1 none (back to back), 0 a stream sync, else a host sleep of that
  // many ms after the sync; rest: host sleep between steps (ms).
  struct Mode {
    const char* name;
    int gap_ms;
    int rest_ms;
  };
  const Mode modes[] = {{"back to back, steps back to back", -1, -1},
                        {"back to back, steps synced", -1, 0},
                        {"sync between calls", 0, 0},
                        {"5 ms idle between calls", 5, 5},
                        {"back to back, 200 ms idle between steps", -1, 200},
                        {"back to back, steps back to back (again)", -1, -1}};
  for (const Mode& m : modes) {
    std::vector<float> f, b, step;
    for (int it = 0; it < 8; ++it) {
      if (m.rest_ms >= 0) {
        cudaStreamSynchronize(st);
        if (m.rest_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(m.rest_ms));
      }
      cudaEventRecord(e[0], st);
      check(att.forward(p, fa, st));
      cudaEventRecord(e[1], st);
      if (m.gap_ms >= 0) {
        cudaStreamSynchronize(st);
        if (m.gap_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(m.gap_ms));
      }
      cudaEventRecord(e[2], st);
      check(att.backward(p, ba, st));
      cudaEventRecord(e[3], st);
      cudaEventSynchronize(e[3]);
      float x = 0, y = 0;
      cudaEventElapsedTime(&x, e[0], e[1]);
      cudaEventElapsedTime(&y, e[2], e[3]);
      if (it >= 2) f.push_back(x), b.push_back(y), step.push_back(x + y);
    }
    auto med = [](std::vector<float> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    auto lo = [](const std::vector<float>& v) { return *std::min_element(v.begin(), v.end()); };
    std::printf("S %6lld  %-42s fwd %8.3f (min %8.3f)  bwd %8.3f (min %8.3f)  sum %8.3f ms\n",
                static_cast<long long>(S), m.name, med(f), lo(f), med(b), lo(b), med(step));
    std::fflush(stdout);
  }
  return 0;
}
