// Ad-hoc (not built by CMake): when head chunks' cuDNN calls run on two streams at once (as the
// plan does where calls are small), when does each chunk finish? Its outbound exchange can only
// start then. Compares one stream, two streams at equal priority (the plan today), and streams
// whose priority falls with the chunk index (chunk 0 first; later chunks fill the SMs it leaves).
// One rank's heads at cp = 2 (16 q heads, 4 kv heads, D = 128, causal, bf16), random inputs.
#include <cuda_runtime.h>

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

Chunk make_chunk(LocalAttention& att, std::int64_t S, int hq, int hkv, int off_q, int off_kv,
                 std::mt19937& rng) {
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
  c.p.head_offset_q = off_q;
  c.p.num_heads_q_local = hq;
  c.p.head_offset_kv = off_kv;
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

}  // namespace

int main() {
  auto att_r = create_cudnn_attention(0);
  if (!att_r.is_ok()) return 1;
  LocalAttention& att = **att_r;
  int least = 0, greatest = 0;
  cudaDeviceGetStreamPriorityRange(&least, &greatest);
  std::printf("stream priorities: least %d, greatest %d\n", least, greatest);
  std::mt19937 rng(44);
  cudaEvent_t a, done[8], b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  for (auto& e : done) cudaEventCreate(&e);
  cudaEvent_t gate;
  cudaEventCreateWithFlags(&gate, cudaEventDisableTiming);
  const bool at_cap = std::getenv("AT_CAP") != nullptr;  // heat up ~2 s before each case
  for (std::int64_t S : {8192, 32768}) {
    if (at_cap && S != 8192) continue;
    for (int K : {1, 2, 4}) {
      std::vector<Chunk> ch;
      for (int c = 0; c < K; ++c)
        ch.push_back(make_chunk(att, S, 16 / K, 4 / K, c * 16 / K, c * 4 / K, rng));
      // mode 0: one stream; 1: two streams (c % 2), equal priority; 2: two streams, the even
      // chunks' stream above the odd ones'; 3: a stream per chunk, priority falling with c.
      for (int mode = 0; mode < 4; ++mode) {
        if (K == 1 && mode > 0) continue;
        if (K == 2 && mode == 3) continue;
        std::vector<cudaStream_t> s(static_cast<std::size_t>(K));
        for (int c = 0; c < K; ++c) {
          int prio = least;
          if (mode == 2) prio = (c % 2 == 0) ? greatest : least;
          if (mode == 3) prio = std::max(greatest + c, greatest) <= least ? greatest + c : least;
          cudaStreamCreateWithPriority(&s[c], cudaStreamNonBlocking, prio);
        }
        auto stream_of = [&](int c) {
          if (mode == 0) return s[0];
          if (mode == 1 || mode == 2) return s[c % 2];
          return s[c];
        };
        if (at_cap) {  // ~2 s of back-to-back calls: the power cap's clocks
          for (int i = 0; i < 1000; ++i) {
            for (int c = 0; c < K; ++c) {
              check(att.forward(ch[c].p, ch[c].fa, s[0]));
              check(att.backward(ch[c].p, ch[c].ba, s[0]));
            }
          }
          cudaDeviceSynchronize();
        }
        for (int phase = 0; phase < 2; ++phase) {  // 0 forward, 1 backward
          float best = 1e9f;
          std::vector<float> fin_best(static_cast<std::size_t>(K));
          for (int it = 0; it < 8; ++it) {
            cudaDeviceSynchronize();
            cudaEventRecord(a, s[0]);
            cudaEventRecord(gate, s[0]);
            for (int c = 1; c < K; ++c) cudaStreamWaitEvent(s[c], gate);
            for (int c = 0; c < K; ++c) {
              cudaStream_t st = stream_of(c);
              check(phase == 0 ? att.forward(ch[c].p, ch[c].fa, st)
                               : att.backward(ch[c].p, ch[c].ba, st));
              cudaEventRecord(done[c], st);
            }
            for (int c = 1; c < K; ++c) cudaStreamWaitEvent(s[0], done[c]);
            cudaEventRecord(b, s[0]);
            cudaEventSynchronize(b);
            float ms = 0;
            cudaEventElapsedTime(&ms, a, b);
            if (it > 1 && ms < best) {
              best = ms;
              for (int c = 0; c < K; ++c) cudaEventElapsedTime(&fin_best[c], a, done[c]);
            }
          }
          const char* modes[] = {"1 stream", "2 streams", "2 streams, even chunks first",
                                 "a stream per chunk, by priority"};
          std::printf("S %6lld  chunks %d  %-32s %s %8.3f ms; chunks done at",
                      static_cast<long long>(S), K, modes[mode], phase == 0 ? "fwd" : "bwd", best);
          for (int c = 0; c < K; ++c) std::printf(" %.3f", fin_best[c]);
          std::printf("\n");
          std::fflush(stdout);
        }
        for (auto st : s) cudaStreamDestroy(st);
      }
      for (auto& c : ch)
        for (void* p : {c.q, c.k, c.v, c.o, c.lse, c.d_o, c.dq, c.dk, c.dv, c.ws}) cudaFree(p);
    }
  }
  return 0;
}
