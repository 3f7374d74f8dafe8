// The cuDNN backend against the FP64 reference, by STYLE.md's 2x rule: max|cudnn - ref| <=
// 2 max|plain - ref| + floor, where plain is the reference rounded to the I/O dtype (the best a
// kernel in that dtype can do) and floor is 2 ulps of the dtype at the tensor's largest magnitude
// (cuDNN rounds P to the I/O dtype before P.V, as every flash-attention kernel does). Outputs are
// poisoned.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "attention/cudnn_support.h"
#include "common/random_fill.h"
#include "gpu/gpu_util.h"
#include "kernels/merge.h"

namespace ulysses {
namespace {

using testing::DeviceTensor;
using testing::HostTensor;

struct Case {
  std::string name;
  std::int64_t B, S;
  int Hq, Hkv, D;
  DType dtype;
  bool causal = false;
  int wl = -1, wr = -1;
  bool sinks = false;
  std::vector<std::int32_t> cu = {};
  int Dv = 0;  // head_dim_v (0: D)
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

AttentionConfig config_of(const Case& c) {
  return {.num_heads_q = c.Hq,
          .num_heads_kv = c.Hkv,
          .head_dim = c.D,
          .head_dim_v = c.Dv,
          .causal = c.causal,
          .window_left = c.wl,
          .window_right = c.wr,
          .sinks = c.sinks};
}

double ulp_rel(DType t) {
  return t == DType::kFloat16 ? 0x1p-10 : t == DType::kBFloat16 ? 0x1p-7 : 0x1p-23;
}

// cuDNN's backward rules (cudnn_support.h) for the running cuDNN and GPU 0.
Status running_backward_rule(const LocalProblem& p) {
  int cc_major = 0;
  if (cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, 0) != cudaSuccess) {
    return internal_error("cudaDeviceGetAttribute");
  }
  return detail::cudnn_backward_support(p, {cudnn_runtime_version(), cc_major});
}

struct Host {
  HostTensor q, k, v, d_o, sinks, o, lse, dq, dk, dv, dsinks;
};

Host make(const Case& c, DType dt) {
  Host h;
  h.q = HostTensor(dt, {c.B, c.S, c.Hq, c.D});
  h.k = HostTensor(dt, {c.B, c.S, c.Hkv, c.D});
  const std::int64_t dv = c.Dv > 0 ? c.Dv : c.D;
  h.v = HostTensor(dt, {c.B, c.S, c.Hkv, dv});
  h.d_o = HostTensor(dt, {c.B, c.S, c.Hq, dv});
  h.o = h.d_o;
  h.dq = h.q;
  h.dk = h.k;
  h.dv = h.v;
  h.lse = HostTensor(DType::kFloat32, {c.B, c.Hq, c.S});
  h.sinks = HostTensor(DType::kFloat32, {c.Hq});
  h.dsinks = h.sinks;
  return h;
}

void run_reference(const Case& c, Host& h, DType dt) {
  const LocalProblem p = LocalProblem::unsharded(config_of(c), dt, c.B, c.S, !c.cu.empty());
  LocalForwardArgs f{.q = h.q.view,
                     .k = h.k.view,
                     .v = h.v.view,
                     .o = h.o.view,
                     .lse = h.lse.view,
                     .cu_seqlens = c.cu};
  LocalBackwardArgs b{.q = h.q.view,
                      .k = h.k.view,
                      .v = h.v.view,
                      .o = h.o.view,
                      .lse = h.lse.view,
                      .d_o = h.d_o.view,
                      .dq = h.dq.view,
                      .dk = h.dk.view,
                      .dv = h.dv.view,
                      .cu_seqlens = c.cu};
  if (c.sinks) {
    f.sinks = b.sinks = h.sinks.view;
    b.dsinks = h.dsinks.view;
  }
  ASSERT_TRUE(reference_forward(p, f).is_ok());
  ASSERT_TRUE(reference_backward(p, b).is_ok());
}

class CudnnVsReference : public ::testing::TestWithParam<Case> {};

TEST_P(CudnnVsReference, WithinTwiceThePlainError) {
  ULYSSES_REQUIRE_GPUS(1);
  const Case c = GetParam();
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Host in = make(c, c.dtype);
  for (HostTensor* t : {&in.q, &in.k, &in.v, &in.d_o}) testing::fill_uniform(*t, rng, -1.0, 1.0);
  testing::fill_uniform(in.sinks, rng, -0.5, 1.5);

  // Truth in FP64 from the same (rounded) inputs; plain = truth rounded to the I/O dtype.
  Host truth = make(c, DType::kFloat64);
  truth.q = testing::convert(in.q, DType::kFloat64);
  truth.k = testing::convert(in.k, DType::kFloat64);
  truth.v = testing::convert(in.v, DType::kFloat64);
  truth.d_o = testing::convert(in.d_o, DType::kFloat64);
  truth.sinks = in.sinks;
  run_reference(c, truth, DType::kFloat64);
  Host plain = make(c, c.dtype);
  plain.q = in.q, plain.k = in.k, plain.v = in.v, plain.d_o = in.d_o, plain.sinks = in.sinks;
  run_reference(c, plain, c.dtype);
  // dSinks is a sum over every row of rowsum(dO * O) terms, and the kernel computes it from O as
  // rounded to the I/O dtype (kernels::sink_grad over cuDNN's O). The plain run recomputes it
  // from unrounded values (no error at all), which left the kernel's dSinks held to the floor
  // alone, and some draws of bf16_d128_varlen_sinks went past it. Plain's is what a
  // same-dtype computation gets: the same sum over its own rounded O and stored LSE.
  if (c.sinks) {
    ASSERT_TRUE(kernels::host::sink_grad(plain.o.view, plain.d_o.view, plain.lse.view,
                                         plain.sinks.view, 0, plain.dsinks.view)
                    .is_ok());
  }

  auto kernel = create_cudnn_attention(0);
  ASSERT_TRUE(kernel.is_ok()) << kernel.status().to_string();
  const LocalProblem p = LocalProblem::unsharded(config_of(c), c.dtype, c.B, c.S, !c.cu.empty());
  // Where the running cuDNN lacks the backward (packed past head_dim 128 before 9.19, head_dim
  // past 128 before Hopper: the rules the CPU tests check), check_support() refuses a problem
  // that will run backward, naming the version, accepts it forward-only, and backward() refuses
  // it too; forward still runs and is checked.
  const Status bwd_rule = running_backward_rule(p);
  const bool bwd_unsupported = !bwd_rule.is_ok();
  if (bwd_unsupported) {
    const Status s = (*kernel)->check_support(p);
    EXPECT_EQ(s.code(), StatusCode::kUnsupported) << s.to_string();
    EXPECT_EQ(s.message(), bwd_rule.message());
    EXPECT_NE(s.message().find(std::to_string(cudnn_runtime_version())), std::string::npos)
        << s.message();
    LocalProblem forward_only = p;
    forward_only.backward = false;
    ASSERT_TRUE((*kernel)->check_support(forward_only).is_ok());
  } else {
    ASSERT_TRUE((*kernel)->check_support(p).is_ok()) << (*kernel)->check_support(p).to_string();
  }
  Host out = make(c, c.dtype);
  for (HostTensor* t : {&out.o, &out.lse, &out.dq, &out.dk, &out.dv, &out.dsinks})
    testing::poison(*t);
  DeviceTensor q = DeviceTensor::of(in.q), k = DeviceTensor::of(in.k), v = DeviceTensor::of(in.v),
               d_o = DeviceTensor::of(in.d_o), sinks = DeviceTensor::of(in.sinks),
               o = DeviceTensor::of(out.o), lse = DeviceTensor::of(out.lse),
               dq = DeviceTensor::of(out.dq), dk = DeviceTensor::of(out.dk),
               dv = DeviceTensor::of(out.dv), dsinks = DeviceTensor::of(out.dsinks);
  HostTensor cu_h(DType::kFloat32,
                  {static_cast<std::int64_t>(std::max<std::size_t>(c.cu.size(), 1))});
  std::memcpy(cu_h.storage.data(), c.cu.data(), c.cu.size() * 4);
  DeviceTensor cu = DeviceTensor::of(cu_h);
  testing::DeviceBytes ws((*kernel)->workspace_bytes(p));
  LocalForwardArgs f{.q = q.view,
                     .k = k.view,
                     .v = v.view,
                     .o = o.view,
                     .lse = lse.view,
                     .cu_seqlens = c.cu,
                     .cu_seqlens_device = static_cast<const std::int32_t*>(cu.ptr),
                     .workspace = ws.ptr};
  if (c.sinks) f.sinks = sinks.view;
  Status s = (*kernel)->forward(p, f, nullptr);
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  LocalBackwardArgs b{.q = q.view,
                      .k = k.view,
                      .v = v.view,
                      .o = o.view,
                      .lse = lse.view,
                      .d_o = d_o.view,
                      .dq = dq.view,
                      .dk = dk.view,
                      .dv = dv.view,
                      .cu_seqlens = c.cu,
                      .cu_seqlens_device = static_cast<const std::int32_t*>(cu.ptr),
                      .workspace = ws.ptr};
  if (c.sinks) {
    b.sinks = sinks.view;
    b.dsinks = dsinks.view;
  }
  Status sb = (*kernel)->backward(p, b, nullptr);
  if (bwd_unsupported) {
    EXPECT_EQ(sb.code(), StatusCode::kUnsupported) << sb.to_string();
    EXPECT_EQ(sb.message(), bwd_rule.message());
  } else {
    ASSERT_TRUE(sb.is_ok()) << sb.to_string();
  }
  ASSERT_CUDA(cudaDeviceSynchronize());
  const HostTensor got_o = o.download(out.o), got_lse = lse.download(out.lse);
  auto check = [&](const char* what, const HostTensor& got, const HostTensor& pl,
                   const HostTensor& tr, double floor_ulps) {
    EXPECT_EQ(testing::count_nan(got), 0) << what << ": unwritten or NaN elements";
    const double floor = floor_ulps *
                         ulp_rel(got.view.dtype == DType::kFloat32 ? c.dtype : got.view.dtype) *
                         testing::max_abs(tr);
    EXPECT_TRUE(testing::within_2x_rule(got, pl, tr, floor)) << what;
  };
  check("O", got_o, plain.o, truth.o, 2);
  if (c.sinks) {
    // Inference asks for no LSE; the sinks are still folded in (through scratch): the same O.
    HostTensor o2 = out.o;
    testing::poison(o2);
    DeviceTensor o2_dev = DeviceTensor::of(o2);
    LocalForwardArgs f2 = f;
    f2.o = o2_dev.view;
    f2.lse = TensorView{};
    ASSERT_TRUE((*kernel)->forward(p, f2, nullptr).is_ok());
    ASSERT_CUDA(cudaDeviceSynchronize());
    EXPECT_BITWISE_EQ(o2_dev.download(o2), got_o, "O without an LSE");
  }
  // LSE is fp32 from fp32 accumulation of dtype products: held to a few dtype ulps of its scale.
  check("LSE", got_lse, plain.lse, truth.lse, 0.05);
  // Compact views: every call ran within workspace_bytes(), nothing grown beside it.
  EXPECT_EQ((*kernel)->held_bytes(), 0u) << "a call needed more than workspace_bytes()";
  if (bwd_unsupported) return;
  check("dQ", dq.download(out.dq), plain.dq, truth.dq, 4);
  check("dK", dk.download(out.dk), plain.dk, truth.dk, 4);
  check("dV", dv.download(out.dv), plain.dv, truth.dv, 4);
  if (c.sinks) check("dSinks", dsinks.download(out.dsinks), plain.dsinks, truth.dsinks, 4);
}

// 64 documents of 16 tokens after one of 1024 (2048 tokens): a packed graph of 128 x 1024 rows.
std::vector<std::int32_t> one_long_many_short() {
  std::vector<std::int32_t> cu = {0, 1024};
  for (int i = 0; i < 64; ++i) cu.push_back(cu.back() + 16);
  return cu;
}

std::vector<Case> cases() {
  const auto bf16 = DType::kBFloat16, fp16 = DType::kFloat16;
  return {
      {"bf16_d128_mha_causal", 2, 256, 4, 4, 128, bf16, true},
      {"fp16_d64_gqa_full", 1, 200, 4, 2, 64, fp16},
      {"bf16_d128_gqa_causal_window", 1, 320, 4, 2, 128, bf16, true, 37},
      {"bf16_d64_mqa_window_both", 1, 256, 4, 1, 64, bf16, false, 20, 10},
      // Windows without causal: backward runs as causal bands (detail::causal_bands()): lower,
      // upper, head and tail; the upper band alone (a right window of one); lower and tail only
      // (a right window past the sequence); no left window.
      {"bf16_d128_gqa_two_sided_sinks_b2", 2, 320, 4, 2, 128, bf16, false, 37, 50, true},
      {"bf16_d64_window_right_of_one", 1, 130, 2, 1, 64, bf16, false, 3, 1},
      {"bf16_d64_window_right_past_the_sequence", 1, 96, 2, 2, 64, bf16, false, 8, 200},
      {"fp16_d64_window_right_only", 1, 256, 2, 1, 64, fp16, false, -1, 16},
      {"bf16_d128_gqa_causal_sinks", 1, 256, 4, 2, 128, bf16, true, -1, -1, true},
      {"fp16_d64_sinks_full", 2, 128, 2, 2, 64, fp16, false, -1, -1, true},
      {"bf16_d128_varlen_causal_gqa",
       1,
       256,
       4,
       2,
       128,
       bf16,
       true,
       -1,
       -1,
       false,
       {0, 50, 51, 170, 200}},
      {"fp16_d64_varlen_window", 1, 192, 2, 1, 64, fp16, false, 16, 16, false, {0, 64, 64, 150}},
      // Packed windows without causal: backward runs as causal bands over each document's pieces
      // (VarlenRows calls): an empty document, one of a single token, padding rows, sinks; a
      // right window only; right windows past every document (lower band and tails only).
      {"bf16_d128_varlen_gqa_two_sided_sinks",
       1,
       320,
       4,
       2,
       128,
       bf16,
       false,
       37,
       50,
       true,
       {0, 100, 100, 101, 250, 300}},
      {"fp16_d64_varlen_window_right_only",
       1,
       256,
       2,
       1,
       64,
       fp16,
       false,
       -1,
       16,
       false,
       {0, 10, 200, 256}},
      {"bf16_d64_varlen_window_right_past_documents",
       1,
       192,
       2,
       2,
       64,
       bf16,
       false,
       8,
       90,
       false,
       {0, 64, 150, 192}},
      {"bf16_d128_varlen_sinks", 1, 128, 2, 2, 128, bf16, true, -1, -1, true, {0, 40, 100}},
      // Packed with sinks: the backward runs without them, dSinks from sink_grad (padding rows,
      // an empty sequence, windows, GQA/MQA, head_dim 256).
      {"fp16_d64_varlen_gqa_window_sinks",
       1,
       256,
       4,
       2,
       64,
       fp16,
       true,
       40,
       -1,
       true,
       {0, 90, 90, 200}},
      {"bf16_d256_varlen_mqa_sinks_full",
       1,
       160,
       2,
       1,
       256,
       bf16,
       false,
       -1,
       -1,
       true,
       {0, 70, 150}},
      // Every head_dim check_support() accepts is a multiple of 8 up to 256: the ends and a few
      // model sizes between (Hopper runs backward up to 256).
      {"bf16_d8_causal", 1, 136, 2, 1, 8, bf16, true},
      {"fp16_d32_gqa_full", 2, 96, 4, 2, 32, fp16},
      {"bf16_d80_gqa_causal", 1, 200, 4, 2, 80, bf16, true},
      {"fp16_d96_window_sinks", 1, 160, 2, 2, 96, fp16, true, 48, -1, true},
      {"bf16_d192_causal", 1, 144, 2, 2, 192, bf16, true},
      {"bf16_d256_gqa_causal", 2, 128, 4, 2, 256, bf16, true},
      {"fp16_d256_varlen_window", 1, 160, 2, 1, 256, fp16, false, 24, 8, false, {0, 70, 160}},
      // head_dim not a multiple of 16: cudnn-frontend sizes the packed backward's workspace by the
      // graph's rows (128 x 1024 here for 2048 tokens), so the call runs in runs of sequences
      // with graphs of their own (CudnnAttention::ragged_sized_workspace()).
      {"bf16_d72_varlen_gqa_long_and_short", 1, 2048, 4, 2, 72, bf16, true, -1, -1, false,
       one_long_many_short()},
      // One query and one key row: cuDNN's backward builds no s_q = s_kv = 1 graph, the backend
      // runs its own kernel (kernels::cuda::one_key_backward), GQA/MQA heads summed into dK/dV.
      {"bf16_d128_gqa_one_token_causal", 3, 1, 4, 2, 128, bf16, true},
      {"fp16_d64_mqa_one_token_window_sinks", 2, 1, 4, 1, 64, fp16, true, 5, -1, true},
      {"bf16_d256_one_token_full", 1, 1, 2, 2, 256, bf16},
      {"fp16_d8_gqa_one_token_sinks", 2, 1, 6, 2, 8, fp16, false, -1, -1, true},
      // head_dim_v != head_dim (MLA: 192 with 128): V, O, dO and dV narrower (or wider) than Q
      // and K; windows without causal (bands), sinks, one token (the backend's own kernel), and
      // packed batches (cuDNN 9.19, head_dim up to 192: cudnn_support.cc).
      {"bf16_mla_d192_v128_gqa_causal", 2, 256, 4, 2, 192, bf16, true, -1, -1, false, {}, 128},
      {"fp16_mla_d192_v128_two_sided_sinks", 1, 320, 4, 2, 192, fp16, false, 37, 50, true, {}, 128},
      {"bf16_d128_v64_mqa_window", 1, 256, 4, 1, 128, bf16, true, 40, -1, false, {}, 64},
      {"bf16_d64_v128_full", 1, 200, 2, 2, 64, bf16, false, -1, -1, false, {}, 128},
      {"bf16_mla_one_token_gqa_sinks", 2, 1, 4, 2, 192, bf16, true, -1, -1, true, {}, 128},
      {"bf16_mla_varlen_causal_sinks",
       1,
       256,
       4,
       2,
       192,
       bf16,
       true,
       -1,
       -1,
       true,
       {0, 50, 51, 170, 200},
       128},
      {"bf16_d64_v128_varlen_gqa_causal",
       1,
       300,
       8,
       2,
       64,
       bf16,
       true,
       -1,
       -1,
       false,
       {0, 1, 130, 300},
       128},
      {"fp16_mla_varlen_mqa_two_sided",
       1,
       288,
       4,
       1,
       192,
       fp16,
       false,
       20,
       9,
       false,
       {0, 100, 230, 288},
       128},
      {"bf16_d256_v64_varlen_full",
       1,
       160,
       2,
       2,
       256,
       bf16,
       false,
       -1,
       -1,
       false,
       {0, 60, 160},
       64},
      // head_dim_v not a multiple of 16 (cudnn-frontend sizes the backward's workspace by the
      // graph's rows, as for head_dim 72), windowed from the left only: with head_dim 192 it
      // runs; with 256 its backward is refused (cuDNN 9.19 returned wrong dQ and dK).
      {"bf16_d192_v72_varlen_gqa_window",
       1,
       200,
       4,
       2,
       192,
       bf16,
       false,
       12,
       -1,
       false,
       {0, 5, 5, 130, 200},
       72},
      {"bf16_d256_v72_varlen_gqa_window",
       1,
       200,
       4,
       2,
       256,
       bf16,
       false,
       12,
       -1,
       false,
       {0, 5, 5, 130, 200},
       72},
  };
}

INSTANTIATE_TEST_SUITE_P(Features, CudnnVsReference, ::testing::ValuesIn(cases()),
                         [](const auto& param_info) { return param_info.param.name; });

// The reference forward and backward of a VarlenRows problem in dtype t (the problem's own
// dtype is replaced): plain (t = the I/O dtype) or truth (FP64). The backward reads `given`'s O
// and LSE when given (as a kernel fed merged or plain statistics does), else its own.
struct RowsOut {
  HostTensor o, lse, dq, dk, dv, dsinks;
};
// `sinks`: [Hq] fp32 when rp.config.sinks (dsinks then comes back too).
RowsOut rows_reference(LocalProblem rp, DType t, const VarlenRows& rows, const HostTensor& q,
                       const HostTensor& k, const HostTensor& v, const HostTensor& d_o,
                       const RowsOut* given, const HostTensor* sinks = nullptr) {
  rp.dtype = rp.grad_kv_dtype = t;
  const std::int64_t Sq = q.view.size(1), Skv = k.view.size(1), Hq = q.view.size(2),
                     Hkv = k.view.size(2), D = q.view.size(3), Dv = v.view.size(3);
  RowsOut r{HostTensor(t, {1, Sq, Hq, Dv}),   HostTensor(DType::kFloat32, {1, Hq, Sq}),
            HostTensor(t, {1, Sq, Hq, D}),    HostTensor(t, {1, Skv, Hkv, D}),
            HostTensor(t, {1, Skv, Hkv, Dv}), HostTensor(DType::kFloat32, {Hq})};
  const HostTensor qt = testing::convert(q, t), kt = testing::convert(k, t),
                   vt = testing::convert(v, t), dot = testing::convert(d_o, t);
  const TensorView sv = sinks ? sinks->view : TensorView{};
  const TensorView dsv = sinks ? r.dsinks.view : TensorView{};
  EXPECT_TRUE(reference_forward(rp, {.q = qt.view,
                                     .k = kt.view,
                                     .v = vt.view,
                                     .sinks = sv,
                                     .o = r.o.view,
                                     .lse = r.lse.view,
                                     .rows = rows})
                  .is_ok());
  const HostTensor o_use = given ? testing::convert(given->o, t) : r.o;
  EXPECT_TRUE(reference_backward(rp, {.q = qt.view,
                                      .k = kt.view,
                                      .v = vt.view,
                                      .o = o_use.view,
                                      .lse = given ? given->lse.view : r.lse.view,
                                      .d_o = dot.view,
                                      .sinks = sv,
                                      .dq = r.dq.view,
                                      .dk = r.dk.view,
                                      .dv = r.dv.view,
                                      .dsinks = dsv,
                                      .rows = rows})
                  .is_ok());
  return r;
}

// VarlenRows, as ring attention's packed blocks use them: queries and keys in different rows with
// gaps between sequences, a sequence without keys and one without queries, fp32 O / dQ / dK / dV,
// and a backward that takes the given O and LSE (partial_keys). Rows outside every sequence must
// come back as zeros (LSE -inf) although the outputs start poisoned. bottom_right: every
// sequence's mask aligned at its own bottom-right corner (all-gather's packed calls).
struct RowsCase {
  std::string name;
  bool causal;
  std::vector<std::int32_t> q_begin, q_len, kv_begin, kv_len;
  bool bottom_right = false;
  int window_left = -1;
  int window_right = -1;
  int head_dim_v = 0;  // 0: head_dim
};

class CudnnVarlenRows : public ::testing::TestWithParam<RowsCase> {};

TEST_P(CudnnVarlenRows, WithinTwiceThePlainError) {
  ULYSSES_REQUIRE_GPUS(1);
  const RowsCase rc = GetParam();
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const DType dt = DType::kBFloat16, f32 = DType::kFloat32, f64 = DType::kFloat64;
  const std::int64_t Sq = 96, Skv = 80;
  const int Hq = 4, Hkv = 2, D = 64;
  const AttentionConfig cfg{.num_heads_q = Hq,
                            .num_heads_kv = Hkv,
                            .head_dim = D,
                            .head_dim_v = rc.head_dim_v,
                            .causal = rc.causal,
                            .window_left = rc.window_left,
                            .window_right = rc.window_right};
  LocalProblem p = LocalProblem::unsharded(cfg, dt, 1, Sq, true);
  p.varlen_rows = true;
  p.bottom_right = rc.bottom_right;
  p.seqlen_kv = Skv;
  p.partial_keys = true;
  const VarlenRows rows{
      .q_begin = rc.q_begin, .q_len = rc.q_len, .kv_begin = rc.kv_begin, .kv_len = rc.kv_len};

  const int Dv = cfg.value_dim();
  HostTensor q(dt, {1, Sq, Hq, D}), k(dt, {1, Skv, Hkv, D}), v(dt, {1, Skv, Hkv, Dv}),
      d_o(dt, {1, Sq, Hq, Dv});
  for (HostTensor* t : {&q, &k, &v, &d_o}) testing::fill_uniform(*t, rng, -1.0, 1.0);
  // Reference forward and backward in `dtype` (plain) and FP64 (truth); the backward of truth
  // reads the plain O and LSE, as ring's does with the merged ones.
  const LocalProblem base_p = p;  // before the fp32 outputs are asked of cuDNN below
  const RowsOut plain = rows_reference(base_p, dt, rows, q, k, v, d_o, nullptr);
  const RowsOut truth = rows_reference(base_p, f64, rows, q, k, v, d_o, &plain);
  const RowsOut truth_fwd = rows_reference(base_p, f64, rows, q, k, v, d_o, nullptr);

  auto kernel = create_cudnn_attention(0);
  ASSERT_TRUE(kernel.is_ok()) << kernel.status().to_string();
  p.out_fp32 = p.grad_q_fp32 = true;
  p.grad_kv_dtype = f32;
  const Status rule = running_backward_rule(p);
  if (!rule.is_ok()) {  // (head_dim_v != head_dim before cuDNN 9.19: refused by name)
    EXPECT_EQ((*kernel)->check_support(p).message(), rule.message());
    return;
  }
  ASSERT_TRUE((*kernel)->check_support(p).is_ok()) << (*kernel)->check_support(p).to_string();
  HostTensor o32(f32, {1, Sq, Hq, Dv}), lse(f32, {1, Hq, Sq}), dq32(f32, {1, Sq, Hq, D}),
      dk32(f32, {1, Skv, Hkv, D}), dv32(f32, {1, Skv, Hkv, Dv});
  for (HostTensor* t : {&o32, &lse, &dq32, &dk32, &dv32}) testing::poison(*t);
  DeviceTensor dq_ = DeviceTensor::of(q), dk_ = DeviceTensor::of(k), dv_ = DeviceTensor::of(v),
               ddo = DeviceTensor::of(d_o), dpo = DeviceTensor::of(plain.o),
               dpl = DeviceTensor::of(plain.lse), o = DeviceTensor::of(o32),
               l = DeviceTensor::of(lse), gq = DeviceTensor::of(dq32), gk = DeviceTensor::of(dk32),
               gv = DeviceTensor::of(dv32);
  const std::int64_t n = static_cast<std::int64_t>(rc.q_begin.size());
  HostTensor tab(f32, {4 * n});  // int32 bits: q_begin, q_len, kv_begin, kv_len
  auto* ti = reinterpret_cast<std::int32_t*>(tab.storage.data());
  for (std::int64_t i = 0; i < n; ++i) {
    const auto iu = static_cast<std::size_t>(i);
    ti[i] = rc.q_begin[iu];
    ti[n + i] = rc.q_len[iu];
    ti[2 * n + i] = rc.kv_begin[iu];
    ti[3 * n + i] = rc.kv_len[iu];
  }
  DeviceTensor dtab = DeviceTensor::of(tab);
  VarlenRows drows = rows;
  const auto* base = static_cast<const std::int32_t*>(dtab.ptr);
  drows.q_begin_device = base;
  drows.q_len_device = base + n;
  drows.kv_begin_device = base + 2 * n;
  drows.kv_len_device = base + 3 * n;
  testing::DeviceBytes ws((*kernel)->workspace_bytes(p));
  Status s = (*kernel)->forward(p,
                                {.q = dq_.view,
                                 .k = dk_.view,
                                 .v = dv_.view,
                                 .o = o.view,
                                 .lse = l.view,
                                 .rows = drows,
                                 .workspace = ws.ptr},
                                nullptr);
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  s = (*kernel)->backward(p,
                          {.q = dq_.view,
                           .k = dk_.view,
                           .v = dv_.view,
                           .o = dpo.view,
                           .lse = dpl.view,
                           .d_o = ddo.view,
                           .dq = gq.view,
                           .dk = gk.view,
                           .dv = gv.view,
                           .rows = drows,
                           .workspace = ws.ptr},
                          nullptr);
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  ASSERT_CUDA(cudaDeviceSynchronize());
  auto check = [&](const char* what, const HostTensor& got, const HostTensor& pl,
                   const HostTensor& tr, double floor_ulps) {
    EXPECT_EQ(testing::count_nan(got), 0) << what << ": unwritten or NaN elements";
    const double floor = floor_ulps * ulp_rel(dt) * testing::max_abs(tr);
    EXPECT_TRUE(testing::within_2x_rule(got, pl, tr, floor)) << what;
  };
  check("O", o.download(o32), plain.o, truth_fwd.o, 2);
  check("LSE", l.download(lse), plain.lse, truth_fwd.lse, 0.05);
  check("dQ", gq.download(dq32), plain.dq, truth.dq, 4);
  check("dK", gk.download(dk32), plain.dk, truth.dk, 4);
  check("dV", gv.download(dv32), plain.dv, truth.dv, 4);
}

INSTANTIATE_TEST_SUITE_P(
    Blocks, CudnnVarlenRows,
    ::testing::Values(
        // Unmasked: lengths differ per side; sequence 2 has no keys, sequence 3 no queries.
        RowsCase{"full_gaps_empty_sides",
                 false,
                 {0, 30, 70, 95},
                 {20, 40, 20, 0},
                 {0, 40, 60, 60},
                 {25, 12, 0, 15}},
        // Causal diagonal blocks (equal lengths per sequence), at different rows on each side.
        RowsCase{"causal_gaps", true, {0, 30, 70}, {20, 33, 26}, {5, 28, 64}, {20, 33, 0}},
        // Query ranges that tile every query row, each with keys (decoding's open pieces): the
        // backend skips its O / LSE prefill, so every poisoned row must come back from cuDNN.
        RowsCase{"queries_tiled", false, {0, 40}, {40, 56}, {0, 30}, {25, 50}},
        // The last q_len of kv_len keys of each sequence: the causal diagonal at each sequence's
        // own offset kv_len - q_len (0, 20, 2, and a sequence without queries).
        RowsCase{"causal_bottom_right",
                 true,
                 {0, 30, 70, 96},
                 {20, 10, 26, 0},
                 {0, 22, 52, 80},
                 {20, 30, 28, 0},
                 true},
        // The same with a window of 7 keys behind each query.
        RowsCase{"causal_window_bottom_right",
                 true,
                 {0, 30, 70},
                 {20, 10, 26},
                 {0, 22, 52},
                 {20, 30, 28},
                 true,
                 7},
        // A window on both sides, top-left (backward as causal bands over each sequence's
        // rectangle): more query than key rows, more key than query rows, a sequence without
        // keys, one whose right window passes its keys.
        RowsCase{"two_sided_rectangles",
                 false,
                 {0, 30, 70, 80},
                 {25, 12, 8, 14},
                 {2, 20, 60, 61},
                 {15, 36, 0, 19},
                 false,
                 5,
                 6},
        // head_dim_v != head_dim (MLA): values wider than keys and narrower.
        RowsCase{"mla_causal_gaps_v128",
                 true,
                 {0, 30, 70},
                 {20, 33, 26},
                 {5, 28, 64},
                 {20, 33, 0},
                 false,
                 -1,
                 -1,
                 128},
        RowsCase{"mla_full_gaps_empty_sides_v32",
                 false,
                 {0, 30, 70, 95},
                 {20, 40, 20, 0},
                 {0, 40, 60, 60},
                 {25, 12, 0, 15},
                 false,
                 -1,
                 -1,
                 32}),
    [](const auto& param_info) { return param_info.param.name; });

// accumulate_dq / accumulate_dkv (ring's block gradients): the fp32 views hold running sums and
// the call adds its gradients. Against the same call writing fresh fp32 gradients (deterministic
// backward, so both runs' gradients are the same bits): sum = start + fresh, rounded once in fp32.
// S = 1: the one-query, one-key backward runs through the backend's own kernel, which must add
// into the sums the same way.
void expect_gradients_add_to_running_sums(std::int64_t S) {
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + ", S " + std::to_string(S));
  std::mt19937_64 rng(seed);
  const DType dt = DType::kBFloat16, f32 = DType::kFloat32;
  const std::int64_t B = 2;
  const int Hq = 4, Hkv = 2, D = 64;
  LocalProblem p = LocalProblem::unsharded(
      {.num_heads_q = Hq, .num_heads_kv = Hkv, .head_dim = D, .causal = true}, dt, B, S);
  p.partial_keys = true;
  p.grad_q_fp32 = true;
  p.grad_kv_dtype = f32;
  auto kernel = create_cudnn_attention(0, {.deterministic = true});
  ASSERT_TRUE(kernel.is_ok()) << kernel.status().to_string();

  HostTensor q(dt, {B, S, Hq, D}), k(dt, {B, S, Hkv, D}), v = k, d_o = q, o = q;
  HostTensor lse(f32, {B, Hq, S}), dq(f32, {B, S, Hq, D}), dk(f32, {B, S, Hkv, D}), dv = dk;
  for (HostTensor* t : {&q, &k, &v, &d_o}) testing::fill_uniform(*t, rng, -1.0, 1.0);
  HostTensor start_q = dq, start_k = dk, start_v = dv;
  for (HostTensor* t : {&start_q, &start_k, &start_v}) testing::fill_uniform(*t, rng, -4.0, 4.0);
  DeviceTensor gq = DeviceTensor::of(q), gk = DeviceTensor::of(k), gv = DeviceTensor::of(v),
               gdo = DeviceTensor::of(d_o), go = DeviceTensor::of(o), gl = DeviceTensor::of(lse);
  testing::DeviceBytes ws((*kernel)->workspace_bytes(p));
  Status s = (*kernel)->forward(
      p,
      {.q = gq.view, .k = gk.view, .v = gv.view, .o = go.view, .lse = gl.view, .workspace = ws.ptr},
      nullptr);
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  auto backward = [&](bool add, const HostTensor& q0, const HostTensor& k0, const HostTensor& v0) {
    LocalProblem bp = p;
    bp.accumulate_dq = bp.accumulate_dkv = add;
    EXPECT_TRUE((*kernel)->check_support(bp).is_ok());
    DeviceTensor sq = DeviceTensor::of(q0), sk = DeviceTensor::of(k0), sv = DeviceTensor::of(v0);
    const Status st = (*kernel)->backward(bp,
                                          {.q = gq.view,
                                           .k = gk.view,
                                           .v = gv.view,
                                           .o = go.view,
                                           .lse = gl.view,
                                           .d_o = gdo.view,
                                           .dq = sq.view,
                                           .dk = sk.view,
                                           .dv = sv.view,
                                           .workspace = ws.ptr},
                                          nullptr);
    EXPECT_TRUE(st.is_ok()) << st.to_string();
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    return std::array<HostTensor, 3>{sq.download(q0), sk.download(k0), sv.download(v0)};
  };
  HostTensor poison_q = dq, poison_k = dk, poison_v = dv;
  for (HostTensor* t : {&poison_q, &poison_k, &poison_v}) testing::poison(*t);
  const auto fresh = backward(false, poison_q, poison_k, poison_v);
  const auto summed = backward(true, start_q, start_k, start_v);
  const HostTensor* starts[] = {&start_q, &start_k, &start_v};
  const char* names[] = {"dQ", "dK", "dV"};
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(testing::count_nan(fresh[i]), 0) << names[i];
    HostTensor want = *starts[i];
    float* w = reinterpret_cast<float*>(want.storage.data());
    const float* f = reinterpret_cast<const float*>(fresh[i].storage.data());
    for (std::int64_t e = 0; e < want.numel(); ++e) w[e] += f[e];
    EXPECT_BITWISE_EQ(want, summed[i], names[i]);
  }
  // Sums need fp32 views: asking to add into I/O-dtype gradients is refused by name.
  LocalProblem bad = p;
  bad.accumulate_dkv = true;
  bad.grad_kv_dtype = dt;
  s = (*kernel)->check_support(bad);
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_NE(s.message().find("accumulate_dkv"), std::string::npos) << s.message();
}

TEST(Cudnn, AccumulatedGradientsAddToTheRunningSums) {
  ULYSSES_REQUIRE_GPUS(1);
  expect_gradients_add_to_running_sums(256);
  expect_gradients_add_to_running_sums(1);
}

// Packed GQA backward writing dK and dV into rows wider than their heads (Ulysses writes them
// into its K|V send rows): the same bits as into compact views, and no overflow workspace. cuDNN's
// frontend lays its fp32 full-head dK/dV partials out in dK's and dV's token strides times
// hq / hkv, so such a graph asks for more than the workspace the plan sized by the canonical
// graph; before the backend staged them compact, the first call took a grow-only overflow of the
// whole workspace (1.25 GiB per rank at 32k rows, 16 heads over 4: docs/PERF.md). The copies are
// what held_bytes() adds, and release_held() frees them.
TEST(Cudnn, PackedGqaGradientsInWideRows) {
  ULYSSES_REQUIRE_GPUS(1);
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const DType dt = DType::kBFloat16, f32 = DType::kFloat32;
  const std::int64_t S = 16384;
  const int Hq = 8, Hkv = 2, D = 128;
  const std::vector<std::int32_t> cu = {0, 5000, 5003, 12000, static_cast<std::int32_t>(S)};
  const LocalProblem p = LocalProblem::unsharded(
      {.num_heads_q = Hq, .num_heads_kv = Hkv, .head_dim = D, .causal = true}, dt, 1, S, true);
  auto kernel = create_cudnn_attention(0);
  ASSERT_TRUE(kernel.is_ok()) << kernel.status().to_string();
  ASSERT_TRUE((*kernel)->check_support(p).is_ok());
  HostTensor q(dt, {1, S, Hq, D}), k(dt, {1, S, Hkv, D}), v = k, d_o = q, o = q, dq = q, dk = k;
  HostTensor lse(f32, {1, Hq, S});
  for (HostTensor* t : {&q, &k, &v, &d_o}) testing::fill_uniform(*t, rng, -1.0, 1.0);
  testing::poison(dq);
  testing::poison(dk);
  DeviceTensor gq = DeviceTensor::of(q), gk = DeviceTensor::of(k), gv = DeviceTensor::of(v),
               gdo = DeviceTensor::of(d_o), go = DeviceTensor::of(o), gl = DeviceTensor::of(lse),
               gdq = DeviceTensor::of(dq), gdk = DeviceTensor::of(dk), gdv = DeviceTensor::of(dk);
  testing::DeviceBytes cu_dev(cu.size() * 4);
  ASSERT_CUDA(cudaMemcpy(cu_dev.ptr, cu.data(), cu.size() * 4, cudaMemcpyHostToDevice));
  const auto* cu_ptr = static_cast<const std::int32_t*>(cu_dev.ptr);
  const std::size_t ws_bytes = (*kernel)->workspace_bytes(p);
  testing::DeviceBytes ws(ws_bytes);
  Status s = (*kernel)->forward(p,
                                {.q = gq.view,
                                 .k = gk.view,
                                 .v = gv.view,
                                 .o = go.view,
                                 .lse = gl.view,
                                 .cu_seqlens = cu,
                                 .cu_seqlens_device = cu_ptr,
                                 .workspace = ws.ptr},
                                nullptr);
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  auto backward = [&](const TensorView& gk_out, const TensorView& gv_out) {
    const Status st = (*kernel)->backward(p,
                                          {.q = gq.view,
                                           .k = gk.view,
                                           .v = gv.view,
                                           .o = go.view,
                                           .lse = gl.view,
                                           .d_o = gdo.view,
                                           .dq = gdq.view,
                                           .dk = gk_out,
                                           .dv = gv_out,
                                           .cu_seqlens = cu,
                                           .cu_seqlens_device = cu_ptr,
                                           .workspace = ws.ptr},
                                          nullptr);
    EXPECT_TRUE(st.is_ok()) << st.to_string();
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  };
  backward(gdk.view, gdv.view);
  const HostTensor want_k = gdk.download(dk), want_v = gdv.download(dk);
  EXPECT_EQ(testing::count_nan(want_k), 0);
  EXPECT_EQ(testing::count_nan(want_v), 0);
  std::size_t free_before = 0, free_after = 0, total = 0;
  auto grown = [&] { return free_before > free_after ? free_before - free_after : std::size_t{0}; };
  // Compact rows under another batch stride (one packed batch: it is never stepped) go to cuDNN
  // as they are: nothing allocated, the same bits.
  {
    TensorView k_odd = gdk.view, v_odd = gdv.view;
    k_odd.strides[0] = v_odd.strides[0] = 3 * S * Hkv * D;
    ASSERT_CUDA(cudaMemset(gdk.ptr, 0xFF, gdk.bytes));
    ASSERT_CUDA(cudaMemset(gdv.ptr, 0xFF, gdv.bytes));
    ASSERT_CUDA(cudaMemGetInfo(&free_before, &total));
    backward(k_odd, v_odd);
    ASSERT_CUDA(cudaMemGetInfo(&free_after, &total));
    EXPECT_LT(grown(), std::size_t{4} << 20) << "compact rows were staged";
    EXPECT_BITWISE_EQ(want_k, gdk.download(dk), "dK, another batch stride");
    EXPECT_BITWISE_EQ(want_v, gdv.download(dk), "dV, another batch stride");
  }
  // dK | dV side by side in one row of 2 Hkv heads, poisoned.
  const std::int64_t C = 2 * Hkv * D;
  const std::size_t wide_bytes = static_cast<std::size_t>(S * C) * 2;
  testing::DeviceBytes wide(wide_bytes);
  ASSERT_CUDA(cudaMemset(wide.ptr, 0xFF, wide_bytes));  // NaN
  auto half = [&](int i) {
    return TensorView::strided(static_cast<char*>(wide.ptr) + i * Hkv * D * 2, dt, {1, S, Hkv, D},
                               {S * C, C, D, 1}, Device::cuda(0));
  };
  const std::size_t held_compact = (*kernel)->held_bytes();
  ASSERT_CUDA(cudaMemGetInfo(&free_before, &total));
  backward(half(0), half(1));
  ASSERT_CUDA(cudaMemGetInfo(&free_after, &total));
  const std::size_t held_wide = (*kernel)->held_bytes();
  auto got = [&](int i) {
    HostTensor h(dt, {1, S, Hkv, D});
    const std::size_t w = static_cast<std::size_t>(Hkv * D) * 2;
    EXPECT_EQ(cudaMemcpy2D(h.storage.data(), w, static_cast<char*>(wide.ptr) + i * w,
                           static_cast<std::size_t>(C) * 2, w, static_cast<std::size_t>(S),
                           cudaMemcpyDeviceToHost),
              cudaSuccess);
    return h;
  };
  EXPECT_BITWISE_EQ(want_k, got(0), "dK in wide rows");
  EXPECT_BITWISE_EQ(want_v, got(1), "dV in wide rows");
  // Compact copies of dK and dV are 2 x 8 MiB here; the overflow was the graph's whole workspace
  // (352 MiB here on an H200 with cuDNN 9.19, beside the plan's 238).
  EXPECT_LT(grown(), ws_bytes / 4) << "the wide call allocated " << grown() << " bytes beside a "
                                   << ws_bytes << "-byte workspace";
  // held_bytes() counts those copies (and whatever the packed graph needed beyond the workspace);
  // release_held() gives them back, and the next wide call allocates them again, same bits.
  const std::size_t stage = 2 * static_cast<std::size_t>(S * Hkv * D) * 2;
  EXPECT_EQ(held_wide, held_compact + stage);
  ASSERT_CUDA(cudaMemGetInfo(&free_before, &total));
  ASSERT_TRUE((*kernel)->release_held(nullptr).is_ok());
  ASSERT_CUDA(cudaDeviceSynchronize());
  ASSERT_CUDA(cudaMemGetInfo(&free_after, &total));
  EXPECT_EQ((*kernel)->held_bytes(), 0u);
  EXPECT_GE(free_after - std::min(free_after, free_before), stage) << "release_held() freed less";
  ASSERT_CUDA(cudaMemset(wide.ptr, 0xFF, wide_bytes));
  backward(half(0), half(1));
  EXPECT_EQ((*kernel)->held_bytes(), held_wide);
  EXPECT_BITWISE_EQ(want_k, got(0), "dK in wide rows after release_held()");
  EXPECT_BITWISE_EQ(want_v, got(1), "dV in wide rows after release_held()");
}

// Packed backward with head_dim_v != head_dim on the views Ulysses hands it: Q, K and V inside
// one Q|K|V row, O and dO in rows wider than their heads, dQ, dK and dV written into one
// dQ|dK|dV row (poisoned). cuDNN's packed backward reads O with Q's ragged offsets, so the backend
// runs Q, O, dO and dQ through copies in rows of one stride (hq x max(D, Dv)): the same bits as
// from compact views (deterministic backward), which CudnnVsReference holds to the reference.
// (cuDNN 9.14 returned other dK and dV here: refused before 9.19.)
void expect_packed_mixed_dims_strided(int D, int Dv) {
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + ", D " + std::to_string(D) + ", Dv " +
               std::to_string(Dv));
  std::mt19937_64 rng(seed);
  const DType dt = DType::kBFloat16, f32 = DType::kFloat32;
  const std::int64_t S = 640;
  const int Hq = 4, Hkv = 2;
  const std::vector<std::int32_t> cu = {0, 100, 101, 400, static_cast<std::int32_t>(S)};
  const LocalProblem p = LocalProblem::unsharded(
      {.num_heads_q = Hq, .num_heads_kv = Hkv, .head_dim = D, .head_dim_v = Dv, .causal = true}, dt,
      1, S, true);
  auto kernel = create_cudnn_attention(0, {.deterministic = true});
  ASSERT_TRUE(kernel.is_ok()) << kernel.status().to_string();
  const Status rule = running_backward_rule(p);
  if (!rule.is_ok()) {  // (cuDNN before 9.19: CudnnVsReference checks the refusal)
    EXPECT_EQ((*kernel)->check_support(p).message(), rule.message());
    return;
  }
  ASSERT_TRUE((*kernel)->check_support(p).is_ok()) << (*kernel)->check_support(p).to_string();
  HostTensor q(dt, {1, S, Hq, D}), k(dt, {1, S, Hkv, D}), v(dt, {1, S, Hkv, Dv}),
      d_o(dt, {1, S, Hq, Dv}), lse(f32, {1, Hq, S});
  for (HostTensor* t : {&q, &k, &v, &d_o}) testing::fill_uniform(*t, rng, -1.0, 1.0);
  HostTensor o = d_o, dq = q, dk = k, dv = v;
  for (HostTensor* t : {&o, &lse, &dq, &dk, &dv}) testing::poison(*t);
  DeviceTensor gq = DeviceTensor::of(q), gk = DeviceTensor::of(k), gv = DeviceTensor::of(v),
               gdo = DeviceTensor::of(d_o), go = DeviceTensor::of(o), gl = DeviceTensor::of(lse),
               gdq = DeviceTensor::of(dq), gdk = DeviceTensor::of(dk), gdv = DeviceTensor::of(dv);
  testing::DeviceBytes cu_dev(cu.size() * 4);
  ASSERT_CUDA(cudaMemcpy(cu_dev.ptr, cu.data(), cu.size() * 4, cudaMemcpyHostToDevice));
  const auto* cu_ptr = static_cast<const std::int32_t*>(cu_dev.ptr);
  testing::DeviceBytes ws((*kernel)->workspace_bytes(p));
  struct Views {
    TensorView q, k, v, o, lse, d_o, dq, dk, dv;
  };
  auto run = [&](const Views& x) {
    Status st = (*kernel)->forward(p,
                                   {.q = x.q,
                                    .k = x.k,
                                    .v = x.v,
                                    .o = x.o,
                                    .lse = x.lse,
                                    .cu_seqlens = cu,
                                    .cu_seqlens_device = cu_ptr,
                                    .workspace = ws.ptr},
                                   nullptr);
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    st = (*kernel)->backward(p,
                             {.q = x.q,
                              .k = x.k,
                              .v = x.v,
                              .o = x.o,
                              .lse = x.lse,
                              .d_o = x.d_o,
                              .dq = x.dq,
                              .dk = x.dk,
                              .dv = x.dv,
                              .cu_seqlens = cu,
                              .cu_seqlens_device = cu_ptr,
                              .workspace = ws.ptr},
                             nullptr);
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    ASSERT_CUDA(cudaDeviceSynchronize());
  };
  run({gq.view, gk.view, gv.view, go.view, gl.view, gdo.view, gdq.view, gdk.view, gdv.view});
  const HostTensor want_o = go.download(o), want_lse = gl.download(lse), want_dq = gdq.download(dq),
                   want_dk = gdk.download(dk), want_dv = gdv.download(dv);
  for (const HostTensor* t : {&want_o, &want_dq, &want_dk, &want_dv}) {
    EXPECT_EQ(testing::count_nan(*t), 0);
  }
  // Rows of C elements, each holding the listed views side by side (columns `at` on).
  const std::int64_t C = Hq * D + Hkv * D + Hkv * Dv, Co = Hq * Dv + 72;
  testing::DeviceBytes qkv(static_cast<std::size_t>(S * C) * 2),
      grads(static_cast<std::size_t>(S * C) * 2), o_rows(static_cast<std::size_t>(S * Co) * 2),
      do_rows(static_cast<std::size_t>(S * Co) * 2);
  auto in_rows = [&](void* buf, std::int64_t c, std::int64_t at, std::int64_t H, std::int64_t d) {
    return TensorView::strided(static_cast<char*>(buf) + at * 2, dt, {1, S, H, d}, {S * c, c, d, 1},
                               Device::cuda(0));
  };
  auto put = [&](const TensorView& dst, const DeviceTensor& src) {
    const std::size_t w = static_cast<std::size_t>(dst.size(2) * dst.size(3)) * 2;
    ASSERT_CUDA(cudaMemcpy2D(dst.data, static_cast<std::size_t>(dst.stride(1)) * 2, src.ptr, w, w,
                             static_cast<std::size_t>(S), cudaMemcpyDeviceToDevice));
  };
  auto get = [&](const TensorView& src, const HostTensor& like) {
    HostTensor h = like;
    const std::size_t w = static_cast<std::size_t>(src.size(2) * src.size(3)) * 2;
    EXPECT_EQ(
        cudaMemcpy2D(h.storage.data(), w, src.data, static_cast<std::size_t>(src.stride(1)) * 2, w,
                     static_cast<std::size_t>(S), cudaMemcpyDeviceToHost),
        cudaSuccess);
    return h;
  };
  for (void* b : {qkv.ptr, grads.ptr, o_rows.ptr, do_rows.ptr}) {
    ASSERT_CUDA(cudaMemset(b, 0xFF,
                           b == o_rows.ptr || b == do_rows.ptr
                               ? static_cast<std::size_t>(S * Co) * 2
                               : static_cast<std::size_t>(S * C) * 2));
  }
  const Views x{in_rows(qkv.ptr, C, 0, Hq, D),
                in_rows(qkv.ptr, C, Hq * D, Hkv, D),
                in_rows(qkv.ptr, C, Hq * D + Hkv * D, Hkv, Dv),
                in_rows(o_rows.ptr, Co, 0, Hq, Dv),
                gl.view,
                in_rows(do_rows.ptr, Co, 0, Hq, Dv),
                in_rows(grads.ptr, C, 0, Hq, D),
                in_rows(grads.ptr, C, Hq * D, Hkv, D),
                in_rows(grads.ptr, C, Hq * D + Hkv * D, Hkv, Dv)};
  put(x.q, gq);
  put(x.k, gk);
  put(x.v, gv);
  put(x.d_o, gdo);
  ASSERT_CUDA(cudaMemset(gl.ptr, 0xFF, gl.bytes));
  run(x);
  EXPECT_BITWISE_EQ(want_o, get(x.o, o), "O in wide rows");
  EXPECT_BITWISE_EQ(want_lse, gl.download(lse), "LSE");
  EXPECT_BITWISE_EQ(want_dq, get(x.dq, dq), "dQ in the dQ|dK|dV row");
  EXPECT_BITWISE_EQ(want_dk, get(x.dk, dk), "dK in the dQ|dK|dV row");
  EXPECT_BITWISE_EQ(want_dv, get(x.dv, dv), "dV in the dQ|dK|dV row");
}

TEST(Cudnn, PackedMixedDimsFromStridedViews) {
  ULYSSES_REQUIRE_GPUS(1);
  expect_packed_mixed_dims_strided(192, 128);
  expect_packed_mixed_dims_strided(64, 128);
}

// What a packed plan is sized for, against the dense problem of the same shape: cuDNN's workspace
// follows the tokens (packed GQA keeps fp32 full-head dK/dV partials the dense graph does not:
// 1.8x at head_dim 64). Where cudnn-frontend sizes the packed backward's fp32 tensors by the
// graph's rows instead (head_dim 72, not a multiple of 16), the canonical probe of S sequence
// slots x S rows asked for 32000 times the dense workspace (9.96 TB here) before the backend
// bounded its calls' graphs to one sequence's rows. A forward-only problem needs no backward
// scratch: less than a quarter of training's (measured: 3.1 of 274 MB dense, 88 of 499 packed,
// where staging and metadata remain).
TEST(Cudnn, PackedWorkspaceFollowsTheTokens) {
  ULYSSES_REQUIRE_GPUS(1);
  auto kernel = create_cudnn_attention(0);
  ASSERT_TRUE(kernel.is_ok()) << kernel.status().to_string();
  for (const int D : {64, 72}) {
    std::size_t forward_only[2] = {};
    for (const bool training : {false, true}) {
      SCOPED_TRACE("head_dim " + std::to_string(D) + (training ? " training" : " forward"));
      const AttentionConfig cfg{
          .num_heads_q = 16, .num_heads_kv = 4, .head_dim = D, .causal = true};
      LocalProblem dense = LocalProblem::unsharded(cfg, DType::kBFloat16, 1, 32768, false);
      LocalProblem packed = LocalProblem::unsharded(cfg, DType::kBFloat16, 1, 32768, true);
      dense.backward = packed.backward = training;
      ASSERT_TRUE((*kernel)->check_support(packed).is_ok());
      const std::size_t d = (*kernel)->workspace_bytes(dense),
                        v = (*kernel)->workspace_bytes(packed);
      std::printf("head_dim %d %s: workspace dense %zu, packed %zu bytes\n", D,
                  training ? "training" : "forward", d, v);
      if (!training) {
        forward_only[0] = d;
        forward_only[1] = v;
      } else {
        EXPECT_LE(v, 2 * d);
        EXPECT_LT(forward_only[0], d / 4);
        EXPECT_LT(forward_only[1], v / 4);
      }
    }
  }
}

// One buffer row holding q | k | v | o | dO | dq | dk | dv side by side (as Ulysses' receive
// buffer holds Q|K|V): each channel's heads, its first element in the row, and the elements a row
// uses.
struct Channels {
  std::array<int, 8> heads;
  std::array<std::int64_t, 8> at{};
  std::int64_t used = 0;
  Channels(int hq, int hkv, int d) : heads{hq, hkv, hkv, hq, hq, hq, hkv, hkv} {
    for (std::size_t i = 0; i < heads.size(); ++i) {
      at[i] = used;
      used += heads[i] * d;
    }
  }
};

// Ragged offsets past 2^31 elements (int64 since cuDNN 9.5): two sequences in one buffer whose
// rows hold q | k | v | o | dO | dq | dk | dv side by side (as Ulysses' receive buffer holds
// Q|K|V), the second sequence's rows more than 2^31 elements in, as in a decode batch of long
// caches or a rank's packed stream of over 2^31 / (heads x head_dim) tokens. Both packed forms:
// VarlenRows with a gap between the sequences (rows 2^20 elements apart), and cu_seqlens with the
// sequences adjacent in rows so wide that the second starts past 2^31. Forward and backward
// (deterministic, from the plain O and LSE) must give the bits of the same call with the sequences
// in adjacent narrow rows and match the FP64 reference by the 2x rule; rows between the sequences
// come back as zeros. cuDNN 9.19's backward returned wrong dQ and dK (dV right) past 2^31, so the
// backend runs each sequence there as a call of its own (backward_groups()); a single sequence
// that spans past 2^31 by itself is refused as Unsupported, naming it. With sinks, the backward
// runs each group without them and dSinks come from one pass over all rows (cuDNN before 9.26 has
// no packed backward with sinks): dSinks by the 2x rule in every layout.
void check_ragged_past_2to31(bool sinks) {
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const DType dt = DType::kBFloat16, f32 = DType::kFloat32, f64 = DType::kFloat64;
  const int Hq = 4, Hkv = 2, D = 64;
  const std::int64_t len0 = 48, len1 = 40, N = len0 + len1;
  const std::int64_t kPast = std::int64_t{1} << 31;
  const Channels ch(Hq, Hkv, D);
  const auto& heads = ch.heads;
  const auto& chan = ch.at;
  const std::int64_t used = ch.used;
  const AttentionConfig cfg{
      .num_heads_q = Hq, .num_heads_kv = Hkv, .head_dim = D, .causal = true, .sinks = sinks};
  HostTensor q(dt, {1, N, Hq, D}), k(dt, {1, N, Hkv, D}), v = k, d_o = q, sink(f32, {Hq});
  for (HostTensor* t : {&q, &k, &v, &d_o}) testing::fill_uniform(*t, rng, -1.0, 1.0);
  testing::fill_uniform(sink, rng, -0.5, 1.5);
  const HostTensor* sink_ref = sinks ? &sink : nullptr;
  testing::DeviceBytes sink_dev(static_cast<std::size_t>(Hq) * 4),
      dsink_dev(static_cast<std::size_t>(Hq) * 4);
  ASSERT_CUDA(cudaMemcpy(sink_dev.ptr, sink.storage.data(), static_cast<std::size_t>(Hq) * 4,
                         cudaMemcpyHostToDevice));
  const TensorView sink_view =
      sinks ? TensorView::contiguous(sink_dev.ptr, f32, {Hq}, Device::cuda(0)) : TensorView{};
  const TensorView dsink_view =
      sinks ? TensorView::contiguous(dsink_dev.ptr, f32, {Hq}, Device::cuda(0)) : TensorView{};
  const std::vector<std::int32_t> compact_begin = {0, static_cast<std::int32_t>(len0)},
                                  lens = {static_cast<std::int32_t>(len0),
                                          static_cast<std::int32_t>(len1)};
  const VarlenRows compact{
      .q_begin = compact_begin, .q_len = lens, .kv_begin = compact_begin, .kv_len = lens};
  LocalProblem rp = LocalProblem::unsharded(cfg, dt, 1, N, true);
  rp.varlen_rows = true;
  const RowsOut plain = rows_reference(rp, dt, compact, q, k, v, d_o, nullptr, sink_ref);
  const RowsOut truth_fwd = rows_reference(rp, f64, compact, q, k, v, d_o, nullptr, sink_ref);
  // The backward below reads the plain O and LSE.
  const RowsOut truth = rows_reference(rp, f64, compact, q, k, v, d_o, &plain, sink_ref);

  auto kernel = create_cudnn_attention(0, {.deterministic = true});
  ASSERT_TRUE(kernel.is_ok()) << kernel.status().to_string();
  // Sequence 1 starts at row r1 of rows C elements apart; cu_seqlens (r1 = len0) or VarlenRows.
  // `refused`: backward must be Unsupported naming this sequence.
  auto run = [&](std::int64_t r1, std::int64_t C, bool cu_path, RowsOut& out,
                 const char* refused = nullptr) {
    SCOPED_TRACE(std::string(cu_path ? "cu_seqlens" : "VarlenRows") + ", sequence 1 at row " +
                 std::to_string(r1) + ", rows " + std::to_string(C) + " elements apart");
    ASSERT_LE(used, C);
    const std::int64_t rows = r1 + len1;
    const std::array<std::int64_t, 2> first = {0, r1}, len = {len0, len1};
    const std::size_t row_bytes = static_cast<std::size_t>(C) * 2;
    testing::DeviceBytes buf(static_cast<std::size_t>(rows) * row_bytes);
    testing::DeviceBytes lse_buf(static_cast<std::size_t>(Hq * rows) * 4);
    ASSERT_CUDA(cudaMemset(buf.ptr, 0xFF, static_cast<std::size_t>(rows) * row_bytes));  // NaN
    ASSERT_CUDA(cudaMemset(lse_buf.ptr, 0xFF, static_cast<std::size_t>(Hq * rows) * 4));
    ASSERT_CUDA(cudaMemset(dsink_dev.ptr, 0xFF, static_cast<std::size_t>(Hq) * 4));
    auto view = [&](std::size_t i) {
      return TensorView::strided(static_cast<char*>(buf.ptr) + chan[i] * 2, dt,
                                 {1, rows, heads[i], D}, {rows * C, C, D, 1}, Device::cuda(0));
    };
    // Host [1, N, H, D] rows <-> the sequences' rows of channel i.
    auto put = [&](std::size_t i, const HostTensor& h) {
      const std::size_t w = static_cast<std::size_t>(heads[i] * D) * 2;
      for (std::size_t s = 0; s < 2; ++s) {
        const std::int64_t hrow = s == 0 ? 0 : len0;
        ASSERT_CUDA(cudaMemcpy2D(static_cast<char*>(buf.ptr) + first[s] * row_bytes + chan[i] * 2,
                                 row_bytes, h.storage.data() + hrow * static_cast<std::int64_t>(w),
                                 w, w, static_cast<std::size_t>(len[s]), cudaMemcpyHostToDevice));
      }
    };
    auto get = [&](std::size_t i, HostTensor& h) {
      h = HostTensor(dt, {1, N, heads[i], D});
      const std::size_t w = static_cast<std::size_t>(heads[i] * D) * 2;
      for (std::size_t s = 0; s < 2; ++s) {
        const std::int64_t hrow = s == 0 ? 0 : len0;
        ASSERT_CUDA(cudaMemcpy2D(h.storage.data() + hrow * static_cast<std::int64_t>(w), w,
                                 static_cast<char*>(buf.ptr) + first[s] * row_bytes + chan[i] * 2,
                                 row_bytes, w, static_cast<std::size_t>(len[s]),
                                 cudaMemcpyDeviceToHost));
      }
    };
    auto lse_rows = [&](HostTensor& h, bool upload) {  // [1, Hq, rows] <-> [1, Hq, N]
      if (!upload) h = HostTensor(f32, {1, Hq, N});
      for (int hd = 0; hd < Hq; ++hd) {
        for (std::size_t s = 0; s < 2; ++s) {
          const std::int64_t hrow = s == 0 ? 0 : len0;
          char* dev = static_cast<char*>(lse_buf.ptr) + (hd * rows + first[s]) * 4;
          std::uint8_t* host = h.storage.data() + (hd * N + hrow) * 4;
          const std::size_t n = static_cast<std::size_t>(len[s]) * 4;
          ASSERT_CUDA(upload ? cudaMemcpy(dev, host, n, cudaMemcpyHostToDevice)
                             : cudaMemcpy(host, dev, n, cudaMemcpyDeviceToHost));
        }
      }
    };
    put(0, q);
    put(1, k);
    put(2, v);
    put(4, d_o);
    const std::vector<std::int32_t> begin = {0, static_cast<std::int32_t>(r1)};
    const std::vector<std::int32_t> cu = {0, static_cast<std::int32_t>(len0),
                                          static_cast<std::int32_t>(N)};
    const std::vector<std::int32_t> tab_host = {begin[0], begin[1], lens[0], lens[1],
                                                begin[0], begin[1], lens[0], lens[1]};
    testing::DeviceBytes tab(tab_host.size() * 4), cu_dev(cu.size() * 4);
    ASSERT_CUDA(cudaMemcpy(tab.ptr, tab_host.data(), tab_host.size() * 4, cudaMemcpyHostToDevice));
    ASSERT_CUDA(cudaMemcpy(cu_dev.ptr, cu.data(), cu.size() * 4, cudaMemcpyHostToDevice));
    const auto* t = static_cast<const std::int32_t*>(tab.ptr);
    VarlenRows drows;
    std::span<const std::int32_t> cu_host;
    const std::int32_t* cu_device = nullptr;
    if (cu_path) {
      ASSERT_EQ(r1, len0) << "cu_seqlens: the sequences are adjacent";
      cu_host = cu;
      cu_device = static_cast<const std::int32_t*>(cu_dev.ptr);
    } else {
      drows = VarlenRows{.q_begin = begin,
                         .q_len = lens,
                         .kv_begin = begin,
                         .kv_len = lens,
                         .q_begin_device = t,
                         .q_len_device = t + 2,
                         .kv_begin_device = t + 4,
                         .kv_len_device = t + 6};
    }
    LocalProblem p = LocalProblem::unsharded(cfg, dt, 1, rows, true);
    p.varlen_rows = !cu_path;
    ASSERT_TRUE((*kernel)->check_support(p).is_ok()) << (*kernel)->check_support(p).to_string();
    testing::DeviceBytes ws((*kernel)->workspace_bytes(p));
    const TensorView lse = TensorView::contiguous(lse_buf.ptr, f32, {1, Hq, rows}, Device::cuda(0));
    Status st = (*kernel)->forward(p,
                                   {.q = view(0),
                                    .k = view(1),
                                    .v = view(2),
                                    .sinks = sink_view,
                                    .o = view(3),
                                    .lse = lse,
                                    .cu_seqlens = cu_host,
                                    .cu_seqlens_device = cu_device,
                                    .rows = drows,
                                    .workspace = ws.ptr},
                                   nullptr);
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    ASSERT_CUDA(cudaDeviceSynchronize());
    get(3, out.o);
    lse_rows(out.lse, false);
    if (r1 > len0) {  // a row between the sequences: O = 0
      std::vector<std::uint16_t> gap(static_cast<std::size_t>(Hq * D), 1);
      ASSERT_CUDA(cudaMemcpy(gap.data(),
                             static_cast<char*>(buf.ptr) + len0 * row_bytes + chan[3] * 2,
                             gap.size() * 2, cudaMemcpyDeviceToHost));
      EXPECT_EQ(std::count(gap.begin(), gap.end(), std::uint16_t{0}), Hq * D)
          << "O between the sequences";
    }
    // Backward from the plain O and LSE (the reference's), so its error is the kernel's alone.
    put(3, plain.o);
    HostTensor plain_lse = plain.lse;
    lse_rows(plain_lse, true);
    st = (*kernel)->backward(p,
                             {.q = view(0),
                              .k = view(1),
                              .v = view(2),
                              .o = view(3),
                              .lse = lse,
                              .d_o = view(4),
                              .sinks = sink_view,
                              .dq = view(5),
                              .dk = view(6),
                              .dv = view(7),
                              .dsinks = dsink_view,
                              .cu_seqlens = cu_host,
                              .cu_seqlens_device = cu_device,
                              .rows = drows,
                              .workspace = ws.ptr},
                             nullptr);
    if (refused) {
      EXPECT_EQ(st.code(), StatusCode::kUnsupported) << st.to_string();
      EXPECT_NE(st.message().find(refused), std::string::npos) << st.message();
      EXPECT_NE(st.message().find("2^31"), std::string::npos) << st.message();
      return;
    }
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    ASSERT_CUDA(cudaDeviceSynchronize());
    get(5, out.dq);
    get(6, out.dk);
    get(7, out.dv);
    out.dsinks = HostTensor(f32, {Hq});
    ASSERT_CUDA(cudaMemcpy(out.dsinks.storage.data(), dsink_dev.ptr,
                           static_cast<std::size_t>(Hq) * 4, cudaMemcpyDeviceToHost));
  };
  auto check = [&](const char* what, const HostTensor& got, const HostTensor& pl,
                   const HostTensor& tr, double floor_ulps) {
    EXPECT_EQ(testing::count_nan(got), 0) << what << ": unwritten or NaN elements";
    const double floor = floor_ulps * ulp_rel(dt) * testing::max_abs(tr);
    EXPECT_TRUE(testing::within_2x_rule(got, pl, tr, floor)) << what;
  };
  // dSinks: one sum over the call's rows, whose order follows the rows' layout, so by the 2x rule
  // in every layout rather than bitwise.
  auto check_dsinks = [&](const RowsOut& got) {
    if (sinks) check("dSinks", got.dsinks, plain.dsinks, truth.dsinks, 4);
  };
  auto same = [&](const RowsOut& a, const RowsOut& b, const char* what) {
    SCOPED_TRACE(what);
    EXPECT_BITWISE_EQ(a.o, b.o, "O");
    EXPECT_BITWISE_EQ(a.lse, b.lse, "LSE");
    EXPECT_BITWISE_EQ(a.dq, b.dq, "dQ");
    EXPECT_BITWISE_EQ(a.dk, b.dk, "dK");
    EXPECT_BITWISE_EQ(a.dv, b.dv, "dV");
    check_dsinks(b);
  };
  const std::int64_t C = std::int64_t{1} << 20;
  RowsOut near, far, cu_near, cu_far;
  run(len0, C, false, near);
  if (::testing::Test::HasFatalFailure()) return;
  check("O", near.o, plain.o, truth_fwd.o, 2);
  check("LSE", near.lse, plain.lse, truth_fwd.lse, 0.05);
  check("dQ", near.dq, plain.dq, truth.dq, 4);
  check("dK", near.dk, plain.dk, truth.dk, 4);
  check("dV", near.dv, plain.dv, truth.dv, 4);
  check_dsinks(near);
  // VarlenRows: sequence 1 at the first row past 2^31 elements (a gap between the sequences).
  const std::int64_t r_far = kPast / C + 1;
  ASSERT_GT(r_far * C, kPast);
  run(r_far, C, false, far);
  if (::testing::Test::HasFatalFailure()) return;
  same(near, far, "VarlenRows, sequence 1 past 2^31 elements");
  // cu_seqlens: rows so wide that sequence 1 (adjacent) starts past 2^31 while sequence 0 ends
  // before it, 16-byte aligned.
  const std::int64_t wide = (2 * kPast / (2 * len0 - 1)) / 8 * 8;
  ASSERT_GT(len0 * wide, kPast);
  ASSERT_LT((len0 - 1) * wide + used, kPast);
  run(len0, C, true, cu_near);
  if (::testing::Test::HasFatalFailure()) return;
  same(near, cu_near, "cu_seqlens, adjacent narrow rows");
  run(len0, wide, true, cu_far);
  if (::testing::Test::HasFatalFailure()) return;
  same(near, cu_far, "cu_seqlens, sequence 1 past 2^31 elements");
  // Rows so wide that each sequence spans past 2^31 by itself: refused, naming the first.
  RowsOut unused;
  run(len0, (kPast / (len1 - 1) + 8) / 8 * 8, true, unused, "sequence 0");
}

TEST(Cudnn, RaggedOffsetsPast2To31Elements) {
  ULYSSES_REQUIRE_GPUS(1);
  check_ragged_past_2to31(false);
}

TEST(Cudnn, RaggedSinksPast2To31Elements) {
  ULYSSES_REQUIRE_GPUS(1);
  check_ragged_past_2to31(true);
}

// Dense views past 2^31 elements: one sequence whose rows hold q | k | v | o | dO | dq | dk | dv
// 2^20 elements apart, so its last rows lie past element 2^31 of every view, as Ulysses' receive
// buffer at cp = 2 does past ~700k tokens (rows of 24 heads x 128) and cp = 1's tensors past 512k.
// Forward and backward (deterministic) must give the bits of the same call on narrow rows. The
// first run of this test (before dense_parts()) found cuDNN 9.19's backward wrong there: dQ past
// row 2^31 / 2^20 and dK everywhere, O, LSE and dV right (it reads K, O and dO with 32-bit
// offsets); the backend now stages those three compact when their views reach past 2^31.
TEST(Cudnn, DenseViewsPast2To31Elements) {
  ULYSSES_REQUIRE_GPUS(1);
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const DType dt = DType::kBFloat16;
  const int Hq = 4, Hkv = 2, D = 64;
  const std::int64_t wide = std::int64_t{1} << 20, S = (std::int64_t{1} << 31) / wide + 64;
  const Channels ch(Hq, Hkv, D);
  const auto& heads = ch.heads;
  const auto& chan = ch.at;
  const std::int64_t used = ch.used;
  const AttentionConfig cfg{.num_heads_q = Hq, .num_heads_kv = Hkv, .head_dim = D, .causal = true};
  HostTensor q(dt, {1, S, Hq, D}), k(dt, {1, S, Hkv, D}), v = k, d_o = q;
  for (HostTensor* t : {&q, &k, &v, &d_o}) testing::fill_uniform(*t, rng, -1.0, 1.0);
  auto kernel = create_cudnn_attention(0, {.deterministic = true});
  ASSERT_TRUE(kernel.is_ok()) << kernel.status().to_string();
  const LocalProblem p = LocalProblem::unsharded(cfg, dt, 1, S);
  struct Out {
    HostTensor o, lse, dq, dk, dv;
  };
  auto run = [&](std::int64_t C, Out& out) {
    SCOPED_TRACE("rows " + std::to_string(C) + " elements apart");
    const std::size_t row_bytes = static_cast<std::size_t>(C) * 2,
                      bytes = static_cast<std::size_t>(S) * row_bytes;
    testing::DeviceBytes buf(bytes), lse_buf(static_cast<std::size_t>(Hq * S) * 4);
    ASSERT_CUDA(cudaMemset(buf.ptr, 0xFF, bytes));  // NaN
    ASSERT_CUDA(cudaMemset(lse_buf.ptr, 0xFF, static_cast<std::size_t>(Hq * S) * 4));
    auto view = [&](std::size_t i) {
      return TensorView::strided(static_cast<char*>(buf.ptr) + chan[i] * 2, dt, {1, S, heads[i], D},
                                 {S * C, C, D, 1}, Device::cuda(0));
    };
    auto copy = [&](std::size_t i, HostTensor& h, bool upload) {
      const std::size_t w = static_cast<std::size_t>(heads[i] * D) * 2;
      char* dev = static_cast<char*>(buf.ptr) + chan[i] * 2;
      ASSERT_CUDA(upload ? cudaMemcpy2D(dev, row_bytes, h.storage.data(), w, w,
                                        static_cast<std::size_t>(S), cudaMemcpyHostToDevice)
                         : cudaMemcpy2D(h.storage.data(), w, dev, row_bytes, w,
                                        static_cast<std::size_t>(S), cudaMemcpyDeviceToHost));
    };
    copy(0, q, true);
    copy(1, k, true);
    copy(2, v, true);
    copy(4, d_o, true);
    testing::DeviceBytes ws((*kernel)->workspace_bytes(p));
    const TensorView lse =
        TensorView::contiguous(lse_buf.ptr, DType::kFloat32, {1, Hq, S}, Device::cuda(0));
    Status st = (*kernel)->forward(
        p,
        {.q = view(0), .k = view(1), .v = view(2), .o = view(3), .lse = lse, .workspace = ws.ptr},
        nullptr);
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    st = (*kernel)->backward(p,
                             {.q = view(0),
                              .k = view(1),
                              .v = view(2),
                              .o = view(3),
                              .lse = lse,
                              .d_o = view(4),
                              .dq = view(5),
                              .dk = view(6),
                              .dv = view(7),
                              .workspace = ws.ptr},
                             nullptr);
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    ASSERT_CUDA(cudaDeviceSynchronize());
    out.o = HostTensor(dt, {1, S, Hq, D});
    out.dq = HostTensor(dt, {1, S, Hq, D});
    out.dk = HostTensor(dt, {1, S, Hkv, D});
    out.dv = HostTensor(dt, {1, S, Hkv, D});
    out.lse = HostTensor(DType::kFloat32, {1, Hq, S});
    copy(3, out.o, false);
    copy(5, out.dq, false);
    copy(6, out.dk, false);
    copy(7, out.dv, false);
    ASSERT_CUDA(cudaMemcpy(out.lse.storage.data(), lse_buf.ptr, out.lse.storage.size(),
                           cudaMemcpyDeviceToHost));
  };
  Out narrow, far;
  run(used, narrow);
  if (HasFatalFailure()) return;
  ASSERT_GT((S - 1) * wide, std::int64_t{1} << 31);
  run(wide, far);
  if (HasFatalFailure()) return;
  for (const HostTensor* t : {&narrow.o, &narrow.dq, &narrow.dk, &narrow.dv, &narrow.lse}) {
    EXPECT_EQ(testing::count_nan(*t), 0) << "unwritten or NaN elements";
  }
  EXPECT_BITWISE_EQ(narrow.o, far.o, "O");
  EXPECT_BITWISE_EQ(narrow.lse, far.lse, "LSE");
  EXPECT_BITWISE_EQ(narrow.dq, far.dq, "dQ");
  EXPECT_BITWISE_EQ(narrow.dk, far.dk, "dK");
  EXPECT_BITWISE_EQ(narrow.dv, far.dv, "dV");
}

// Dense calls whose compact K, O or dO hold more than 2^31 elements (B x S x heads x head_dim):
// the backend runs their backward in parts, by batch entries or by KV-head groups, staging a
// part's views that still reach past 2^31 (DenseViewsPast2To31Elements is the in-place case).
// Too large for the FP64 reference, so each is checked against the same inputs run as separate
// calls that fit (batch entries or head halves in buffers of their own): O, dK and dV bitwise,
// dQ within 1% of its largest magnitude (cuDNN adds dQ with atomics; past 2^31 it came out ~10x
// off), and nothing unwritten (outputs start as NaN).
struct BigDense {
  std::int64_t B = 0, S = 0;
  int Hq = 0, Hkv = 0;
  bool sinks = false;
  static constexpr int D = 128;
  std::vector<std::uint16_t> q, k, v, d_o;   // inputs, bf16 bits [B, S, H, D]
  std::vector<std::uint16_t> o, dq, dk, dv;  // outputs, filled part by part
  std::vector<float> sink, dsink;            // [Hq] when sinks
  std::size_t n(int H) const { return static_cast<std::size_t>(B * S * H * D); }
};

// Forward and backward on batch entries [b0, b0 + nb) and KV heads [kv0, kv0 + nkv) (with their
// query heads) of `c`, in compact device tensors of their own; results land in c's outputs (dSinks
// are added to c.dsink).
void run_dense_part(LocalAttention& att, BigDense& c, std::int64_t b0, std::int64_t nb, int kv0,
                    int nkv) {
  const int r = c.Hq / c.Hkv, q0 = kv0 * r, nq = nkv * r, D = BigDense::D;
  const AttentionConfig cfg{
      .num_heads_q = nq, .num_heads_kv = nkv, .head_dim = D, .causal = true, .sinks = c.sinks};
  const LocalProblem p = LocalProblem::unsharded(cfg, DType::kBFloat16, nb, c.S);
  const std::size_t rows = static_cast<std::size_t>(nb * c.S);
  struct T {
    std::vector<std::uint16_t>* host;
    int H, h0, h;
  };
  const T ts[] = {{&c.q, c.Hq, q0, nq},     {&c.k, c.Hkv, kv0, nkv}, {&c.v, c.Hkv, kv0, nkv},
                  {&c.d_o, c.Hq, q0, nq},   {&c.o, c.Hq, q0, nq},    {&c.dq, c.Hq, q0, nq},
                  {&c.dk, c.Hkv, kv0, nkv}, {&c.dv, c.Hkv, kv0, nkv}};
  std::vector<std::unique_ptr<testing::DeviceBytes>> dev;
  std::vector<TensorView> views;
  for (std::size_t i = 0; i < 8; ++i) {
    const T& t = ts[i];
    const std::size_t w = static_cast<std::size_t>(t.h * D) * 2;
    dev.push_back(std::make_unique<testing::DeviceBytes>(rows * w));
    views.push_back(TensorView::contiguous(dev.back()->ptr, DType::kBFloat16, {nb, c.S, t.h, D},
                                           Device::cuda(0)));
    const std::size_t pitch = static_cast<std::size_t>(t.H * D) * 2;
    auto* host = reinterpret_cast<char*>(t.host->data()) +
                 static_cast<std::size_t>(b0 * c.S) * pitch +
                 static_cast<std::size_t>(t.h0 * D) * 2;
    if (i < 4) {
      ASSERT_CUDA(cudaMemcpy2D(dev.back()->ptr, w, host, pitch, w, rows, cudaMemcpyHostToDevice));
    } else {
      ASSERT_CUDA(cudaMemset(dev.back()->ptr, 0xFF, rows * w));  // NaN
    }
  }
  testing::DeviceBytes lse(static_cast<std::size_t>(nb * nq * c.S) * 4), ws(att.workspace_bytes(p));
  const TensorView l =
      TensorView::contiguous(lse.ptr, DType::kFloat32, {nb, nq, c.S}, Device::cuda(0));
  // The part's query heads' sinks (its own problem counts heads from q0).
  const std::size_t sink_bytes = static_cast<std::size_t>(nq) * 4;
  testing::DeviceBytes sink(sink_bytes), dsink(sink_bytes);
  TensorView sv, dsv;
  if (c.sinks) {
    ASSERT_CUDA(cudaMemcpy(sink.ptr, c.sink.data() + q0, sink_bytes, cudaMemcpyHostToDevice));
    ASSERT_CUDA(cudaMemset(dsink.ptr, 0xFF, sink_bytes));  // NaN
    sv = TensorView::contiguous(sink.ptr, DType::kFloat32, {nq}, Device::cuda(0));
    dsv = TensorView::contiguous(dsink.ptr, DType::kFloat32, {nq}, Device::cuda(0));
  }
  Status st = att.forward(p,
                          {.q = views[0],
                           .k = views[1],
                           .v = views[2],
                           .sinks = sv,
                           .o = views[4],
                           .lse = l,
                           .workspace = ws.ptr},
                          nullptr);
  ASSERT_TRUE(st.is_ok()) << st.to_string();
  st = att.backward(p,
                    {.q = views[0],
                     .k = views[1],
                     .v = views[2],
                     .o = views[4],
                     .lse = l,
                     .d_o = views[3],
                     .sinks = sv,
                     .dq = views[5],
                     .dk = views[6],
                     .dv = views[7],
                     .dsinks = dsv,
                     .workspace = ws.ptr},
                    nullptr);
  ASSERT_TRUE(st.is_ok()) << st.to_string();
  ASSERT_CUDA(cudaDeviceSynchronize());
  if (c.sinks) {  // summed over the parts that split the batch
    std::vector<float> part(static_cast<std::size_t>(nq));
    ASSERT_CUDA(cudaMemcpy(part.data(), dsink.ptr, sink_bytes, cudaMemcpyDeviceToHost));
    for (int h = 0; h < nq; ++h) c.dsink[static_cast<std::size_t>(q0 + h)] += part[h];
  }
  for (std::size_t i = 4; i < 8; ++i) {
    const T& t = ts[i];
    const std::size_t w = static_cast<std::size_t>(t.h * D) * 2,
                      pitch = static_cast<std::size_t>(t.H * D) * 2;
    auto* host = reinterpret_cast<char*>(t.host->data()) +
                 static_cast<std::size_t>(b0 * c.S) * pitch +
                 static_cast<std::size_t>(t.h0 * D) * 2;
    ASSERT_CUDA(cudaMemcpy2D(host, pitch, dev[i]->ptr, w, w, rows, cudaMemcpyDeviceToHost));
  }
}

float bf16_value(std::uint16_t b) {
  const std::uint32_t bits = std::uint32_t{b} << 16;
  float f = 0;
  std::memcpy(&f, &bits, 4);
  return f;
}

// The whole call against `parts` (batch entries or KV-head ranges that fit by themselves).
void check_big_dense(BigDense c, bool split_batch) {
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  c.q = detail::random_bf16_bits(c.n(c.Hq), seed, 0);
  c.k = detail::random_bf16_bits(c.n(c.Hkv), seed, 1);
  c.v = detail::random_bf16_bits(c.n(c.Hkv), seed, 2);
  c.d_o = detail::random_bf16_bits(c.n(c.Hq), seed, 3);
  for (auto* out : {&c.o, &c.dq}) out->assign(c.n(c.Hq), 0);
  for (auto* out : {&c.dk, &c.dv}) out->assign(c.n(c.Hkv), 0);
  if (c.sinks) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> u(-0.5f, 1.5f);
    c.sink.resize(static_cast<std::size_t>(c.Hq));
    for (float& x : c.sink) x = u(rng);
    c.dsink.assign(c.sink.size(), 0.0f);
  }
  auto kernel = create_cudnn_attention(0);
  ASSERT_TRUE(kernel.is_ok()) << kernel.status().to_string();
  run_dense_part(**kernel, c, 0, c.B, 0, c.Hkv);
  if (::testing::Test::HasFatalFailure()) return;
  BigDense whole;  // its outputs: the whole call's
  whole.o = std::exchange(c.o, std::vector<std::uint16_t>(c.o.size()));
  whole.dq = std::exchange(c.dq, std::vector<std::uint16_t>(c.dq.size()));
  whole.dk = std::exchange(c.dk, std::vector<std::uint16_t>(c.dk.size()));
  whole.dv = std::exchange(c.dv, std::vector<std::uint16_t>(c.dv.size()));
  whole.dsink = std::exchange(c.dsink, std::vector<float>(c.dsink.size()));
  if (split_batch) {
    for (std::int64_t b = 0; b < c.B; ++b) run_dense_part(**kernel, c, b, 1, 0, c.Hkv);
  } else {
    run_dense_part(**kernel, c, 0, c.B, 0, c.Hkv / 2);
    run_dense_part(**kernel, c, 0, c.B, c.Hkv / 2, c.Hkv - c.Hkv / 2);
  }
  if (::testing::Test::HasFatalFailure()) return;
  auto nan_free = [](const std::vector<std::uint16_t>& x) {
    return std::none_of(x.begin(), x.end(),
                        [](std::uint16_t b) { return (b & 0x7F80) == 0x7F80 && (b & 0x7F); });
  };
  for (const auto* x : {&whole.o, &whole.dq, &whole.dk, &whole.dv}) {
    EXPECT_TRUE(nan_free(*x)) << "unwritten or NaN elements";
  }
  EXPECT_TRUE(whole.o == c.o) << "O differs from the calls that fit";
  EXPECT_TRUE(whole.dk == c.dk) << "dK differs from the calls that fit";
  EXPECT_TRUE(whole.dv == c.dv) << "dV differs from the calls that fit";
  double diff = 0, big = 0;
  for (std::size_t i = 0; i < c.dq.size(); ++i) {
    const double ref = bf16_value(c.dq[i]);
    diff = std::max(diff, std::fabs(bf16_value(whole.dq[i]) - ref));
    big = std::max(big, std::fabs(ref));
  }
  EXPECT_LE(diff, 0.01 * big) << "dQ: max |diff| " << diff << " of max |dQ| " << big;
  if (c.sinks) {  // a sum over every row and batch entry: held like dQ
    double sdiff = 0, sbig = 0;
    for (std::size_t h = 0; h < c.dsink.size(); ++h) {
      ASSERT_TRUE(std::isfinite(whole.dsink[h])) << "dSinks of head " << h << " unwritten";
      sdiff = std::max(sdiff, std::fabs(double{whole.dsink[h]} - c.dsink[h]));
      sbig = std::max(sbig, std::fabs(double{c.dsink[h]}));
    }
    EXPECT_GT(sbig, 0.0);
    EXPECT_LE(sdiff, 0.01 * sbig) << "dSinks: max |diff| " << sdiff << " of max " << sbig;
  }
}

TEST(Cudnn, DenseBatchPast2To31Elements) {
  ULYSSES_REQUIRE_GPUS(1);
  // O: 2 x 40000 x 256 x 128 = 2.6e9 elements, 1.3e9 per entry: two calls of one entry.
  check_big_dense({.B = 2, .S = 40000, .Hq = 256, .Hkv = 64}, true);
}

TEST(Cudnn, DenseHeadsPast2To31Elements) {
  ULYSSES_REQUIRE_GPUS(1);
  // O: 70000 x 256 x 128 = 2.3e9 elements: two calls of 32 KV heads, K, O, dO staged compact.
  check_big_dense({.B = 1, .S = 70000, .Hq = 256, .Hkv = 64}, false);
}

TEST(Cudnn, DenseSinksPast2To31Elements) {
  ULYSSES_REQUIRE_GPUS(1);
  // With sinks too the batch splits (cuDNN runs without them; dSinks come from one sink_grad over
  // the whole call): two calls of one entry, against two calls whose dSinks are added.
  check_big_dense({.B = 2, .S = 40000, .Hq = 256, .Hkv = 64, .sinks = true}, true);
}

// Backward calls that no split brings under 2^31 are refused when a training plan is made
// (check_support), not by the first backward: the shapes alone decide, so no memory is needed.
TEST(Cudnn, UnsplittableBackwardRefusedAtPlanTime) {
  ULYSSES_REQUIRE_GPUS(1);
  auto kernel = create_cudnn_attention(0);
  ASSERT_TRUE(kernel.is_ok()) << kernel.status().to_string();
  auto problem = [](std::int64_t B, std::int64_t S, int hq, int hkv, bool sinks, bool training) {
    LocalProblem p = LocalProblem::unsharded(
        {.num_heads_q = hq, .num_heads_kv = hkv, .head_dim = 128, .causal = true, .sinks = sinks},
        DType::kBFloat16, B, S);
    p.backward = training;
    return p;
  };
  // One KV head's O: 1.1M rows x 16 query heads x 128 = 2.25e9 elements.
  Status s = (*kernel)->check_support(problem(1, 1100000, 16, 1, false, true));
  EXPECT_EQ(s.code(), StatusCode::kUnsupported) << s.to_string();
  EXPECT_NE(s.message().find("one KV head of one batch entry"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("1100000 query rows"), std::string::npos) << s.message();
  // Inference never runs the backward: the same shape is fine.
  EXPECT_TRUE((*kernel)->check_support(problem(1, 1100000, 16, 1, false, false)).is_ok());
  // 512 entries x 40000 rows of one head (2.6e9) split by entry, with sinks or without.
  EXPECT_TRUE((*kernel)->check_support(problem(512, 40000, 1, 1, true, true)).is_ok());
  EXPECT_TRUE((*kernel)->check_support(problem(512, 40000, 1, 1, false, true)).is_ok());
  // The shapes the three tests above run in parts are accepted.
  EXPECT_TRUE((*kernel)->check_support(problem(2, 40000, 256, 64, true, true)).is_ok());
  EXPECT_TRUE((*kernel)->check_support(problem(1, 70000, 256, 64, false, true)).is_ok());
}

TEST(Cudnn, UnsupportedRequestsNameTheFeature) {
  ULYSSES_REQUIRE_GPUS(1);
  auto kernel = create_cudnn_attention(0);
  ASSERT_TRUE(kernel.is_ok());
  LocalProblem p = LocalProblem::unsharded({.num_heads_q = 2, .num_heads_kv = 2, .head_dim = 36},
                                           DType::kBFloat16, 1, 64);
  Status s = (*kernel)->check_support(p);
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_NE(s.message().find("head_dim"), std::string::npos) << s.message();
  p = LocalProblem::unsharded({.num_heads_q = 2, .num_heads_kv = 2, .head_dim = 64},
                              DType::kFloat32, 1, 64);
  s = (*kernel)->check_support(p);
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_NE(s.message().find("fp32"), std::string::npos) << s.message();
  EXPECT_EQ(create_cudnn_attention(99).status().code(), StatusCode::kInvalidArgument);
}

// Graphs are built once per shape: a second identical call builds nothing and takes no build
// time, a new shape builds its own, and the statistics say so (what ulysses-bench's "first step"
// line reports).
TEST(Cudnn, GraphsAreBuiltOncePerShape) {
  ULYSSES_REQUIRE_GPUS(1);
  auto kernel = create_cudnn_attention(0);
  ASSERT_TRUE(kernel.is_ok());
  auto stats = [&] {
    auto st = cudnn_graph_stats(**kernel);
    EXPECT_TRUE(st.is_ok()) << st.status().to_string();
    return st.is_ok() ? *st : CudnnGraphStats{};
  };
  EXPECT_EQ(stats().graphs, 0);
  EXPECT_EQ(stats().build_seconds, 0);
  const AttentionConfig att{.num_heads_q = 4, .num_heads_kv = 2, .head_dim = 64, .causal = true};
  std::mt19937_64 rng(7);
  auto call = [&](std::int64_t S) {
    const LocalProblem p = LocalProblem::unsharded(att, DType::kBFloat16, 1, S);
    HostTensor q(DType::kBFloat16, {1, S, 4, 64}), k(DType::kBFloat16, {1, S, 2, 64});
    for (HostTensor* t : {&q, &k}) testing::fill_uniform(*t, rng);
    HostTensor o = q, lse(DType::kFloat32, {1, 4, S});
    DeviceTensor dq = DeviceTensor::of(q), dk = DeviceTensor::of(k), dv = DeviceTensor::of(k),
                 d_o = DeviceTensor::of(o), dout = DeviceTensor::of(o),
                 dlse = DeviceTensor::of(lse), gq = DeviceTensor::of(q), gk = DeviceTensor::of(k),
                 gv = DeviceTensor::of(k);
    testing::DeviceBytes ws((*kernel)->workspace_bytes(p), 0);
    LocalForwardArgs f{.q = dq.view,
                       .k = dk.view,
                       .v = dv.view,
                       .o = dout.view,
                       .lse = dlse.view,
                       .workspace = ws.ptr};
    EXPECT_TRUE((*kernel)->forward(p, f, nullptr).is_ok());
    LocalBackwardArgs b{.q = dq.view,
                        .k = dk.view,
                        .v = dv.view,
                        .o = dout.view,
                        .lse = dlse.view,
                        .d_o = d_o.view,
                        .dq = gq.view,
                        .dk = gk.view,
                        .dv = gv.view,
                        .workspace = ws.ptr};
    EXPECT_TRUE((*kernel)->backward(p, b, nullptr).is_ok());
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  };
  call(256);
  const CudnnGraphStats first = stats();
  EXPECT_GE(first.graphs, 2);  // a forward and a backward graph at least
  EXPECT_GT(first.build_seconds, 0);
  EXPECT_EQ(first.failed, 0);
  call(256);
  EXPECT_EQ(stats().graphs, first.graphs);
  EXPECT_EQ(stats().build_seconds, first.build_seconds);
  call(512);
  EXPECT_GT(stats().graphs, first.graphs);
  EXPECT_GT(stats().build_seconds, first.build_seconds);
}

}  // namespace
}  // namespace ulysses
