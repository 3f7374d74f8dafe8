// Ad-hoc (not built by CMake): cuDNN fwd / bwd time of masked rectangular calls against their
// square + unmasked parts, through the library's cuDNN LocalAttention. Built from the repo root as
//   g++ -std=c++20 -O2 -Iinclude -I/usr/local/cuda/include shapes.cc -o shapes build/libulysses.a \
//     /usr/local/cuda/lib/{libcudart,libnccl,libnvrtc,libcudnn}.so \
//     /usr/local/cuda/lib/stubs/libcuda.so -lpthread -ldl -lrt
// bottom_right.txt: with the cuDNN backend briefly using BOTTOM_RIGHT alignment for these calls
// (reverted); top_left.txt: the backend as committed (TOP_LEFT band shifted by the offset).
#include <cuda_runtime.h>
#include <cstdio>
#include <vector>
#include "ulysses/gpu.h"
using namespace ulysses;
int main() {
  auto k = create_cudnn_attention(0);
  if (!k.is_ok()) {
    std::printf("%s\n", k.status().to_string().c_str());
    return 1;
  }
  LocalAttention& kern = **k;
  const int H = 32, G = 8, D = 128;
  struct Shape {
    const char* name;
    std::int64_t sq, skv, off;
    bool causal;
  };
  std::vector<Shape> shapes = {
      {"sq64k causal", 65536, 65536, 0, true},
      {"q32k kv128k causal D96k", 32768, 131072, 98304, true},
      {"q32k kv96k full", 32768, 98304, 0, false},
      {"q32k kv32k causal", 32768, 32768, 0, true},
      {"q64k kv96k causal D32k", 65536, 98304, 32768, true},
      {"q64k kv32k full", 65536, 32768, 0, false},
      {"q32k kv128k full", 32768, 131072, 0, false},
  };
  for (const Shape& s : shapes) {
    AttentionConfig a{.num_heads_q = H, .num_heads_kv = G, .head_dim = D, .causal = s.causal};
    LocalProblem p = LocalProblem::unsharded(a, DType::kBFloat16, 1, s.sq);
    p.seqlen_kv = s.skv;
    p.diagonal_offset = s.off;
    p.grad_kv_dtype = DType::kFloat32;
    Status st = kern.check_support(p);
    if (!st.is_ok()) {
      std::printf("%s: %s\n", s.name, st.to_string().c_str());
      continue;
    }
    auto alloc = [](std::size_t n) {
      void* q;
      cudaMalloc(&q, n);
      cudaMemset(q, 0, n);
      return q;
    };
    void* q = alloc(s.sq * H * D * 2);
    void* o = alloc(s.sq * H * D * 2);
    void* dO = alloc(s.sq * H * D * 2);
    void* dq = alloc(s.sq * H * D * 2);
    void* kk = alloc(s.skv * G * D * 2);
    void* vv = alloc(s.skv * G * D * 2);
    void* dk = alloc(s.skv * G * D * 4);
    void* dv = alloc(s.skv * G * D * 4);
    void* lse = alloc(s.sq * H * 4);
    std::size_t wsb = kern.workspace_bytes(p);
    void* ws = alloc(wsb);
    Device dev = kern.device();
    auto act = [&](void* d, std::int64_t S, int h, DType t) {
      return TensorView::contiguous(d, t, {1, S, h, D}, dev);
    };
    LocalForwardArgs f{.q = act(q, s.sq, H, DType::kBFloat16),
                       .k = act(kk, s.skv, G, DType::kBFloat16),
                       .v = act(vv, s.skv, G, DType::kBFloat16),
                       .o = act(o, s.sq, H, DType::kBFloat16),
                       .lse = TensorView::contiguous(lse, DType::kFloat32, {1, H, s.sq}, dev),
                       .workspace = ws};
    LocalBackwardArgs b{.q = f.q,
                        .k = f.k,
                        .v = f.v,
                        .o = f.o,
                        .lse = f.lse,
                        .d_o = act(dO, s.sq, H, DType::kBFloat16),
                        .dq = act(dq, s.sq, H, DType::kBFloat16),
                        .dk = act(dk, s.skv, G, DType::kFloat32),
                        .dv = act(dv, s.skv, G, DType::kFloat32),
                        .workspace = ws};
    cudaEvent_t e0, e1, e2;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    cudaEventCreate(&e2);
    float tf = 1e9, tb = 1e9;
    for (int it = 0; it < 4; ++it) {
      cudaEventRecord(e0);
      Status a1 = kern.forward(p, f, nullptr);
      cudaEventRecord(e1);
      Status a2 = kern.backward(p, b, nullptr);
      cudaEventRecord(e2);
      cudaEventSynchronize(e2);
      if (!a1.is_ok() || !a2.is_ok()) {
        std::printf("%s: %s %s\n", s.name, a1.to_string().c_str(), a2.to_string().c_str());
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
    // visible pairs
    double pairs = 0;
    if (!s.causal)
      pairs = double(s.sq) * s.skv;
    else {
      pairs = double(s.sq) * s.off + double(s.sq) * (s.sq + 1) / 2;
    }
    double fl = 4.0 * pairs * D * H;
    std::printf("%-28s fwd %9.2f ms (%5.0f TF/s)  bwd %9.2f ms (%5.0f TF/s)\n", s.name, tf,
                fl / tf / 1e9, tb, 2.5 * fl / tb / 1e9);
    for (void* x : {q, o, dO, dq, kk, vv, dk, dv, lse, ws}) cudaFree(x);
  }
}
