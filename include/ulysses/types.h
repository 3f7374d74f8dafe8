// ulysses: element types, devices, streams and non-owning tensor views.
//
// Host-only header: no CUDA, NCCL or cuDNN include.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "ulysses/status.h"

// A CUDA stream without including CUDA: cudaStream_t is `CUstream_st*`, so ulysses::Stream converts
// to and from it implicitly. On the host path the stream is ignored (pass nullptr).
struct CUstream_st;

namespace ulysses {

using Stream = CUstream_st*;

/// Element type of a tensor.
enum class DType : int {
  kFloat64 = 0,  // host reference and finite-difference checks
  kFloat32 = 1,
  kFloat16 = 2,
  kBFloat16 = 3,
  kFloat8E4M3 = 4,  // OCP e4m3fn: no infinities, max 448
  kFloat8E5M2 = 5,
};

/// Bytes per element.
std::size_t dtype_size(DType dtype);
/// Lower-case name: "fp64", "fp32", "fp16", "bf16", "fp8e4m3", "fp8e5m2".
std::string_view dtype_name(DType dtype);
/// Parses the names of dtype_name() (and "float32"/"bfloat16"/"half" aliases).
Result<DType> parse_dtype(std::string_view name);

/// Where a tensor's memory lives.
struct Device {
  enum class Kind : int { kHost = 0, kCuda = 1 };
  Kind kind = Kind::kHost;
  int index = 0;  // CUDA ordinal; 0 for the host

  static Device host() { return Device{}; }
  static Device cuda(int ordinal) { return Device{Kind::kCuda, ordinal}; }
  bool is_host() const { return kind == Kind::kHost; }
  bool operator==(const Device&) const = default;
  std::string to_string() const;  // "host" or "cuda:N"
};

/// Memory layout of the activations a rank passes in.
///  - kBSHD: [batch, seqlen_shard, heads, head_dim], fixed-length sequences.
///  - kTHD:  [tokens_shard, heads, head_dim], a packed batch of variable-length sequences described
///  by
///           cumulative sequence lengths (cu_seqlens) in global token positions.
enum class Layout : int { kBSHD = 0, kTHD = 1 };
std::string_view layout_name(Layout layout);

inline constexpr int kMaxDims = 4;

/// A non-owning, strided view of device or host memory.
///
/// Shape and strides are in elements (not bytes); strides may be any non-negative values that keep
/// distinct indices at distinct addresses. Nothing in ulysses assumes contiguity: every consumer
/// checks what it needs and says so in its error.
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kFloat32;
  Device device = Device::host();
  int ndim = 0;
  std::array<std::int64_t, kMaxDims> shape{};
  std::array<std::int64_t, kMaxDims> strides{};

  /// A view with row-major (contiguous) strides.
  static TensorView contiguous(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                               Device device = Device::host());
  /// A view with explicit strides (same length as shape).
  static TensorView strided(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                            std::initializer_list<std::int64_t> strides,
                            Device device = Device::host());

  bool empty_view() const { return data == nullptr && ndim == 0; }
  std::int64_t numel() const;
  std::int64_t size(int dim) const { return shape[static_cast<std::size_t>(dim)]; }
  std::int64_t stride(int dim) const { return strides[static_cast<std::size_t>(dim)]; }
  bool is_contiguous() const;
  /// "[2, 64, 8, 128] bf16 strides [65536, 1024, 128, 1] on host"
  std::string to_string() const;
  /// Element offset of a multi-index (no bounds check).
  std::int64_t offset(std::initializer_list<std::int64_t> index) const;
};

}  // namespace ulysses
