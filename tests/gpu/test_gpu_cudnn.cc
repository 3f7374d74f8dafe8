// The cuDNN backend against the FP64 reference, by STYLE.md's 2x rule: max|cudnn - ref| <=
// 2 max|plain - ref| + floor, where plain is the reference rounded to the I/O dtype (the best a
// kernel in that dtype can do) and floor is 2 ulps of the dtype at the tensor's largest magnitude
// (cuDNN rounds P to the I/O dtype before P.V, as every flash-attention kernel does). Outputs are
// poisoned.
#include <gtest/gtest.h>

#include <cmath>

#include "gpu/gpu_util.h"

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
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

double ulp_rel(DType t) {
  return t == DType::kFloat16 ? 0x1p-10 : t == DType::kBFloat16 ? 0x1p-7 : 0x1p-23;
}

struct Host {
  HostTensor q, k, v, d_o, sinks, o, lse, dq, dk, dv, dsinks;
};

Host make(const Case& c, DType dt) {
  Host h;
  h.q = HostTensor(dt, {c.B, c.S, c.Hq, c.D});
  h.k = HostTensor(dt, {c.B, c.S, c.Hkv, c.D});
  h.v = h.k;
  h.d_o = h.q;
  h.o = h.q;
  h.dq = h.q;
  h.dk = h.k;
  h.dv = h.k;
  h.lse = HostTensor(DType::kFloat32, {c.B, c.Hq, c.S});
  h.sinks = HostTensor(DType::kFloat32, {c.Hq});
  h.dsinks = h.sinks;
  return h;
}

void run_reference(const Case& c, Host& h, DType dt) {
  const LocalProblem p = LocalProblem::unsharded({.num_heads_q = c.Hq,
                                                  .num_heads_kv = c.Hkv,
                                                  .head_dim = c.D,
                                                  .causal = c.causal,
                                                  .window_left = c.wl,
                                                  .window_right = c.wr,
                                                  .sinks = c.sinks},
                                                 dt, c.B, c.S, !c.cu.empty());
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

  auto kernel = create_cudnn_attention(0);
  ASSERT_TRUE(kernel.is_ok()) << kernel.status().to_string();
  const LocalProblem p = LocalProblem::unsharded({.num_heads_q = c.Hq,
                                                  .num_heads_kv = c.Hkv,
                                                  .head_dim = c.D,
                                                  .causal = c.causal,
                                                  .window_left = c.wl,
                                                  .window_right = c.wr,
                                                  .sinks = c.sinks},
                                                 c.dtype, c.B, c.S, !c.cu.empty());
  ASSERT_TRUE((*kernel)->check_support(p).is_ok()) << (*kernel)->check_support(p).to_string();
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
  const bool bwd_unsupported = c.sinks && !c.cu.empty() && cudnn_runtime_version() < 92600;
  if (bwd_unsupported) {
    EXPECT_EQ(sb.code(), StatusCode::kUnsupported) << sb.to_string();
    EXPECT_NE(sb.message().find("9.26"), std::string::npos) << sb.message();
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
  // LSE is fp32 from fp32 accumulation of dtype products: held to a few dtype ulps of its scale.
  check("LSE", got_lse, plain.lse, truth.lse, 0.05);
  if (bwd_unsupported) return;
  check("dQ", dq.download(out.dq), plain.dq, truth.dq, 4);
  check("dK", dk.download(out.dk), plain.dk, truth.dk, 4);
  check("dV", dv.download(out.dv), plain.dv, truth.dv, 4);
  if (c.sinks) check("dSinks", dsinks.download(out.dsinks), plain.dsinks, truth.dsinks, 4);
}

std::vector<Case> cases() {
  const auto bf16 = DType::kBFloat16, fp16 = DType::kFloat16;
  return {
      {"bf16_d128_mha_causal", 2, 256, 4, 4, 128, bf16, true},
      {"fp16_d64_gqa_full", 1, 200, 4, 2, 64, fp16},
      {"bf16_d128_gqa_causal_window", 1, 320, 4, 2, 128, bf16, true, 37},
      {"bf16_d64_mqa_window_both", 1, 256, 4, 1, 64, bf16, false, 20, 10},
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
      {"bf16_d128_varlen_sinks", 1, 128, 2, 2, 128, bf16, true, -1, -1, true, {0, 40, 100}},
  };
}

INSTANTIATE_TEST_SUITE_P(Features, CudnnVsReference, ::testing::ValuesIn(cases()),
                         [](const auto& param_info) { return param_info.param.name; });

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

}  // namespace
}  // namespace ulysses
