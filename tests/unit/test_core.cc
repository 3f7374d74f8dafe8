// Status/Result, dtype conversions, tensor views, configs and the dp x cp x tp mesh.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>

#include "common/dtype_convert.h"
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
