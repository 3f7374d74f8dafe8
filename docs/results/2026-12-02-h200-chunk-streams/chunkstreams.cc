// Ad-hoc (not built by CMake): does cuDNN lose less on head chunks when consecutive chunks' calls
// run on two streams (the tail of one overlapping the start of the next)? One rank's heads at
// cp = 2 (16 q heads, 4 kv heads, D = 128, causal, bf16), forward + backward, split into K chunks
// by KV head, each chunk in its own contiguous block as ulysses' pipeline lays them out.
#include <cuda_runtime.h>

#include <cstdio>
#include <memory>
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

Chunk make_chunk(LocalAttention& att, std::int64_t S, int hq, int hkv, int off_q, int off_kv) {
  Chunk c{};
  const Device dev = Device::cuda(0);
  AttentionConfig cfg;
  cfg.num_heads_q = 32;
  cfg.num_heads_kv = 8;
  cfg.head_dim = 128;
  cfg.causal = true;
  c.p.config = cfg;
  c.p.seqlen = S;
  c.p.head_offset_q = off_q;
  c.p.num_heads_q_local = hq;
  c.p.head_offset_kv = off_kv;
  c.p.num_heads_kv_local = hkv;
  const std::size_t qb = S * hq * 128 * 2, kb = S * hkv * 128 * 2;
  c.q = dalloc(qb), c.k = dalloc(kb), c.v = dalloc(kb), c.o = dalloc(qb), c.d_o = dalloc(qb);
  c.dq = dalloc(qb), c.dk = dalloc(kb), c.dv = dalloc(kb), c.lse = dalloc(S * hq * 4);
  // Random-ish bf16 inputs: small positive values from a byte pattern.
  std::vector<std::uint16_t> h(qb / 2);
  for (std::size_t i = 0; i < h.size(); ++i)
    h[i] = static_cast<std::uint16_t>(0x3c00 + (i * 2654435761u >> 25));
  cudaMemcpy(c.q, h.data(), qb, cudaMemcpyHostToDevice);
  cudaMemcpy(c.d_o, h.data(), qb, cudaMemcpyHostToDevice);
  cudaMemcpy(c.k, h.data(), kb, cudaMemcpyHostToDevice);
  cudaMemcpy(c.v, h.data() + 7, kb, cudaMemcpyHostToDevice);
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
  cudaStream_t s[2];
  cudaStreamCreateWithFlags(&s[0], cudaStreamNonBlocking);
  cudaStreamCreateWithFlags(&s[1], cudaStreamNonBlocking);
  cudaEvent_t a, b, ev[64];
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  for (auto& e : ev) cudaEventCreateWithFlags(&e, cudaEventDisableTiming);
  for (std::int64_t S : {8192, 32768}) {
    for (int K : {1, 2, 4}) {
      std::vector<Chunk> ch;
      for (int c = 0; c < K; ++c)
        ch.push_back(make_chunk(att, S, 16 / K, 4 / K, c * 16 / K, c * 4 / K));
      for (int streams : {1, 2}) {
        if (K == 1 && streams == 2) continue;
        for (int phase = 0; phase < 3; ++phase) {  // 0 forward, 1 backward, 2 both
          float best = 1e9f;
          for (int it = 0; it < 6; ++it) {
            cudaEventRecord(a, s[0]);
            int e = 0;
            cudaEventRecord(ev[e], s[0]);
            cudaStreamWaitEvent(s[1], ev[e++]);
            auto run = [&](bool fwd) {
              for (int c = 0; c < K; ++c) {
                Stream st = s[streams == 2 ? c % 2 : 0];
                check(fwd ? att.forward(ch[c].p, ch[c].fa, st)
                          : att.backward(ch[c].p, ch[c].ba, st));
              }
            };
            if (phase != 1) run(true);
            if (phase == 2) {  // backward after every forward chunk
              cudaEventRecord(ev[e], s[1]);
              cudaStreamWaitEvent(s[0], ev[e]);
              cudaEventRecord(ev[e + 1], s[0]);
              cudaStreamWaitEvent(s[1], ev[e + 1]);
              e += 2;
            }
            if (phase != 0) run(false);
            cudaEventRecord(ev[e], s[1]);
            cudaStreamWaitEvent(s[0], ev[e]);
            cudaEventRecord(b, s[0]);
            cudaEventSynchronize(b);
            float ms = 0;
            cudaEventElapsedTime(&ms, a, b);
            if (it > 1 && ms < best) best = ms;
          }
          const char* what[] = {"fwd", "bwd", "fwd+bwd"};
          std::printf("S %6lld  chunks %d  streams %d  %-8s %8.3f ms\n", static_cast<long long>(S),
                      K, streams, what[phase], best);
        }
      }
      for (auto& c : ch)
        for (void* p : {c.q, c.k, c.v, c.o, c.lse, c.d_o, c.dq, c.dk, c.dv, c.ws}) cudaFree(p);
    }
  }
  return 0;
}
