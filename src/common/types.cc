#include "ulysses/types.h"

#include <sstream>

#include "common/check.h"

namespace ulysses {

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kFloat64:
      return 8;
    case DType::kFloat32:
      return 4;
    case DType::kFloat16:
    case DType::kBFloat16:
      return 2;
    case DType::kFloat8E4M3:
    case DType::kFloat8E5M2:
      return 1;
  }
  return 0;
}

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat64:
      return "fp64";
    case DType::kFloat32:
      return "fp32";
    case DType::kFloat16:
      return "fp16";
    case DType::kBFloat16:
      return "bf16";
    case DType::kFloat8E4M3:
      return "fp8e4m3";
    case DType::kFloat8E5M2:
      return "fp8e5m2";
  }
  return "unknown";
}

Result<DType> parse_dtype(std::string_view name) {
  struct Alias {
    std::string_view name;
    DType dtype;
  };
  static constexpr Alias kAliases[] = {
      {"fp64", DType::kFloat64},       {"float64", DType::kFloat64},
      {"fp32", DType::kFloat32},       {"float32", DType::kFloat32},
      {"fp16", DType::kFloat16},       {"half", DType::kFloat16},
      {"float16", DType::kFloat16},    {"bf16", DType::kBFloat16},
      {"bfloat16", DType::kBFloat16},  {"fp8e4m3", DType::kFloat8E4M3},
      {"fp8e5m2", DType::kFloat8E5M2},
  };
  for (const Alias& a : kAliases) {
    if (a.name == name) return a.dtype;
  }
  return detail::arg_error("ulysses::parse_dtype", "dtype", "is not a known type", name,
                           "one of fp64, fp32, fp16, bf16, fp8e4m3, fp8e5m2");
}

std::string Device::to_string() const {
  return is_host() ? std::string("host") : detail::str_cat("cuda:", index);
}

std::string_view layout_name(Layout layout) {
  switch (layout) {
    case Layout::kBSHD:
      return "bshd";
    case Layout::kTHD:
      return "thd";
  }
  return "unknown";
}

namespace {
TensorView make_view(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                     Device device) {
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.ndim = static_cast<int>(shape.size());
  int i = 0;
  for (std::int64_t s : shape) t.shape[static_cast<std::size_t>(i++)] = s;
  return t;
}
}  // namespace

TensorView TensorView::contiguous(void* data, DType dtype,
                                  std::initializer_list<std::int64_t> shape, Device device) {
  TensorView t = make_view(data, dtype, shape, device);
  std::int64_t stride = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    t.strides[static_cast<std::size_t>(d)] = stride;
    stride *= t.shape[static_cast<std::size_t>(d)];
  }
  return t;
}

TensorView TensorView::strided(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                               std::initializer_list<std::int64_t> strides, Device device) {
  TensorView t = make_view(data, dtype, shape, device);
  int i = 0;
  for (std::int64_t s : strides) {
    if (i < kMaxDims) t.strides[static_cast<std::size_t>(i)] = s;
    ++i;
  }
  if (i != t.ndim) t.ndim = -1;  // rejected by every validator: shape and strides disagree
  return t;
}

std::int64_t TensorView::numel() const {
  if (ndim <= 0) return 0;
  std::int64_t n = 1;
  for (int d = 0; d < ndim; ++d) n *= shape[static_cast<std::size_t>(d)];
  return n;
}

bool TensorView::is_contiguous() const {
  std::int64_t expected = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    const auto du = static_cast<std::size_t>(d);
    if (shape[du] != 1 && strides[du] != expected) return false;
    expected *= shape[du];
  }
  return true;
}

std::string TensorView::to_string() const {
  std::ostringstream os;
  os << "[";
  for (int d = 0; d < ndim; ++d) os << (d ? ", " : "") << shape[static_cast<std::size_t>(d)];
  os << "] " << dtype_name(dtype) << " strides [";
  for (int d = 0; d < ndim; ++d) os << (d ? ", " : "") << strides[static_cast<std::size_t>(d)];
  os << "] on " << device.to_string();
  return os.str();
}

std::int64_t TensorView::offset(std::initializer_list<std::int64_t> index) const {
  std::int64_t off = 0;
  std::size_t d = 0;
  for (std::int64_t i : index) off += i * strides[d++];
  return off;
}

}  // namespace ulysses
