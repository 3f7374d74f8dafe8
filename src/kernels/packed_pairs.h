// ulysses: one packed sequence's rows in the kernel calls of a chunk pair under a sliding window
// (ring attention with packed batches). Host and device: the ring's host tables and the CUDA
// kernel that writes the same tables in device memory both call pair_rows().
//
// Chunk x of a sequence holds its positions [x c, (x + 1) c) (c: the sequence's chunk size). Query
// i of chunk qc sees key k of chunk kc when lo <= i - k + delta <= hi, delta = (qc - kc) c, the
// band of the plan's mask (causal: lo = 0; window_right w: lo = -w; window_left w: hi = w;
// unbounded sides +-large). For d = qc - kc != 0 one side of the band never cuts the pair:
// i - k + delta >= 1 when d > 0, <= -1 when d < 0, while lo <= 0 <= hi. The other side cuts it
// along one diagonal, whose offset delta differs from sequence to sequence (c does), which one
// kernel call cannot express. So the pair runs as two calls whose masks are the same for every
// sequence:
//   kFull: the pairs that see each other whole, without a mask (d > 0: the first queries, against
//          every key; d < 0: every query, against the first keys);
//   kEdge: the rest, as a masked call with diagonal offset hi (d > 0) or lo (d < 0): rows and keys
//          no query of it sees are left out, so the diagonal runs through the call's first row
//          and key, and every row of the call sees at least one key.
// Real tokens only: ql and kl count the chunks' tokens before the sequence's padding.
#pragma once

#include <cstdint>

#include "kernels/fast_div.h"  // ULYSSES_HOST_DEVICE

namespace ulysses::kernels {

/// Which of a chunk pair's two kernel calls (see the file comment).
enum class PairPart : std::int32_t { kFull = 0, kEdge = 1 };

/// One sequence's rows in one call: query rows [q_begin, q_begin + q_len) and key rows
/// [kv_begin, kv_begin + kv_len); both lengths 0, at the chunk's start (entries ascend), when the
/// call takes none of the sequence's pairs.
struct PairRows {
  std::int32_t q_begin = 0, q_len = 0, kv_begin = 0, kv_len = 0;
};

/// v clamped to [0, n].
ULYSSES_HOST_DEVICE std::int64_t clamp_rows(std::int64_t v, std::int64_t n) {
  return v < 0 ? 0 : (v > n ? n : v);
}

/// The rows of `part` for one sequence's piece of a pair of different chunks: ql query rows from
/// row q_start and kl key rows from row k_start, query 0 at delta positions after key 0 (delta !=
/// 0: delta > 0, every query after every key; delta < 0, before), mask band [lo, hi] with lo <= 0
/// <= hi. Ring with the packed stream sharded (PackedSharding::kStream) calls it for the one
/// sequence two different chunks share.
ULYSSES_HOST_DEVICE PairRows band_rows(std::int32_t q_start, std::int32_t k_start, std::int32_t ql,
                                       std::int32_t kl, std::int64_t delta, std::int64_t lo,
                                       std::int64_t hi, PairPart part) {
  PairRows r{q_start, 0, k_start, 0};
  if (ql <= 0 || kl <= 0) return r;
  std::int64_t q0 = 0, qn = 0, k0 = 0, kn = 0;
  if (delta > 0) {
    // Query i sees keys k >= i + delta - hi: the first `a` queries see all of them.
    const std::int64_t a = clamp_rows(hi - delta + 1, ql);
    if (part == PairPart::kFull) {
      qn = a;
      kn = kl;
    } else {
      q0 = a;
      k0 = a + delta - hi;  // 1 when a > 0: key 0 is seen by no later query
      kn = kl - k0;
      qn = kn < ql - a ? kn : ql - a;  // query k0 + kn and later would see no key
    }
  } else {
    // Query i sees keys k <= i + delta - lo: the first f keys are seen by every query.
    const std::int64_t f = clamp_rows(delta - lo + 1, kl);
    if (part == PairPart::kFull) {
      qn = ql;
      kn = f;
    } else {
      q0 = f > 0 ? 1 : lo - delta;  // query 0 sees only the first f keys; without them, the
      k0 = f;                       // first lo - delta queries see none
      qn = ql - q0;
      kn = kl - k0;
    }
  }
  if (qn <= 0 || kn <= 0) return r;
  r.q_begin = static_cast<std::int32_t>(q_start + q0);
  r.q_len = static_cast<std::int32_t>(qn);
  r.kv_begin = static_cast<std::int32_t>(k_start + k0);
  r.kv_len = static_cast<std::int32_t>(kn);
  return r;
}

/// The rows of `part` for a sequence whose chunks start at row `start` of each half, chunk size
/// c, ql real tokens in the query chunk and kl in the key chunk, chunk distance d = qc - kc != 0,
/// mask band [lo, hi] with lo <= 0 <= hi (per-sequence chunks: both start at `start`).
ULYSSES_HOST_DEVICE PairRows pair_rows(std::int32_t start, std::int32_t c, std::int32_t ql,
                                       std::int32_t kl, std::int32_t d, std::int64_t lo,
                                       std::int64_t hi, PairPart part) {
  return band_rows(start, start, ql, kl, static_cast<std::int64_t>(d) * c, lo, hi, part);
}

}  // namespace ulysses::kernels
