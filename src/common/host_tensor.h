// ulysses: an owning, contiguous host tensor for tests and the benchmark's CPU path (not public
// API).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <vector>

#include "common/dtype_convert.h"
#include "ulysses/types.h"

namespace ulysses::detail {

/// A host tensor that owns its (contiguous) storage.
struct HostTensor {
  std::vector<unsigned char> storage;
  TensorView view;

  HostTensor() = default;
  HostTensor(DType dtype, std::initializer_list<std::int64_t> shape) {
    std::int64_t n = 1;
    for (auto s : shape) n *= s;
    storage.assign(static_cast<std::size_t>(n) * dtype_size(dtype), 0);
    view = TensorView::contiguous(storage.data(), dtype, shape);
  }
  HostTensor(const HostTensor& o) : storage(o.storage), view(o.view) { view.data = storage.data(); }
  HostTensor& operator=(const HostTensor& o) {
    storage = o.storage;
    view = o.view;
    view.data = storage.data();
    return *this;
  }
  std::int64_t numel() const { return view.numel(); }
  double at(std::int64_t i) const { return detail::load_as_double(view.data, view.dtype, i); }
  void set(std::int64_t i, double v) { detail::store_from_double(view.data, view.dtype, i, v); }
};

}  // namespace ulysses::detail
