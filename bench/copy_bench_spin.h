// ulysses-copy-bench: a kernel that holds every SM of `device` for about `ms` milliseconds.
#pragma once

#include <cuda_runtime.h>

namespace ulysses::bench {

cudaError_t launch_spin(int device, double ms, cudaStream_t stream);

}  // namespace ulysses::bench
