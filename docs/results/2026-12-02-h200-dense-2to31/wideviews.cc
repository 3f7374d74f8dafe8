// Ad-hoc (not built by CMake): which of cuDNN's dense SDPA views break past 2^31 elements? One
// sequence (or two batch entries), causal, GQA 4/2, D 64, bf16, deterministic. Every tensor has a
// buffer of its own; one case at a time puts one tensor's rows (or batch entries) 2^20 elements
// apart (2^31 + 1024 for batch entries), the others stay contiguous. Forward (O, LSE) and backward
// (dQ, dK, dV, from the contiguous case's O and LSE) are compared bit for bit with the
// all-contiguous call; the line per case names what differs.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ulysses/attention.h"
#include "ulysses/gpu.h"

using namespace ulysses;  // NOLINT: a probe

namespace {

#define CK(x)                                                          \
  do {                                                                 \
    if (cudaError_t e = (x); e != cudaSuccess) {                       \
      std::printf("CUDA %s at %d\n", cudaGetErrorString(e), __LINE__); \
      std::exit(1);                                                    \
    }                                                                  \
  } while (0)

constexpr int Hq = 4, Hkv = 2, D = 64;
enum T { kQ, kK, kV, kO, kDO, kDQ, kDK, kDV, kCount };
const char* kName[kCount] = {"q", "k", "v", "o", "dO", "dQ", "dK", "dV"};
int heads(int t) { return t == kK || t == kV || t == kDK || t == kDV ? Hkv : Hq; }

struct Buf {
  void* p = nullptr;
  std::int64_t rs = 0, bs = 0;  // row and batch strides, elements
};

// Host tensors [B, S, H, D] bf16 bits.
using Host = std::vector<std::uint16_t>;

void upload(const Buf& b, const Host& h, std::int64_t B, std::int64_t S, int H) {
  const std::size_t w = static_cast<std::size_t>(H * D) * 2;
  for (std::int64_t i = 0; i < B; ++i) {
    CK(cudaMemcpy2D(static_cast<char*>(b.p) + i * b.bs * 2, b.rs * 2, h.data() + i * S * H * D, w,
                    w, S, cudaMemcpyHostToDevice));
  }
}
Host download(const Buf& b, std::int64_t B, std::int64_t S, int H) {
  Host h(static_cast<std::size_t>(B * S * H * D));
  const std::size_t w = static_cast<std::size_t>(H * D) * 2;
  for (std::int64_t i = 0; i < B; ++i) {
    CK(cudaMemcpy2D(h.data() + i * S * H * D, w, static_cast<char*>(b.p) + i * b.bs * 2, b.rs * 2,
                    w, S, cudaMemcpyDeviceToHost));
  }
  return h;
}

struct Outs {
  Host out[kCount];
  std::vector<float> lse;
};

// wide: tensors whose rows (rows_wide) or batch entries (!rows_wide) are spread out.
Outs run(LocalAttention& att, std::int64_t B, std::int64_t S, unsigned wide, bool rows_wide,
         const Host* in, const Outs* given) {
  const AttentionConfig cfg{.num_heads_q = Hq, .num_heads_kv = Hkv, .head_dim = D, .causal = true};
  const LocalProblem p = LocalProblem::unsharded(cfg, DType::kBFloat16, B, S);
  Buf b[kCount];
  for (int t = 0; t < kCount; ++t) {
    const bool w = wide >> t & 1;
    b[t].rs = w && rows_wide ? (std::int64_t{1} << 20) : heads(t) * D;
    b[t].bs = w && !rows_wide ? (std::int64_t{1} << 31) + 1024 : S * b[t].rs;
    const std::size_t bytes = static_cast<std::size_t>((B - 1) * b[t].bs + S * b[t].rs) * 2;
    CK(cudaMalloc(&b[t].p, bytes));
    CK(cudaMemset(b[t].p, 0xFF, bytes));
  }
  for (int t : {kQ, kK, kV, kDO}) upload(b[t], in[t], B, S, heads(t));
  void* lse = nullptr;
  CK(cudaMalloc(&lse, static_cast<std::size_t>(B * Hq * S) * 4));
  void* ws = nullptr;
  CK(cudaMalloc(&ws, att.workspace_bytes(p)));
  auto view = [&](int t) {
    return TensorView::strided(b[t].p, DType::kBFloat16, {B, S, heads(t), D},
                               {b[t].bs, b[t].rs, D, 1}, Device::cuda(0));
  };
  const TensorView lv = TensorView::contiguous(lse, DType::kFloat32, {B, Hq, S}, Device::cuda(0));
  Status st = att.forward(
      p, {.q = view(kQ), .k = view(kK), .v = view(kV), .o = view(kO), .lse = lv, .workspace = ws},
      nullptr);
  if (!st.is_ok()) std::printf("forward: %s\n", st.to_string().c_str());
  CK(cudaDeviceSynchronize());
  Outs r;
  r.out[kO] = download(b[kO], B, S, Hq);
  r.lse.resize(static_cast<std::size_t>(B * Hq * S));
  CK(cudaMemcpy(r.lse.data(), lse, r.lse.size() * 4, cudaMemcpyDeviceToHost));
  if (given) {  // backward from the contiguous call's O and LSE
    upload(b[kO], given->out[kO], B, S, Hq);
    CK(cudaMemcpy(lse, given->lse.data(), r.lse.size() * 4, cudaMemcpyHostToDevice));
  }
  st = att.backward(p,
                    {.q = view(kQ),
                     .k = view(kK),
                     .v = view(kV),
                     .o = view(kO),
                     .lse = lv,
                     .d_o = view(kDO),
                     .dq = view(kDQ),
                     .dk = view(kDK),
                     .dv = view(kDV),
                     .workspace = ws},
                    nullptr);
  if (!st.is_ok()) std::printf("backward: %s\n", st.to_string().c_str());
  CK(cudaDeviceSynchronize());
  for (int t : {kDQ, kDK, kDV}) r.out[t] = download(b[t], B, S, heads(t));
  for (auto& x : b) CK(cudaFree(x.p));
  CK(cudaFree(lse));
  CK(cudaFree(ws));
  return r;
}

std::string diff(const Outs& a, const Outs& b) {
  std::string s;
  for (int t : {kO, kDQ, kDK, kDV}) {
    std::size_t n = 0, first = 0;
    for (std::size_t i = 0; i < a.out[t].size(); ++i) {
      if (a.out[t][i] != b.out[t][i] && n++ == 0) first = i;
    }
    if (n) s += std::string(" ") + kName[t] + ":" + std::to_string(n) + "@" + std::to_string(first);
  }
  if (std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * 4) != 0) s += " lse";
  return s.empty() ? " bitwise equal" : s;
}

}  // namespace

int main() {
  auto att = create_cudnn_attention(0, {.deterministic = true});
  if (!att.is_ok()) return 1;
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  auto rand_host = [&](std::size_t n) {
    Host h(n);
    for (auto& x : h) {
      float f = u(rng);
      std::uint32_t bits;
      std::memcpy(&bits, &f, 4);
      x = static_cast<std::uint16_t>(bits >> 16);
    }
    return h;
  };
  for (const auto& [B, S, rows_wide] :
       {std::tuple<std::int64_t, std::int64_t, bool>{1, 2112, true}, {2, 1024, false}}) {
    Host in[kCount];
    for (int t : {kQ, kK, kV, kDO})
      in[t] = rand_host(static_cast<std::size_t>(B * S * heads(t) * D));
    const Outs base = run(**att, B, S, 0, rows_wide, in, nullptr);
    std::printf("B %lld S %lld, %s past 2^31 elements:\n", static_cast<long long>(B),
                static_cast<long long>(S), rows_wide ? "rows" : "batch entry 1");
    for (int t = 0; t < kCount; ++t) {
      const Outs r = run(**att, B, S, 1u << t, rows_wide, in, &base);
      std::printf("  %-3s wide:%s\n", kName[t], diff(base, r).c_str());
    }
    const Outs all = run(**att, B, S, (1u << kCount) - 1, rows_wide, in, &base);
    std::printf("  all wide:%s\n", diff(base, all).c_str());
  }
  return 0;
}
