// ulysses: a run of rows of an activation view, for the plans and the kernel backends alike.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "ulysses/attention.h"
#include "ulysses/types.h"

namespace ulysses::detail {

/// Rows [row0, row0 + rows) of dimension 1 of a [B, S, H, D] view (its strides kept).
inline TensorView sequence_rows(TensorView t, std::int64_t row0, std::int64_t rows) {
  t.data = static_cast<char*>(t.data) +
           static_cast<std::size_t>(row0 * t.stride(1)) * dtype_size(t.dtype);
  t.shape[1] = rows;
  return t;
}

/// Rows [begin, end) of one side of a call.
struct RowSpan {
  std::int64_t begin = 0, end = 0;
  std::int64_t rows() const { return end - begin; }
};

/// The rows of one side (keys: kv_side) that the sequences of `r` with both query and key rows
/// span (a kernel is given none of either for the others); empty when there are none.
inline RowSpan varlen_span(const VarlenRows& r, bool kv_side) {
  RowSpan out{std::numeric_limits<std::int64_t>::max(), 0};
  for (std::size_t s = 0; s < r.q_begin.size(); ++s) {
    if (r.q_len[s] == 0 || r.kv_len[s] == 0) continue;
    const std::int64_t b = kv_side ? r.kv_begin[s] : r.q_begin[s];
    out.begin = std::min(out.begin, b);
    out.end = std::max<std::int64_t>(out.end, b + (kv_side ? r.kv_len[s] : r.q_len[s]));
  }
  return out.end > out.begin ? out : RowSpan{};
}

}  // namespace ulysses::detail
