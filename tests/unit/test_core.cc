// Status/Result, dtype conversions, tensor views, configs and the dp x cp x tp mesh.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>

#include "common/dtype_convert.h"
#include "kernels/layout.h"
#include "ulysses/ulysses.h"

namespace ulysses {
namespace {

TEST(Status, CodesAndMessages) {
  EXPECT_TRUE(Status::ok().is_ok());
  Status s = invalid_argument("api: x bad");
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.to_string(), "INVALID_ARGUMENT: api: x bad");
  EXPECT_EQ(status_code_name(StatusCode::kConfigMismatch), "CONFIG_MISMATCH");
  EXPECT_EQ(status_code_name(StatusCode::kTimeout), "TIMEOUT");
  EXPECT_EQ(status_code_name(StatusCode::kOutOfMemory), "OUT_OF_MEMORY");
}

TEST(Status, ResultHoldsValueOrError) {
  Result<int> good(7);
  ASSERT_TRUE(good.is_ok());
  EXPECT_EQ(*good, 7);
  Result<int> bad(unsupported("nope"));
  EXPECT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kUnsupported);
  Result<int> misuse(Status::ok());  // an OK status without a value is a bug, not a value
  EXPECT_EQ(misuse.status().code(), StatusCode::kInternal);
}

TEST(DType, SizesNamesAndParsing) {
  EXPECT_EQ(dtype_size(DType::kBFloat16), 2u);
  EXPECT_EQ(dtype_size(DType::kFloat8E4M3), 1u);
  EXPECT_EQ(dtype_size(DType::kFloat64), 8u);
  for (DType d : {DType::kFloat64, DType::kFloat32, DType::kFloat16, DType::kBFloat16,
                  DType::kFloat8E4M3, DType::kFloat8E5M2}) {
    auto parsed = parse_dtype(dtype_name(d));
    ASSERT_TRUE(parsed.is_ok());
    EXPECT_EQ(*parsed, d);
  }
  auto bad = parse_dtype("int7");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("dtype"), std::string::npos);
}

TEST(DType, Bf16RoundsToNearestEven) {
  using detail::bf16_bits_to_double;
  using detail::double_to_bf16_bits;
  EXPECT_EQ(double_to_bf16_bits(1.0), 0x3F80);
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties to even (1.0).
  EXPECT_EQ(double_to_bf16_bits(1.0 + std::ldexp(1.0, -8)), 0x3F80);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): rounds up.
  EXPECT_EQ(double_to_bf16_bits(1.0 + 3 * std::ldexp(1.0, -8)), 0x3F82);
  // Slightly above the tie rounds up: rounded once from FP64, not through fp32.
  EXPECT_EQ(double_to_bf16_bits(1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40)), 0x3F81);
  EXPECT_EQ(double_to_bf16_bits(-2.0), 0xC000);
  EXPECT_TRUE(std::isinf(bf16_bits_to_double(double_to_bf16_bits(1e39))));
  EXPECT_TRUE(std::isnan(bf16_bits_to_double(double_to_bf16_bits(std::nan("")))));
  // Every bf16 value survives a round trip.
  for (std::uint32_t b = 0; b < 0x10000; b += 7) {
    const double v = bf16_bits_to_double(static_cast<std::uint16_t>(b));
    if (std::isnan(v)) continue;
    EXPECT_EQ(double_to_bf16_bits(v), b) << b;
  }
}

TEST(DType, Fp16AndFp8RoundTripAndSaturate) {
  using namespace detail;
  for (std::uint32_t b = 0; b < 0x10000; b += 3) {
    const double v = fp16_bits_to_double(static_cast<std::uint16_t>(b));
    if (std::isnan(v)) continue;
    EXPECT_EQ(double_to_fp16_bits(v), b) << b;
  }
  EXPECT_EQ(fp16_bits_to_double(double_to_fp16_bits(65504.0)), 65504.0);
  EXPECT_TRUE(std::isinf(fp16_bits_to_double(double_to_fp16_bits(70000.0))));
  EXPECT_EQ(fp16_bits_to_double(0x0001), std::ldexp(1.0, -24));  // smallest subnormal
  for (std::uint32_t b = 0; b < 0x100; ++b) {
    const double e4 = fp8e4m3_bits_to_double(static_cast<std::uint8_t>(b));
    if (!std::isnan(e4)) {
      EXPECT_EQ(double_to_fp8e4m3_bits(e4), b) << b;
    }
    const double e5 = fp8e5m2_bits_to_double(static_cast<std::uint8_t>(b));
    if (!std::isnan(e5) && !std::isinf(e5)) {
      EXPECT_EQ(double_to_fp8e5m2_bits(e5), b) << b;
    }
  }
  EXPECT_EQ(fp8e4m3_bits_to_double(double_to_fp8e4m3_bits(1000.0)), 448.0);  // satfinite
  EXPECT_EQ(fp8e4m3_bits_to_double(double_to_fp8e4m3_bits(-1000.0)), -448.0);
  EXPECT_EQ(fp8e5m2_bits_to_double(double_to_fp8e5m2_bits(1e6)), 57344.0);
  EXPECT_EQ(fp8e4m3_bits_to_double(0x01), std::ldexp(1.0, -9));
}

TEST(Fp8Rows, ExponentIsTheSmallestPowerOfTwoThatFits) {
  using kernels::fp8_row_exponent;
  EXPECT_EQ(fp8_row_exponent(448.0), 0);
  EXPECT_EQ(fp8_row_exponent(std::nextafter(448.0, 1e9)), 1);
  EXPECT_EQ(fp8_row_exponent(256.0), 0);
  EXPECT_EQ(fp8_row_exponent(224.0), -1);
  EXPECT_EQ(fp8_row_exponent(1.0), -8);      // 1 <= 448 / 256, not 448 / 512
  EXPECT_EQ(fp8_row_exponent(3.5), -7);      // exactly 448 * 2^-7
  EXPECT_EQ(fp8_row_exponent(1e-45), -127);  // clamped to E8M0's range
  EXPECT_EQ(fp8_row_exponent(0.0), 0);
  EXPECT_EQ(fp8_row_exponent(std::numeric_limits<double>::infinity()), 0);
  EXPECT_EQ(fp8_row_exponent(std::numeric_limits<double>::quiet_NaN()), 0);
  for (double amax : {1e-30, 0.013, 0.7, 5.0, 447.9, 1e5, 3e38}) {
    const int k = fp8_row_exponent(amax);
    EXPECT_LE(amax, std::ldexp(448.0, k)) << amax;
    EXPECT_GT(amax, std::ldexp(448.0, k - 1)) << amax;
  }
}

TEST(Fp8Rows, HostMessageLayoutAndRoundTrip) {
  // act [B=1, Sl=2, H=2, D=4] fp32 to 2 peers, one head each (peer p gets head 1 - p): rows
  // (s, b, c) of 4 codes per peer, then 2 exponent bytes, padded to 16 bytes.
  std::vector<float> act = {1.0f,  -2.0f, 0.5f, 0.25f,   // s0 h0: amax 2 -> k = -7
                            300.f, 0.0f,  1.0f, -7.0f,   // s0 h1: amax 300 -> k = 0
                            0.0f,  0.0f,  0.0f, 0.0f,    // s1 h0: zeros -> k = 0
                            1e-3f, 3e-3f, 0.1f, 900.f};  // s1 h1: amax 900 -> k = 2
  const TensorView view = TensorView::contiguous(act.data(), DType::kFloat32, {1, 2, 2, 4});
  const kernels::Fp8MessageLayout msg0{nullptr, 2, 2, 1, 1, 4};
  ASSERT_EQ(msg0.peer_bytes(), 16u);  // 2 rows * (4 + 1) = 10 bytes, padded
  std::vector<std::uint8_t> buf(2 * msg0.peer_bytes(), 0xAB);
  kernels::Fp8MessageLayout msg = msg0;
  msg.data = buf.data();
  const std::vector<int> head_begin = {1, 0};
  ASSERT_TRUE(kernels::pack_heads_fp8(view, head_begin, 1, msg, 0, nullptr).is_ok());
  // Peer 0 holds head 1 (k = 0, then k = 2); peer 1 head 0 (k = -7, then k = 0).
  EXPECT_EQ(buf[8], 127);
  EXPECT_EQ(buf[9], 129);
  EXPECT_EQ(buf[16 + 8], 120);
  EXPECT_EQ(buf[16 + 9], 127);
  EXPECT_EQ(buf[10], 0xAB) << "padding written";
  EXPECT_EQ(buf[0], detail::double_to_fp8e4m3_bits(300.0));
  EXPECT_EQ(buf[16], detail::double_to_fp8e4m3_bits(128.0));  // 1.0 * 2^7
  std::vector<float> back(16, std::numeric_limits<float>::quiet_NaN());
  ASSERT_TRUE(kernels::dequantize_fp8(msg, {back.data(), DType::kFloat32, 2, 2, 1, 1, 4},
                                      Device::host(), nullptr)
                  .is_ok());
  // back = [peer 0: s0, s1 of head 1][peer 1: s0, s1 of head 0]; each value within 2^-4
  // relative of the input, or below E4M3's reach under its row's scale.
  const int from[4] = {4, 12, 0, 8};  // act row of each received row
  for (int r = 0; r < 4; ++r) {
    for (int d = 0; d < 4; ++d) {
      const double x = act[static_cast<std::size_t>(from[r] + d)];
      const double y = back[static_cast<std::size_t>(r * 4 + d)];
      EXPECT_LE(std::fabs(y - x), std::fabs(x) / 16 + 1e-2) << r << "," << d;
    }
  }
  EXPECT_EQ(back[4 * 3], 0.0f);        // the zero row stays zero
  EXPECT_EQ(back[4 * 1 + 3], 896.0f);  // 900 -> 224 * 4
  EXPECT_EQ(back[4 * 1 + 0], 0.0f);    // 1e-3 / 4 is below E4M3's smallest subnormal
}

TEST(TensorView, ContiguousAndStrided) {
  float buf[2 * 3 * 4 * 5];
  TensorView t = TensorView::contiguous(buf, DType::kFloat32, {2, 3, 4, 5});
  EXPECT_EQ(t.numel(), 120);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.stride(0), 60);
  EXPECT_EQ(t.offset({1, 2, 3, 4}), 119);
  TensorView s = TensorView::strided(buf, DType::kFloat32, {2, 3}, {1, 2});
  EXPECT_FALSE(s.is_contiguous());
  EXPECT_EQ(s.ndim, 2);
  TensorView broken = TensorView::strided(buf, DType::kFloat32, {2, 3}, {1});
  EXPECT_EQ(broken.ndim, -1);  // shape and strides disagree: every validator rejects it
  EXPECT_NE(t.to_string().find("[2, 3, 4, 5] fp32"), std::string::npos);
}

TEST(AttentionConfig, DefaultsAndScale) {
  AttentionConfig c{.num_heads_q = 8, .num_heads_kv = 2, .head_dim = 64};
  EXPECT_TRUE(c.validate().is_ok());
  EXPECT_FLOAT_EQ(c.scale(), 0.125f);
  c.softmax_scale = 0.5f;
  EXPECT_FLOAT_EQ(c.scale(), 0.5f);
}

TEST(Mesh, AdjacentCpGroups) {
  auto mesh = Mesh::create({.dp = 2, .cp = 4, .tp = 2}, 16);
  ASSERT_TRUE(mesh.is_ok());
  EXPECT_EQ(mesh->group(MeshAxis::kCp, 5), (std::vector<int>{4, 5, 6, 7}));
  EXPECT_EQ(mesh->group(MeshAxis::kTp, 1), (std::vector<int>{1, 5}));
  EXPECT_EQ(mesh->group(MeshAxis::kDp, 1), (std::vector<int>{1, 9}));
  // coord <-> rank is a bijection, and every axis partitions the ranks into equal groups.
  for (MeshAxis axis : {MeshAxis::kDp, MeshAxis::kCp, MeshAxis::kTp}) {
    std::set<int> colors;
    for (int r = 0; r < 16; ++r) {
      EXPECT_EQ(mesh->rank(mesh->coord(r)), r);
      const auto g = mesh->group(axis, r);
      EXPECT_EQ(static_cast<int>(g.size()), mesh->degree(axis));
      EXPECT_NE(std::find(g.begin(), g.end(), r), g.end());
      for (int peer : g) EXPECT_EQ(mesh->group_color(axis, peer), mesh->group_color(axis, r));
      colors.insert(mesh->group_color(axis, r));
    }
    EXPECT_EQ(static_cast<int>(colors.size()), 16 / mesh->degree(axis));
  }
}

TEST(Mesh, RejectsBadShapes) {
  auto bad = Mesh::create({.dp = 2, .cp = 3, .tp = 1}, 8);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("world_size"), std::string::npos);
  EXPECT_NE(bad.status().message().find("got 8"), std::string::npos);
  auto zero = Mesh::create({.dp = 1, .cp = 0, .tp = 1}, 0);
  ASSERT_FALSE(zero.is_ok());
  EXPECT_NE(zero.status().message().find("cp"), std::string::npos);
}

}  // namespace
}  // namespace ulysses
