// Without CUDA: device streams are refused.
#include "common/check.h"
#include "kernels/streams.h"

namespace ulysses::kernels::cuda {
Result<std::unique_ptr<StreamSet>> create_stream_set(int, int, int) {
  return unsupported("ulysses: device streams need a build with CUDA (got a host-only build)");
}
}  // namespace ulysses::kernels::cuda
