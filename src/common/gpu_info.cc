// Device queries for builds with CUDA.
#include <cuda_runtime.h>
#include <cudnn.h>

#include "ulysses/gpu.h"

namespace ulysses {

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver / no device: not an error for this query
    return 0;
  }
  return n;
}

bool built_with_cuda() { return true; }

int cudnn_runtime_version() { return static_cast<int>(cudnnGetVersion()); }

}  // namespace ulysses
