// ulysses-bench's GPU helpers shared by the training (gpu_bench.cc) and decode (decode_bench.cc)
// paths and ulysses-copy-bench: a CUDA call that exits with its error, the time between two
// events, and a host callback that holds a stream.
#pragma once

#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#define BENCH_CUDA(expr)                                                              \
  do {                                                                                \
    const cudaError_t e_ = (expr);                                                    \
    if (e_ != cudaSuccess) {                                                          \
      std::fprintf(stderr, "ulysses-bench: %s: %s\n", #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                   \
    }                                                                                 \
  } while (0)

namespace ulysses::bench {

/// GPU ms between two completed events of one device.
inline double ms_last(cudaEvent_t e0, cudaEvent_t e1) {
  float t = 0;
  BENCH_CUDA(cudaEventElapsedTime(&t, e0, e1));
  return t;
}

/// Enqueued with cudaLaunchHostFunc: the stream waits 50 ms so that work queued behind
/// it starts at once when it is released.
inline void CUDART_CB hold_stream(void*) {
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
}

}  // namespace ulysses::bench
