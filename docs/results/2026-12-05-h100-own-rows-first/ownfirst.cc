// Ad-hoc probe (not built by CMake): what splitting cp = 2's kernel call by a rank's own rows
// would cost in cuDNN (docs/PERF.md, "What limits it": a rank's own rows first). One rank's heads
// at cp = 2 (16 query / 4 KV heads of 128, bf16, causal, B = 1) over the whole sequence S:
//   base : one causal call S x S (what ulysses runs now; dK, dV in bf16);
//   rank0: queries [S/2, S) against keys [0, S) (bottom-right causal) and queries [0, S/2)
//          against keys [0, S/2) (causal); disjoint query rows, dK, dV summed in fp32;
//   rank1: queries [S/2, S) against keys [S/2, S) (causal) and queries [0, S) against keys
//          [0, S/2) (top-left causal); O in fp32 for the LSE merge, backward on the whole rows'
//          O and LSE (partial keys), dQ summed in fp32.
// Not timed: rank 0's fp32 -> bf16 conversion of dK, dV, rank 1's forward merge and dQ
// conversion (bytes over copy bandwidth, in the README). Cases interleaved in rounds after a
// warm-up, so each sees the same clocks; medians per case. Outputs not checked (timing only).
// Build from the repository root after scripts/build.sh:
//   g++ -std=c++20 -O2 -Iinclude -I/usr/local/cuda/include ownfirst.cc -o ownfirst \
//     build/libulysses.a -L/usr/local/cuda/lib64 -L/usr/local/cuda/lib -lcudnn -lnccl -lnvrtc \
//     -lcudart -lcuda -ldl -lpthread
//   ./ownfirst SEQ ROUNDS
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "ulysses/gpu.h"

using namespace ulysses;

namespace {
constexpr int H = 16, G = 4, D = 128;

void* alloc(std::size_t n) {
  void* p = nullptr;
  if (cudaMalloc(&p, n) != cudaSuccess) {
    std::printf("cudaMalloc %zu failed\n", n);
    std::exit(1);
  }
  cudaMemset(p, 0, n);
  return p;
}

struct Call {
  LocalProblem p;
  LocalForwardArgs f;
  LocalBackwardArgs b;
};

// Views into full-sequence buffers: query rows [q0, q0 + sq), key rows [k0, k0 + skv).
struct Buffers {
  char *q, *k, *v, *o, *o32, *dO, *dq, *dq32, *dk, *dv, *dk32, *dv32, *lse;
};

Call make(LocalAttention& kern, const Buffers& m, std::int64_t q0, std::int64_t sq, std::int64_t k0,
          std::int64_t skv, std::int64_t off, bool kv32, bool acc_kv, bool partial, bool acc_q,
          void* ws) {
  AttentionConfig a{.num_heads_q = H, .num_heads_kv = G, .head_dim = D, .causal = true};
  Call c;
  c.p = LocalProblem::unsharded(a, DType::kBFloat16, 1, sq);
  c.p.seqlen_kv = skv;
  c.p.diagonal_offset = off;
  c.p.grad_kv_dtype = kv32 ? DType::kFloat32 : DType::kBFloat16;
  c.p.accumulate_dkv = acc_kv;
  c.p.partial_keys = partial;
  c.p.out_fp32 = partial;
  c.p.grad_q_fp32 = partial;
  c.p.accumulate_dq = acc_q;
  const Device dev = kern.device();
  auto rows = [&](char* base, std::int64_t r0, std::int64_t n, int h, DType t) {
    return TensorView::contiguous(base + r0 * h * D * dtype_size(t), t, {1, n, h, D}, dev);
  };
  const DType bf = DType::kBFloat16, f32 = DType::kFloat32;
  c.f.q = rows(m.q, q0, sq, H, bf);
  c.f.k = rows(m.k, k0, skv, G, bf);
  c.f.v = rows(m.v, k0, skv, G, bf);
  c.f.o = partial ? rows(m.o32, q0, sq, H, f32) : rows(m.o, q0, sq, H, bf);
  // LSE [1, H, S] of the whole sequence; this call's rows from q0.
  c.f.lse = TensorView::strided(m.lse + q0 * 4, f32, {1, H, sq}, {0, 0, 1}, dev);
  c.f.workspace = ws;
  c.b.q = c.f.q;
  c.b.k = c.f.k;
  c.b.v = c.f.v;
  c.b.o = rows(m.o, q0, sq, H, bf);  // backward reads the merged, rounded O
  c.b.lse = c.f.lse;
  c.b.d_o = rows(m.dO, q0, sq, H, bf);
  c.b.dq = partial ? rows(m.dq32, q0, sq, H, f32) : rows(m.dq, q0, sq, H, bf);
  c.b.dk = kv32 ? rows(m.dk32, k0, skv, G, f32) : rows(m.dk, k0, skv, G, bf);
  c.b.dv = kv32 ? rows(m.dv32, k0, skv, G, f32) : rows(m.dv, k0, skv, G, bf);
  c.b.workspace = ws;
  return c;
}
}  // namespace

int main(int argc, char** argv) {
  const std::int64_t S = argc > 1 ? std::atoll(argv[1]) : 8192;
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 6;
  auto kr = create_cudnn_attention(0);
  if (!kr.is_ok()) {
    std::printf("%s\n", kr.status().to_string().c_str());
    return 1;
  }
  LocalAttention& kern = **kr;
  const std::size_t act = S * H * D, kv = S * G * D;
  Buffers m{};
  m.q = static_cast<char*>(alloc(act * 2));
  m.k = static_cast<char*>(alloc(kv * 2));
  m.v = static_cast<char*>(alloc(kv * 2));
  m.o = static_cast<char*>(alloc(act * 2));
  m.o32 = static_cast<char*>(alloc(act * 4));
  m.dO = static_cast<char*>(alloc(act * 2));
  m.dq = static_cast<char*>(alloc(act * 2));
  m.dq32 = static_cast<char*>(alloc(act * 4));
  m.dk = static_cast<char*>(alloc(kv * 2));
  m.dv = static_cast<char*>(alloc(kv * 2));
  m.dk32 = static_cast<char*>(alloc(kv * 4));
  m.dv32 = static_cast<char*>(alloc(kv * 4));
  m.lse = static_cast<char*>(alloc(S * H * 4));
  const std::int64_t h = S / 2;
  struct Case {
    const char* name;
    std::vector<Call> calls;
  };
  std::vector<Case> cases(3);
  std::size_t wsb = 0;
  auto add = [&](int ci, std::int64_t q0, std::int64_t sq, std::int64_t k0, std::int64_t skv,
                 std::int64_t off, bool kv32, bool acc_kv, bool partial, bool acc_q) {
    cases[ci].calls.push_back(
        make(kern, m, q0, sq, k0, skv, off, kv32, acc_kv, partial, acc_q, nullptr));
  };
  cases[0].name = "base (one call)";
  add(0, 0, S, 0, S, 0, false, false, false, false);
  cases[1].name = "rank0 (B then A)";
  add(1, h, h, 0, S, h, true, false, false, false);
  add(1, 0, h, 0, h, 0, true, true, false, false);
  cases[2].name = "rank1 (A then B)";
  add(2, h, h, h, h, 0, false, false, true, false);
  add(2, 0, S, 0, h, 0, false, false, true, true);
  for (Case& c : cases) {
    for (Call& x : c.calls) {
      // The LSE is [1, H, S], head stride S (make() leaves the head stride 0).
      x.f.lse = TensorView::strided(x.f.lse.data, DType::kFloat32, {1, H, x.p.seqlen}, {0, S, 1},
                                    kern.device());
      x.b.lse = x.f.lse;
      const Status st = kern.check_support(x.p);
      if (!st.is_ok()) {
        std::printf("%s: %s\n", c.name, st.to_string().c_str());
        return 1;
      }
      wsb = std::max(wsb, kern.workspace_bytes(x.p));
    }
  }
  void* ws = alloc(wsb);
  for (Case& c : cases) {
    for (Call& x : c.calls) x.f.workspace = x.b.workspace = ws;
  }
  cudaEvent_t e0, e1, e2;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  cudaEventCreate(&e2);
  auto step = [&](Case& c, float* tf, float* tb) {
    cudaEventRecord(e0);
    for (Call& x : c.calls) {
      const Status s = kern.forward(x.p, x.f, nullptr);
      if (!s.is_ok()) std::printf("%s forward: %s\n", c.name, s.to_string().c_str()), std::exit(1);
    }
    cudaEventRecord(e1);
    for (Call& x : c.calls) {
      const Status s = kern.backward(x.p, x.b, nullptr);
      if (!s.is_ok()) std::printf("%s backward: %s\n", c.name, s.to_string().c_str()), std::exit(1);
    }
    cudaEventRecord(e2);
    cudaEventSynchronize(e2);
    cudaEventElapsedTime(tf, e0, e1);
    cudaEventElapsedTime(tb, e1, e2);
  };
  float tf, tb;
  const auto t0 = std::chrono::steady_clock::now();  // warm-up: builds, then ~0.5 s of load
  while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(500)) {
    for (Case& c : cases) step(c, &tf, &tb);
  }
  std::vector<std::vector<float>> fw(cases.size()), bw(cases.size()), tot(cases.size());
  for (int r = 0; r < rounds; ++r) {
    for (std::size_t i = 0; i < cases.size(); ++i) {
      for (int rep = 0; rep < 3; ++rep) {
        step(cases[i], &tf, &tb);
        fw[i].push_back(tf);
        bw[i].push_back(tb);
        tot[i].push_back(tf + tb);
      }
    }
  }
  auto med = [](std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const float base = med(tot[0]);
  std::printf("seq %lld, %d heads / %d KV heads, D %d, causal bf16; medians of %d steps\n",
              static_cast<long long>(S), H, G, D, rounds * 3);
  for (std::size_t i = 0; i < cases.size(); ++i) {
    std::printf("%-18s fwd %8.3f  bwd %8.3f  total %8.3f ms  (%.4f of base)\n", cases[i].name,
                med(fw[i]), med(bw[i]), med(tot[i]), med(tot[i]) / base);
  }
  return 0;
}
