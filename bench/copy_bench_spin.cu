// ulysses-copy-bench's device side: a kernel that holds every SM for a while, so that a copy
// issued beside it shows whether it needs SMs (it then waits for the kernel) or runs on a copy
// engine (it finishes first).
#include <cuda_runtime.h>

#include "bench/copy_bench_spin.h"

namespace ulysses::bench {
namespace {

__global__ void spin_kernel(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}

}  // namespace

cudaError_t launch_spin(int device, double ms, cudaStream_t stream) {
  cudaDeviceProp prop{};
  if (cudaError_t e = cudaGetDeviceProperties(&prop, device); e != cudaSuccess) return e;
  int khz = 0;
  if (cudaError_t e = cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, device);
      e != cudaSuccess) {
    return e;
  }
  // Every SM full: as many 256-thread blocks as it holds, each spinning for `ms` at the highest
  // clock (fewer real milliseconds where the clock runs lower: the kernel only has to outlast the
  // copy).
  const int threads = 256;
  const int blocks = prop.multiProcessorCount * (prop.maxThreadsPerMultiProcessor / threads);
  spin_kernel<<<blocks, threads, 0, stream>>>(static_cast<long long>(ms * khz));
  return cudaGetLastError();
}

}  // namespace ulysses::bench
