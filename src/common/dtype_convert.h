// ulysses: host conversions between FP64 and every DType, each rounded once (round to nearest
// even).
//
// fp8 formats saturate to their largest finite value (OCP "satfinite"), as CUDA's conversions with
// __NV_SATFINITE do; fp16 and bf16 overflow to infinity.
#pragma once

#include <cstdint>

#include "ulysses/types.h"

namespace ulysses::detail {

double load_as_double(const void* base, DType dtype, std::int64_t index);
void store_from_double(void* base, DType dtype, std::int64_t index, double value);

/// FP64 -> bits of a small float format (bf16, fp16, fp8), rounded once.
std::uint16_t double_to_bf16_bits(double value);
std::uint16_t double_to_fp16_bits(double value);
std::uint8_t double_to_fp8e4m3_bits(double value);
std::uint8_t double_to_fp8e5m2_bits(double value);
double bf16_bits_to_double(std::uint16_t bits);
double fp16_bits_to_double(std::uint16_t bits);
double fp8e4m3_bits_to_double(std::uint8_t bits);
double fp8e5m2_bits_to_double(std::uint8_t bits);

/// Rounds `value` to the nearest value representable in `dtype` (identity for fp64).
double round_to_dtype(double value, DType dtype);

}  // namespace ulysses::detail
