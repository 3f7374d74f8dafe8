// ulysses: splitting a kernel call into parts that cuDNN 9.19's backward addresses correctly. It
// reads some views with 32-bit offsets: past element 2^31 its dQ and dK come out wrong (packed
// batches: every ragged offset; dense calls: K, O and dO; see cudnn_attention.cc). A packed call
// runs as runs of whole sequences, each with its views starting at the run's first rows; a dense
// one as parts of batch entries x KV-head groups. Host code: the CPU tests check both splits.
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

/// The smallest power of two >= n (1 for n <= 1).
std::int64_t next_pow2(std::int64_t n);

/// A packed cuDNN graph's sequence dimension for sequences of at most `longest` rows: rounded up
/// to a power of two, at least 64 (buckets that bound how many graphs a stream of batches builds).
std::int64_t packed_rows(std::int64_t longest);

/// The rows a packed cuDNN graph of `count` sequences, the longest `longest` rows, spans: its
/// batch (count rounded up to a power of two) times packed_rows(longest).
std::int64_t packed_slots(std::int64_t count, std::int64_t longest);

/// Sequence i has query rows [q_begin[i], q_begin[i] + q_len[i]) and key rows [kv_begin[i],
/// kv_begin[i] + kv_len[i]); one without query or key rows is given to the kernel with neither and
/// bounds nothing. Returns the fewest runs, in order, covering every sequence, such that for each
/// run and side, (last row - first row) * row_stride + row_last < limit and, when max_slots > 0,
/// packed_slots(its sequences, their longest query or key rows) <= max_slots; one run when the
/// whole call fits. A sequence that does not fit alone: InvalidArgument naming it (the caller
/// reports it as its own error).
Result<std::vector<RaggedGroup>> ragged_groups(std::span<const std::int32_t> q_begin,
                                               std::span<const std::int32_t> q_len,
                                               std::span<const std::int32_t> kv_begin,
                                               std::span<const std::int32_t> kv_len, RaggedExtent q,
                                               RaggedExtent kv, std::int64_t limit,
                                               std::int64_t max_slots = 0);

/// Batch entries [b0, b0 + nb) and KV heads [kv0, kv0 + nkv) (with their query heads) of a dense
/// call.
struct DensePart {
  std::int64_t b0 = 0, nb = 0;
  std::int64_t kv0 = 0, nkv = 0;
};

/// A dense call of `batch` entries, `q_rows` query rows and `kv_rows` key rows per entry, hq query
/// and hkv KV heads (hq a multiple of hkv) of head_dim elements. Returns the whole call when its
/// views fit (`views_fit`); otherwise the fewest parts, balanced over the KV heads, in each of
/// which one batch entry's compact K, O and dO, and all of the part's entries together, hold at
/// most `limit` elements. InvalidArgument naming the shape when no part can: one KV head of one
/// entry is too large.
Result<std::vector<DensePart>> dense_parts(std::int64_t batch, std::int64_t q_rows,
                                           std::int64_t kv_rows, std::int64_t hq, std::int64_t hkv,
                                           std::int64_t head_dim, bool views_fit,
                                           std::int64_t limit);

}  // namespace ulysses::detail
