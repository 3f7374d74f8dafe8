// ulysses: a run of rows of an activation view, for the plans and the kernel backends alike.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ulysses/types.h"

namespace ulysses::detail {

/// Rows [row0, row0 + rows) of dimension 1 of a [B, S, H, D] view (its strides kept).
inline TensorView sequence_rows(TensorView t, std::int64_t row0, std::int64_t rows) {
  t.data = static_cast<char*>(t.data) +
           static_cast<std::size_t>(row0 * t.stride(1)) * dtype_size(t.dtype);
  t.shape[1] = rows;
  return t;
}

}  // namespace ulysses::detail
