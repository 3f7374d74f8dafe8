// Host-side checks of the split-KV kernel (split_kv.h), built with and without CUDA.
#include <cstdint>
#include <string>

#include "common/check.h"
#include "kernels/split_kv.h"

namespace ulysses::kernels {

std::string split_kv_unsupported(DType dtype, int head_dim, int head_dim_v) {
  if (dtype != DType::kBFloat16 && dtype != DType::kFloat16) {
    return detail::str_cat("dtype ", dtype_name(dtype), " (it runs bf16 and fp16)");
  }
  for (const auto& [name, d] : {std::pair{"head_dim", head_dim}, {"head_dim_v", head_dim_v}}) {
    if (d < 16 || d > 256 || d % 16 != 0) {
      return detail::str_cat(name, " ", d, " (it runs multiples of 16 up to 256)");
    }
  }
  return {};
}

bool split_kv_aligned(const void* base, DType dtype, std::int64_t row_stride,
                      std::int64_t head_stride) {
  const auto bytes = static_cast<std::int64_t>(dtype_size(dtype));
  return reinterpret_cast<std::uintptr_t>(base) % 16 == 0 && (row_stride * bytes) % 16 == 0 &&
         (head_stride * bytes) % 16 == 0;
}

}  // namespace ulysses::kernels
