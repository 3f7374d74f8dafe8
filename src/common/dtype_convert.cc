#include "common/dtype_convert.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

namespace ulysses::detail {
namespace {

// A binary floating-point format with `exp_bits` exponent and `man_bits` explicit mantissa bits.
struct SmallFormat {
  int exp_bits;
  int man_bits;
  int bias;
  bool has_inf;       // IEEE-like: all-ones exponent is inf/NaN (fp16, bf16, e5m2)
  double max_finite;  // largest finite magnitude
  std::uint32_t nan;  // canonical NaN code (without sign)
};

constexpr SmallFormat kBf16{8, 7, 127, true, 0x1.FEp127, 0x7FC0};
constexpr SmallFormat kFp16{5, 10, 15, true, 65504.0, 0x7E00};
constexpr SmallFormat kE4M3{4, 3, 7, false, 448.0, 0x7F};
constexpr SmallFormat kE5M2{5, 2, 15, true, 57344.0, 0x7E};

// Rounds |value| to the format's grid (nearest, ties to even) and returns the code. fp8 saturates.
std::uint32_t encode(double value, const SmallFormat& f) {
  const std::uint32_t sign = std::signbit(value) ? (1u << (f.exp_bits + f.man_bits)) : 0u;
  if (std::isnan(value)) return sign | f.nan;
  const double a = std::fabs(value);
  const std::uint32_t inf_code = ((1u << f.exp_bits) - 1u) << f.man_bits;
  const bool saturate = f.exp_bits + f.man_bits == 7;  // the fp8 formats
  const std::uint32_t max_code = f.has_inf ? inf_code - 1u : (inf_code | ((1u << f.man_bits) - 2u));
  if (std::isinf(a)) return sign | (saturate ? max_code : inf_code);
  const int min_exp = 1 - f.bias;  // exponent of the smallest normal
  int e = 0;
  std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  e -= 1;             // a in [2^e, 2^(e+1))
  if (a == 0.0) return sign;
  if (e < min_exp) e = min_exp;  // subnormal range uses the smallest normal's quantum
  const double quantum = std::ldexp(1.0, e - f.man_bits);
  double m = std::nearbyint(a / quantum);  // exact division by a power of two; ties to even
  const double implicit = std::ldexp(1.0, f.man_bits);
  if (m >= 2 * implicit) {  // rounded up into the next binade
    m /= 2;
    e += 1;
  }
  const double rounded = m * std::ldexp(1.0, e - f.man_bits);
  if (rounded > f.max_finite) return sign | (saturate ? max_code : inf_code);
  std::uint32_t code;
  if (m < implicit) {  // subnormal (only possible at e == min_exp)
    code = static_cast<std::uint32_t>(m);
  } else {
    code = (static_cast<std::uint32_t>(e + f.bias) << f.man_bits) |
           static_cast<std::uint32_t>(m - implicit);
  }
  return sign | code;
}

double decode(std::uint32_t code, const SmallFormat& f) {
  const std::uint32_t sign_bit = 1u << (f.exp_bits + f.man_bits);
  const double sign = (code & sign_bit) ? -1.0 : 1.0;
  code &= sign_bit - 1u;
  const std::uint32_t exp_field = code >> f.man_bits;
  const std::uint32_t man_field = code & ((1u << f.man_bits) - 1u);
  const std::uint32_t exp_max = (1u << f.exp_bits) - 1u;
  if (f.has_inf && exp_field == exp_max) {
    return man_field == 0 ? sign * std::numeric_limits<double>::infinity()
                          : std::numeric_limits<double>::quiet_NaN();
  }
  if (!f.has_inf && exp_field == exp_max && man_field == (1u << f.man_bits) - 1u) {
    return std::numeric_limits<double>::quiet_NaN();  // e4m3fn: S.1111.111
  }
  if (exp_field == 0) {
    return sign * std::ldexp(static_cast<double>(man_field), 1 - f.bias - f.man_bits);
  }
  return sign * std::ldexp(static_cast<double>(man_field | (1u << f.man_bits)),
                           static_cast<int>(exp_field) - f.bias - f.man_bits);
}

}  // namespace

std::uint16_t double_to_bf16_bits(double v) { return static_cast<std::uint16_t>(encode(v, kBf16)); }
std::uint16_t double_to_fp16_bits(double v) { return static_cast<std::uint16_t>(encode(v, kFp16)); }
std::uint8_t double_to_fp8e4m3_bits(double v) {
  return static_cast<std::uint8_t>(encode(v, kE4M3));
}
std::uint8_t double_to_fp8e5m2_bits(double v) {
  return static_cast<std::uint8_t>(encode(v, kE5M2));
}
double bf16_bits_to_double(std::uint16_t b) { return decode(b, kBf16); }
double fp16_bits_to_double(std::uint16_t b) { return decode(b, kFp16); }
double fp8e4m3_bits_to_double(std::uint8_t b) { return decode(b, kE4M3); }
double fp8e5m2_bits_to_double(std::uint8_t b) { return decode(b, kE5M2); }

double load_as_double(const void* base, DType dtype, std::int64_t i) {
  switch (dtype) {
    case DType::kFloat64:
      return static_cast<const double*>(base)[i];
    case DType::kFloat32:
      return static_cast<const float*>(base)[i];
    case DType::kFloat16:
      return fp16_bits_to_double(static_cast<const std::uint16_t*>(base)[i]);
    case DType::kBFloat16:
      return bf16_bits_to_double(static_cast<const std::uint16_t*>(base)[i]);
    case DType::kFloat8E4M3:
      return fp8e4m3_bits_to_double(static_cast<const std::uint8_t*>(base)[i]);
    case DType::kFloat8E5M2:
      return fp8e5m2_bits_to_double(static_cast<const std::uint8_t*>(base)[i]);
  }
  return std::numeric_limits<double>::quiet_NaN();
}

void store_from_double(void* base, DType dtype, std::int64_t i, double v) {
  switch (dtype) {
    case DType::kFloat64:
      static_cast<double*>(base)[i] = v;
      return;
    case DType::kFloat32:
      static_cast<float*>(base)[i] = static_cast<float>(v);
      return;
    case DType::kFloat16:
      static_cast<std::uint16_t*>(base)[i] = double_to_fp16_bits(v);
      return;
    case DType::kBFloat16:
      static_cast<std::uint16_t*>(base)[i] = double_to_bf16_bits(v);
      return;
    case DType::kFloat8E4M3:
      static_cast<std::uint8_t*>(base)[i] = double_to_fp8e4m3_bits(v);
      return;
    case DType::kFloat8E5M2:
      static_cast<std::uint8_t*>(base)[i] = double_to_fp8e5m2_bits(v);
      return;
  }
}

double round_to_dtype(double v, DType dtype) {
  switch (dtype) {
    case DType::kFloat64:
      return v;
    case DType::kFloat32:
      return static_cast<float>(v);
    case DType::kFloat16:
      return fp16_bits_to_double(double_to_fp16_bits(v));
    case DType::kBFloat16:
      return bf16_bits_to_double(double_to_bf16_bits(v));
    case DType::kFloat8E4M3:
      return fp8e4m3_bits_to_double(double_to_fp8e4m3_bits(v));
    case DType::kFloat8E5M2:
      return fp8e5m2_bits_to_double(double_to_fp8e5m2_bits(v));
  }
  return v;
}

}  // namespace ulysses::detail
