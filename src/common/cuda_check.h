// ulysses: one check macro per CUDA dependency. Each returns a Status from the calling function
// with the failing expression, file:line and the dependency's own message. CUDA translation units
// only.
#pragma once

#include <cuda_runtime.h>

#include "common/check.h"

/// cudaError_t -> Status (kOutOfMemory for allocation failures, kInternal otherwise).
#define ULYSSES_CUDA_CHECK(expr)                                                               \
  do {                                                                                         \
    const cudaError_t ulysses_err_ = (expr);                                                   \
    if (ulysses_err_ != cudaSuccess) {                                                         \
      return ::ulysses::Status(                                                                \
          ulysses_err_ == cudaErrorMemoryAllocation ? ::ulysses::StatusCode::kOutOfMemory      \
                                                    : ::ulysses::StatusCode::kInternal,        \
          ::ulysses::detail::str_cat("CUDA error ", cudaGetErrorName(ulysses_err_), " (",      \
                                     cudaGetErrorString(ulysses_err_), ") in ", #expr, " at ", \
                                     __FILE__, ":", __LINE__));                                \
    }                                                                                          \
  } while (0)

/// Checks the launch of the kernel just issued.
#define ULYSSES_CUDA_CHECK_LAUNCH() ULYSSES_CUDA_CHECK(cudaGetLastError())
