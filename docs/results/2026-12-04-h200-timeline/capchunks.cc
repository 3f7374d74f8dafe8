// Ad-hoc (not built by CMake): at the power cap, do head chunks on two streams beat one cuDNN call?
// chunkprio.cc with a heat-up said yes at 8k (one 16-head call 2.13 ms, four chunks on two streams
// 1.90) where boosted they tie. Here every case runs as sustained steps (forward then backward,
// nothing synced with the host), interleaved in rounds after ~2 s of load, so all cases share the
// same clocks: 16 / 4 heads (cp = 2's call) as 1 call, 2 and 4 chunks on two streams and 4 on
// one; 32 / 8 heads (cp = 1's) as 1 call and as 4 chunks on two streams.
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

struct Chunk {
  void *q, *k, *v, *o, *lse, *d_o, *dq, *dk, *dv, *ws;
  LocalProblem p;
  LocalForwardArgs fa;
  LocalBackwardArgs ba;
};

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

Chunk make_chunk(LocalAttention& att, std::int64_t S, int hq, int hkv, std::mt19937& rng) {
  Chunk c{};
  const Device dev = Device::cuda(0);
  AttentionConfig cfg;
  cfg.num_heads_q = 32;
  cfg.num_heads_kv = 8;
  cfg.head_dim = 128;
  cfg.causal = true;
  c.p.config = cfg;
  c.p.seqlen = S;
  c.p.backward = true;
  c.p.num_heads_q_local = hq;
  c.p.num_heads_kv_local = hkv;
  const std::size_t qb = S * hq * 128 * 2, kb = S * hkv * 128 * 2;
  c.q = dalloc(qb), c.k = dalloc(kb), c.v = dalloc(kb), c.o = dalloc(qb), c.d_o = dalloc(qb);
  c.dq = dalloc(qb), c.dk = dalloc(kb), c.dv = dalloc(kb), c.lse = dalloc(S * hq * 4);
  fill(c.q, qb, rng), fill(c.k, kb, rng), fill(c.v, kb, rng), fill(c.d_o, qb, rng);
  c.ws = dalloc(att.workspace_bytes(c.p) + 1);
  auto act = [&](void* d, int heads) {
    return TensorView::contiguous(d, DType::kBFloat16, {1, S, heads, 128}, dev);
  };
  c.fa.q = act(c.q, hq), c.fa.k = act(c.k, hkv), c.fa.v = act(c.v, hkv), c.fa.o = act(c.o, hq);
  c.fa.lse = TensorView::contiguous(c.lse, DType::kFloat32, {1, hq, S}, dev);
  c.fa.workspace = c.ws;
  c.ba.q = c.fa.q, c.ba.k = c.fa.k, c.ba.v = c.fa.v, c.ba.o = c.fa.o, c.ba.lse = c.fa.lse;
  c.ba.d_o = act(c.d_o, hq), c.ba.dq = act(c.dq, hq), c.ba.dk = act(c.dk, hkv),
  c.ba.dv = act(c.dv, hkv);
  c.ba.workspace = c.ws;
  return c;
}

void check(Status s) {
  if (!s.is_ok()) {
    std::printf("%s\n", s.to_string().c_str());
    std::exit(1);
  }
}

struct Case {
  const char* name;
  int hq, hkv, K, streams;
  std::vector<Chunk> chunks;
  std::vector<float> ms;
};

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t S = argc > 1 ? std::atoll(argv[1]) : 8192;
  auto att_r = create_cudnn_attention(0);
  if (!att_r.is_ok()) return 1;
  LocalAttention& att = **att_r;
  std::mt19937 rng(47);
  std::vector<Case> cases = {{"16 heads, 1 call", 16, 4, 1, 1, {}, {}},
                             {"16 heads, 2 chunks, 2 streams", 16, 4, 2, 2, {}, {}},
                             {"16 heads, 4 chunks, 2 streams", 16, 4, 4, 2, {}, {}},
                             {"16 heads, 4 chunks, 1 stream", 16, 4, 4, 1, {}, {}},
                             {"32 heads, 1 call", 32, 8, 1, 1, {}, {}},
                             {"32 heads, 4 chunks, 2 streams", 32, 8, 4, 2, {}, {}}};
  for (Case& c : cases) {
    for (int k = 0; k < c.K; ++k)
      c.chunks.push_back(make_chunk(att, S, c.hq / c.K, c.hkv / c.K, rng));
  }
  cudaStream_t s[2];
  cudaStreamCreateWithFlags(&s[0], cudaStreamNonBlocking);
  cudaStreamCreateWithFlags(&s[1], cudaStreamNonBlocking);
  cudaEvent_t j0, j1, j2;
  for (cudaEvent_t* e : {&j0, &j1, &j2}) cudaEventCreateWithFlags(e, cudaEventDisableTiming);
  // One step of a case: forward of every chunk, then backward of every chunk, chunk k on stream
  // k mod streams; both streams joined at the boundary and at the end.
  auto step = [&](Case& c) {
    cudaEventRecord(j0, s[0]);
    cudaStreamWaitEvent(s[1], j0);
    for (int phase = 0; phase < 2; ++phase) {
      for (int k = 0; k < c.K; ++k) {
        Chunk& ch = c.chunks[static_cast<std::size_t>(k)];
        cudaStream_t st = s[k % c.streams];
        check(phase == 0 ? att.forward(ch.p, ch.fa, st) : att.backward(ch.p, ch.ba, st));
      }
      cudaEventRecord(j1, s[1]);
      cudaStreamWaitEvent(s[0], j1);
      cudaEventRecord(j2, s[0]);
      cudaStreamWaitEvent(s[1], j2);
    }
  };
  for (Case& c : cases) step(c);  // graphs built
  cudaDeviceSynchronize();
  const int heat = static_cast<int>(2500 / (3.5 * (S / 8192.0) * (S / 8192.0)));
  for (int i = 0; i < heat; ++i) step(cases[4]);  // ~2.5 s at cp = 1's pace
  const int rounds = 6, per = 3;
  struct Rec {
    std::size_t c;
    cudaEvent_t a, b;
  };
  std::vector<Rec> recs;
  for (int r = 0; r < rounds; ++r) {
    for (std::size_t i = 0; i < cases.size(); ++i) {
      for (int k = 0; k < per; ++k) {
        Rec x{i};
        cudaEventCreate(&x.a);
        cudaEventCreate(&x.b);
        cudaEventRecord(x.a, s[0]);
        step(cases[i]);
        cudaEventRecord(x.b, s[0]);
        recs.push_back(x);
      }
    }
  }
  cudaDeviceSynchronize();
  for (const Rec& x : recs) {
    float t = 0;
    cudaEventElapsedTime(&t, x.a, x.b);
    cases[x.c].ms.push_back(t);
  }
  for (Case& c : cases) {
    std::vector<float> v = c.ms;
    std::sort(v.begin(), v.end());
    std::printf("S %6lld  %-32s median %8.3f ms (min %8.3f, max %8.3f) over %zu steps\n",
                static_cast<long long>(S), c.name, v[v.size() / 2], v.front(), v.back(), v.size());
  }
  std::printf("in order (case: ms):");
  for (const Rec& x : recs) {
    float t = 0;
    cudaEventElapsedTime(&t, x.a, x.b);
    std::printf(" %zu:%.3f", x.c, t);
  }
  std::printf("\n");
  return 0;
}
