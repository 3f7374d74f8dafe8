// Built instead of split_kv_cuda.cu when ulysses is built without CUDA.
#include "common/check.h"
#include "kernels/split_kv.h"

namespace ulysses::kernels {

std::int64_t split_kv_auto_keys(int) { return split_kv_auto_keys_for(0); }

std::string split_kv_device_unsupported(int, int, int) {
  return "device tensors need a build with CUDA (got a host-only build)";
}

Status cuda::split_kv_attention(const SplitKvArgs&, Stream) {
  return unsupported("ulysses: device tensors need a build with CUDA (got a host-only build)");
}

Status cuda::decode_slot_table(const DecodeSlotTableArgs&, Stream) {
  return unsupported("ulysses: device tensors need a build with CUDA (got a host-only build)");
}

}  // namespace ulysses::kernels
