// Built instead of layout_cuda.cu when ulysses is built without CUDA: device tensors are refused.
#include "common/check.h"
#include "kernels/layout.h"

namespace ulysses::kernels::cuda {
namespace {
Status no_cuda() {
  return unsupported("ulysses: device tensors need a build with CUDA (got a host-only build)");
}
}  // namespace

Status pack_heads(const TensorView&, std::span<const int>, int, const MessageLayout&, int, Stream) {
  return no_cuda();
}
Status unpack_heads(const MessageLayout&, int, std::span<const int>, int, const TensorView&,
                    Stream) {
  return no_cuda();
}
Status unpack_sum_replicas(const MessageLayout&, int, std::span<const int>, const TensorView&,
                           Stream) {
  return no_cuda();
}
Status unpack_lse(const MessageLayout&, std::span<const int>, const TensorView&, Stream) {
  return no_cuda();
}
Status move_heads(bool, std::span<const HeadMove>, Stream) { return no_cuda(); }

Status pack_heads_fp8(const TensorView&, std::span<const int>, int, const Fp8MessageLayout&, int,
                      Stream) {
  return no_cuda();
}
Status dequantize_fp8(const Fp8MessageLayout&, const MessageLayout&, Stream) { return no_cuda(); }

}  // namespace ulysses::kernels::cuda
