// Ad-hoc (not built by CMake): what a packed (VarlenRows) cuDNN call costs beyond its work as its
// views grow: one 1024 x 1024 causal piece inside views of Sq x Skv rows. Variants: as allgather's
// backward parts run (dK/dV widened and added to fp32 sums, dQ fp32), and plain bf16 gradients.
#include <cuda_runtime.h>
#include <cstdio>
#include <vector>
#include "ulysses/gpu.h"
using namespace ulysses;
int main() {
  auto k = create_cudnn_attention(0);
  LocalAttention& kern = **k;
  const int H = 32, D = 128;
  struct Shape {
    std::int64_t sq, skv;
    int G;
    bool widen;
  };
  std::vector<Shape> shapes = {
      {8192, 8192, 8, true},    {32768, 32768, 8, true},  {32768, 98304, 8, true},
      {65536, 32768, 8, true},  {65536, 65536, 8, true},  {65536, 131072, 8, true},
      {32768, 32768, 8, false}, {65536, 65536, 8, false}, {65536, 65536, 32, false}};
  const std::int64_t piece = 1024;
  std::vector<std::int32_t> qb{0}, ql{(int)piece}, kb{0}, kl{(int)piece};
  std::int32_t* dev;
  cudaMalloc(&dev, 16);
  std::int32_t host[4] = {0, (int)piece, 0, (int)piece};
  cudaMemcpy(dev, host, 16, cudaMemcpyHostToDevice);
  VarlenRows rows{qb, ql, kb, kl, dev, dev + 1, dev + 2, dev + 3};
  for (const Shape& s : shapes) {
    const int G = s.G;
    AttentionConfig a{.num_heads_q = H, .num_heads_kv = G, .head_dim = D, .causal = true};
    LocalProblem p = LocalProblem::unsharded(a, DType::kBFloat16, 1, s.sq, true);
    p.varlen_rows = true;
    p.seqlen_kv = s.skv;
    if (s.widen) {
      p.grad_kv_dtype = DType::kFloat32;
      p.accumulate_dkv = true;
      p.partial_keys = true;
      p.grad_q_fp32 = true;
    }
    Status st = kern.check_support(p);
    if (!st.is_ok()) {
      std::printf("%s\n", st.to_string().c_str());
      continue;
    }
    auto alloc = [](std::size_t n) {
      void* q;
      cudaMalloc(&q, n);
      cudaMemset(q, 0, n);
      return q;
    };
    const int gk = s.widen ? 4 : 2, gq = s.widen ? 4 : 2;
    void* q = alloc(s.sq * H * D * 2);
    void* o = alloc(s.sq * H * D * 2);
    void* dO = alloc(s.sq * H * D * 2);
    void* dq = alloc(s.sq * H * D * gq);
    void* kk = alloc(s.skv * G * D * 2);
    void* vv = alloc(s.skv * G * D * 2);
    void* dk = alloc(s.skv * G * D * gk);
    void* dv = alloc(s.skv * G * D * gk);
    void* lse = alloc(s.sq * H * 4);
    std::size_t wsb = kern.workspace_bytes(p);
    void* ws = alloc(wsb);
    Device dv_ = kern.device();
    auto act = [&](void* d, std::int64_t S, int h, DType t) {
      return TensorView::contiguous(d, t, {1, S, h, D}, dv_);
    };
    DType gkd = s.widen ? DType::kFloat32 : DType::kBFloat16;
    LocalForwardArgs f{.q = act(q, s.sq, H, DType::kBFloat16),
                       .k = act(kk, s.skv, G, DType::kBFloat16),
                       .v = act(vv, s.skv, G, DType::kBFloat16),
                       .o = act(o, s.sq, H, DType::kBFloat16),
                       .lse = TensorView::contiguous(lse, DType::kFloat32, {1, H, s.sq}, dv_),
                       .rows = rows,
                       .workspace = ws};
    LocalBackwardArgs b{.q = f.q,
                        .k = f.k,
                        .v = f.v,
                        .o = f.o,
                        .lse = f.lse,
                        .d_o = act(dO, s.sq, H, DType::kBFloat16),
                        .dq = act(dq, s.sq, H, gkd),
                        .dk = act(dk, s.skv, G, gkd),
                        .dv = act(dv, s.skv, G, gkd),
                        .rows = rows,
                        .workspace = ws};
    cudaEvent_t e0, e1, e2;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    cudaEventCreate(&e2);
    float tf = 1e9, tb = 1e9;
    for (int it = 0; it < 6; ++it) {
      cudaEventRecord(e0);
      Status a1 = kern.forward(p, f, nullptr);
      cudaEventRecord(e1);
      Status a2 = kern.backward(p, b, nullptr);
      cudaEventRecord(e2);
      cudaEventSynchronize(e2);
      if (!a1.is_ok() || !a2.is_ok()) {
        std::printf("%s %s\n", a1.to_string().c_str(), a2.to_string().c_str());
        break;
      }
      float x, y;
      cudaEventElapsedTime(&x, e0, e1);
      cudaEventElapsedTime(&y, e1, e2);
      if (it > 0) {
        tf = std::min(tf, x);
        tb = std::min(tb, y);
      }
    }
    std::printf("views q %6lld kv %6lld G %2d %s: fwd %6.2f ms  bwd %6.2f ms  (ws %.2f GiB)\n",
                (long long)s.sq, (long long)s.skv, G, s.widen ? "fp32 sums" : "bf16     ", tf, tb,
                wsb / double(1 << 30));
    for (void* x : {q, o, dO, dq, kk, vv, dk, dv, lse, ws}) cudaFree(x);
  }
}
