// ulysses: splitting a packed (ragged) kernel call into runs of whole sequences, each of whose
// tensors lies within a given number of elements of the run's first rows. cuDNN 9.19's packed
// backward returns wrong dQ and dK once a ragged offset passes 2^31 elements (see
// cudnn_attention.cc); called once per run, with every view starting at the run's first row, it
// never sees one. Host code: the CPU tests check the split.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "ulysses/status.h"

namespace ulysses::detail {

/// One side's tensors (queries: Q, O, dO, dQ; keys: K, V, dK, dV) as far as the split needs them:
/// the largest row stride, and the largest offset inside one row (the last element of row 0).
struct RaggedExtent {
  std::int64_t row_stride = 0;
  std::int64_t row_last = 0;
};

/// Sequences [first, last), given to one call whose query views start at row q_row and key views at
/// kv_row (the first rows of the run's sequences with both query and key rows; 0 when none has).
struct RaggedGroup {
  int first = 0, last = 0;
  std::int64_t q_row = 0, kv_row = 0;
};

/// Sequence i has query rows [q_begin[i], q_begin[i] + q_len[i]) and key rows [kv_begin[i],
/// kv_begin[i] + kv_len[i]); one without query or key rows is given to the kernel with neither and
/// bounds nothing. Returns the fewest runs, in order, covering every sequence, such that for each
/// run and side, (last row - first row) * row_stride + row_last < limit; one run when the whole
/// call fits. A sequence that does not fit alone: InvalidArgument naming it (the caller reports it
/// as its own error).
Result<std::vector<RaggedGroup>> ragged_groups(std::span<const std::int32_t> q_begin,
                                               std::span<const std::int32_t> q_len,
                                               std::span<const std::int32_t> kv_begin,
                                               std::span<const std::int32_t> kv_len, RaggedExtent q,
                                               RaggedExtent kv, std::int64_t limit);

}  // namespace ulysses::detail
