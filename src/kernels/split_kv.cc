// Host-side checks of the split-KV kernel (split_kv.h) and its dispatch to the host or CUDA
// implementation, built with and without CUDA.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/check.h"
#include "kernels/split_kv.h"
#include "kernels/split_kv_layout.h"

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

std::string split_kv_shared_memory_unsupported(int head_dim, int head_dim_v, int cc_major,
                                               int optin_bytes, int device) {
  namespace L = split_kv_layout;
  // A launch takes the layout of tensor copies from Hopper on, or of row copies where those cannot
  // run, with 16 or 8 query rows per CTA, paged or not (split_kv_cuda.cu): the device must have
  // room for each.
  const int nk = L::k_blocks(head_dim), nv = L::v_blocks(head_dim_v);
  std::size_t bytes = 0;
  for (const int rows : {L::kRows, 8}) {
    for (const bool tensor : {false, true}) {
      for (const bool paged : {false, true}) {
        if (tensor && cc_major < 9) continue;
        const int budget = L::ring_bytes(cc_major, rows, tensor, paged);
        bytes = std::max(bytes, L::shared_bytes(nk, nv, budget, tensor));
      }
    }
  }
  if (bytes <= static_cast<std::size_t>(std::max(optin_bytes, 0))) return {};
  return detail::str_cat("it needs ", bytes, " bytes of shared memory per block for head_dim ",
                         head_dim, " / head_dim_v ", head_dim_v, "; device ", device,
                         " (compute capability ", cc_major, ".x) allows ", optin_bytes);
}

Status split_kv_attention(const SplitKvArgs& args, Device device, Stream stream) {
  if (device.is_host()) return host::split_kv_attention(args);
  return cuda::split_kv_attention(args, stream);
}

Status decode_slot_table(const DecodeSlotTableArgs& args, Device device, Stream stream) {
  if (device.is_host()) return host::decode_slot_table(args);
  return cuda::decode_slot_table(args, stream);
}

bool split_kv_aligned(const void* base, DType dtype, std::int64_t row_stride,
                      std::int64_t head_stride) {
  const auto bytes = static_cast<std::int64_t>(dtype_size(dtype));
  return reinterpret_cast<std::uintptr_t>(base) % 16 == 0 && (row_stride * bytes) % 16 == 0 &&
         (head_stride * bytes) % 16 == 0;
}

}  // namespace ulysses::kernels
