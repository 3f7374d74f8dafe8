// Built instead of merge_cuda.cu when ulysses is built without CUDA: device tensors are refused.
#include "common/check.h"
#include "kernels/merge.h"

namespace ulysses::kernels::cuda {
namespace {
Status no_cuda() {
  return unsupported("ulysses: device tensors need a build with CUDA (got a host-only build)");
}
}  // namespace

Status packed_chunk_tables(const std::int32_t*, int, int, int, std::int32_t*, Stream) {
  return no_cuda();
}
Status packed_pair_tables(const std::int32_t*, int, int, int, std::int64_t, std::int64_t, PairPart,
                          std::int32_t*, Stream) {
  return no_cuda();
}
Status reset_partial(const TensorView&, const TensorView&, Stream) { return no_cuda(); }
Status merge_partial(const TensorView&, const TensorView&, const TensorView&, const TensorView&,
                     Stream) {
  return no_cuda();
}
Status finalize_partial(const TensorView&, const TensorView&, const TensorView&, int,
                        const TensorView&, const TensorView&, Stream) {
  return no_cuda();
}
Status merge_stacked(const TensorView&, const TensorView&, int, std::int64_t, std::int64_t,
                     const TensorView&, int, const TensorView&, const TensorView&, Stream) {
  return no_cuda();
}
Status write_table(std::span<const std::int32_t>, std::int32_t*, Stream) { return no_cuda(); }
Status read_back(const void*, void*, std::size_t, Stream) { return no_cuda(); }
Status accumulate(const TensorView&, const TensorView&, Stream) { return no_cuda(); }
Status convert(const TensorView&, const TensorView&, Stream) { return no_cuda(); }
Status zero(const TensorView&, Stream) { return no_cuda(); }
Status sink_grad(const TensorView&, const TensorView&, const TensorView&, const TensorView&, int,
                 const TensorView&, Stream) {
  return no_cuda();
}

}  // namespace ulysses::kernels::cuda
