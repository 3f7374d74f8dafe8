// Ad-hoc: VarlenRows calls of P pieces in 32k x 32k views (as ring's packed blocks), H=32 G=8
// D=128, fp32 gradient sums as ring runs them. Same work in different cuDNN geometries (S_max, B).
#include <cuda_runtime.h>
#include <cstdio>
#include <vector>
#include "ulysses/gpu.h"
using namespace ulysses;
int main() {
  auto k = create_cudnn_attention(0);
  LocalAttention& kern = **k;
  const int H = 32, G = 8, D = 128;
  const std::int64_t S = 32768;
  struct Case {
    const char* name;
    std::vector<int> lens;
    bool causal;
  };
  auto rep = [](int n, int len) { return std::vector<int>(n, len); };
  auto with = [](std::vector<int> v, int last) {
    v.back() = last;
    return v;
  };
  std::vector<Case> cases = {
      {"64 x 512 full", rep(64, 512), false},
      {"63 x 512 + 520 full", with(rep(64, 512), 520), false},
      {"63 x 512 + 1100 full", with(rep(64, 512), 1100), false},
      {"64 x 504 + 1 x 64 full (65 pieces)",
       [] {
         auto v = std::vector<int>(64, 504);
         v.push_back(64);
         return v;
       }(),
       false},
      {"16 x 2048 full", rep(16, 2048), false},
      {"4 x 8192 full", rep(4, 8192), false},
      {"64 x 512 causal", rep(64, 512), true},
      {"63 x 512 + 1100 causal", with(rep(64, 512), 1100), true},
      {"16 x 2048 causal", rep(16, 2048), true},
  };
  auto alloc = [](std::size_t n) {
    void* q;
    cudaMalloc(&q, n);
    cudaMemset(q, 0, n);
    return q;
  };
  void* q = alloc(S * H * D * 2);
  void* o = alloc(S * H * D * 2);
  void* dO = alloc(S * H * D * 2);
  void* dq = alloc(S * H * D * 4);
  void* kk = alloc(S * G * D * 2);
  void* vv = alloc(S * G * D * 2);
  void* dk = alloc(S * G * D * 4);
  void* dv = alloc(S * G * D * 4);
  void* lse = alloc(S * H * 4);
  std::int32_t* dev;
  cudaMalloc(&dev, 4 * 4096 * 4);
  Device dv_ = kern.device();
  auto act = [&](void* d, int h, DType t) {
    return TensorView::contiguous(d, t, {1, S, h, D}, dv_);
  };
  for (const Case& c : cases) {
    const int n = static_cast<int>(c.lens.size());
    std::vector<std::int32_t> qb(n), ql(c.lens.begin(), c.lens.end());
    double pairs = 0;
    std::int32_t at = 0;
    for (int i = 0; i < n; ++i) {
      qb[i] = at;
      at += ql[i];
      pairs += c.causal ? ql[i] * (ql[i] + 1.0) / 2 : double(ql[i]) * ql[i];
    }
    std::vector<std::int32_t> host(4 * n);
    for (int i = 0; i < n; ++i) {
      host[i] = qb[i];
      host[n + i] = ql[i];
      host[2 * n + i] = qb[i];
      host[3 * n + i] = ql[i];
    }
    cudaMemcpy(dev, host.data(), host.size() * 4, cudaMemcpyHostToDevice);
    VarlenRows rows{qb, ql, qb, ql, dev, dev + n, dev + 2 * n, dev + 3 * n};
    AttentionConfig a{.num_heads_q = H, .num_heads_kv = G, .head_dim = D, .causal = c.causal};
    LocalProblem p = LocalProblem::unsharded(a, DType::kBFloat16, 1, S, true);
    p.varlen_rows = true;
    p.seqlen_kv = S;
    p.grad_kv_dtype = DType::kFloat32;
    p.accumulate_dkv = true;
    p.partial_keys = true;
    p.grad_q_fp32 = true;
    std::size_t wsb = kern.workspace_bytes(p);
    void* ws = alloc(wsb);
    LocalForwardArgs f{.q = act(q, H, DType::kBFloat16),
                       .k = act(kk, G, DType::kBFloat16),
                       .v = act(vv, G, DType::kBFloat16),
                       .o = act(o, H, DType::kBFloat16),
                       .lse = TensorView::contiguous(lse, DType::kFloat32, {1, H, S}, dv_),
                       .rows = rows,
                       .workspace = ws};
    LocalBackwardArgs b{.q = f.q,
                        .k = f.k,
                        .v = f.v,
                        .o = f.o,
                        .lse = f.lse,
                        .d_o = act(dO, H, DType::kBFloat16),
                        .dq = act(dq, H, DType::kFloat32),
                        .dk = act(dk, G, DType::kFloat32),
                        .dv = act(dv, G, DType::kFloat32),
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
    const double fl = 4.0 * pairs * H * D;
    std::printf("%-36s pairs %.3g: fwd %6.3f ms (%4.0f TFLOP/s)  bwd %6.3f ms (%4.0f TFLOP/s)\n",
                c.name, pairs, tf, fl / tf / 1e9, tb, 2.5 * fl / tb / 1e9);
    cudaFree(ws);
  }
}
