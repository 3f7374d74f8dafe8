// GPU test helpers: owning device buffers mirrored by host tensors, and the skip rule.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "common/test_util.h"
#include "ulysses/gpu.h"

namespace ulysses::testing {

#define ULYSSES_REQUIRE_GPUS(n)                                                       \
  do {                                                                                \
    const int found_ = ::ulysses::cuda_device_count();                                \
    if (found_ < (n)) GTEST_SKIP() << "needs " << (n) << " GPU(s), found " << found_; \
  } while (0)

#define ASSERT_CUDA(expr) ASSERT_EQ((expr), cudaSuccess) << #expr

/// Device memory with the same shape/strides as a host tensor (contiguous).
struct DeviceTensor {
  void* ptr = nullptr;
  std::size_t bytes = 0;
  TensorView view;
  int device = 0;

  DeviceTensor() = default;
  explicit DeviceTensor(const HostTensor& like, int dev = 0) : device(dev) {
    bytes = like.storage.size();
    cudaSetDevice(dev);
    EXPECT_EQ(cudaMalloc(&ptr, bytes ? bytes : 1), cudaSuccess);
    view = like.view;
    view.data = ptr;
    view.device = Device::cuda(dev);
  }
  DeviceTensor(const DeviceTensor&) = delete;
  DeviceTensor& operator=(const DeviceTensor&) = delete;
  DeviceTensor(DeviceTensor&& o) noexcept { *this = std::move(o); }
  DeviceTensor& operator=(DeviceTensor&& o) noexcept {
    std::swap(ptr, o.ptr);
    std::swap(bytes, o.bytes);
    std::swap(view, o.view);
    std::swap(device, o.device);
    return *this;
  }
  ~DeviceTensor() {
    if (ptr) {
      cudaSetDevice(device);
      cudaFree(ptr);
    }
  }
  void upload(const HostTensor& h) {
    cudaSetDevice(device);
    EXPECT_EQ(cudaMemcpy(ptr, h.storage.data(), bytes, cudaMemcpyHostToDevice), cudaSuccess);
  }
  HostTensor download(const HostTensor& like) const {
    HostTensor h = like;
    cudaSetDevice(device);
    EXPECT_EQ(cudaMemcpy(h.storage.data(), ptr, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
  /// Device copy of a host tensor.
  static DeviceTensor of(const HostTensor& h, int dev = 0) {
    DeviceTensor d(h, dev);
    d.upload(h);
    return d;
  }
};

/// Raw device bytes (workspace, saved).
struct DeviceBytes {
  void* ptr = nullptr;
  int device = 0;
  explicit DeviceBytes(std::size_t n, int dev = 0) : device(dev) {
    cudaSetDevice(dev);
    EXPECT_EQ(cudaMalloc(&ptr, n ? n : 1), cudaSuccess);
  }
  DeviceBytes(const DeviceBytes&) = delete;
  DeviceBytes& operator=(const DeviceBytes&) = delete;
  ~DeviceBytes() {
    cudaSetDevice(device);
    cudaFree(ptr);
  }
};

}  // namespace ulysses::testing
