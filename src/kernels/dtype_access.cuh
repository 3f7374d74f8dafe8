// ulysses: one element of a view whose dtype is known only at run time (fp16, bf16, or fp32), read
// as fp32 and written from fp32 with one rounding. For kernels off the bandwidth-bound paths
// (merges, statistics, small calls); the element-wise kernels specialise by dtype instead
// (elementwise.h).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "ulysses/types.h"

namespace ulysses::kernels::cuda {

/// p[i] as fp32; dtype is a DType value.
__device__ inline float load(const void* p, int dtype, std::int64_t i) {
  switch (static_cast<DType>(dtype)) {
    case DType::kFloat16:
      return __half2float(static_cast<const __half*>(p)[i]);
    case DType::kBFloat16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default:
      return static_cast<const float*>(p)[i];
  }
}

/// p[i] = v, rounded to nearest even in dtype.
__device__ inline void store(void* p, int dtype, std::int64_t i, float v) {
  switch (static_cast<DType>(dtype)) {
    case DType::kFloat16:
      static_cast<__half*>(p)[i] = __float2half_rn(v);
      break;
    case DType::kBFloat16:
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
      break;
    default:
      static_cast<float*>(p)[i] = v;
  }
}

}  // namespace ulysses::kernels::cuda
