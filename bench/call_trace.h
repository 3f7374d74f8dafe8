// ulysses-bench --trace-calls: what one local kernel call is, in numbers a reader can put beside
// its time. Host-only (the GPU timing lives in gpu_bench.cc), so the CPU tests check the counts.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ulysses/attention.h"

namespace ulysses::bench {

/// One timed kernel call: what it computed and how long it took alone.
struct CallRecord {
  int rank = 0;
  bool backward = false;
  std::int64_t q_rows = 0, kv_rows = 0;  // the views' rows (batch entries summed)
  int pieces = 0;                        // sequences the call held (varlen), else batch entries
  double pairs = 0;                      // (query, key) pairs the masks leave visible, per head
  double flops = 0;                      // 4 pairs D heads (forward), 2.5x that (backward)
  double ms = 0;
  std::string mask;  // "full", "causal", "causal+br" (bottom-right), "+window"
};

/// Keys visible to the `q_len` query rows of one sequence of `kv_len` keys whose row 0 sits at key
/// position `offset` (masks of `a`; sinks are not keys).
inline double sequence_pairs(const AttentionConfig& a, std::int64_t q_len, std::int64_t kv_len,
                             std::int64_t offset) {
  double pairs = 0;
  for (std::int64_t i = 0; i < q_len; ++i) {
    const std::int64_t pos = i + offset;
    std::int64_t hi = kv_len;
    if (a.causal) hi = std::min(hi, pos + 1);
    if (a.window_right >= 0) hi = std::min(hi, pos + a.window_right + 1);
    const std::int64_t lo = a.window_left >= 0 ? std::max<std::int64_t>(0, pos - a.window_left) : 0;
    pairs += static_cast<double>(std::max<std::int64_t>(0, hi - lo));
  }
  return pairs;
}

/// Visible (query, key) pairs per head of one call: its VarlenRows, else the packed sequences of
/// `cu_seqlens`, else `batch` dense sequences (LocalProblem's conventions, attention.h).
inline double visible_pairs(const LocalProblem& p, std::span<const std::int32_t> cu_seqlens,
                            const VarlenRows& rows) {
  double pairs = 0;
  if (p.varlen && p.varlen_rows) {
    for (int s = 0; s < rows.num_seqs(); ++s) {
      const std::int64_t q = rows.q_len[static_cast<std::size_t>(s)];
      const std::int64_t kv = rows.kv_len[static_cast<std::size_t>(s)];
      pairs += sequence_pairs(p.config, q, kv, p.diagonal_offset + (p.bottom_right ? kv - q : 0));
    }
  } else if (p.varlen) {
    for (std::size_t s = 0; s + 1 < cu_seqlens.size(); ++s) {
      const std::int64_t len = cu_seqlens[s + 1] - cu_seqlens[s];
      pairs += sequence_pairs(p.config, len, len, 0);
    }
  } else {
    pairs = static_cast<double>(p.batch) *
            sequence_pairs(p.config, p.seqlen, p.kv_len(), p.diagonal_offset);
  }
  return pairs;
}

/// The record of one call, all but its time.
inline CallRecord describe_call(const LocalProblem& p, std::span<const std::int32_t> cu_seqlens,
                                const VarlenRows& rows, bool backward, int rank) {
  CallRecord r;
  r.rank = rank;
  r.backward = backward;
  r.q_rows = p.batch * p.seqlen;
  r.kv_rows = p.batch * p.kv_len();
  r.pieces = p.varlen_rows
                 ? rows.num_seqs()
                 : (p.varlen ? static_cast<int>(cu_seqlens.size()) - 1 : static_cast<int>(p.batch));
  r.pairs = visible_pairs(p, cu_seqlens, rows);
  const int heads = p.num_heads_q_local > 0 ? p.num_heads_q_local : p.config.num_heads_q;
  r.flops = 4.0 * r.pairs * p.config.head_dim * heads * (backward ? 2.5 : 1.0);
  const AttentionConfig& a = p.config;
  r.mask = a.causal ? (p.bottom_right ? "causal+br" : "causal") : "full";
  if (a.window_left >= 0 || a.window_right >= 0) r.mask += "+window";
  return r;
}

/// `records` of `steps` identical steps in a row (each step's calls in the same order): each call
/// once, with its shortest time. Calls timed on a GPU that other ranks share can meet their
/// non-kernel work (exchanges, sums) now and then; the minimum leaves that out.
inline std::vector<CallRecord> fastest_of_steps(const std::vector<CallRecord>& records, int steps) {
  const std::size_t n = records.size() / static_cast<std::size_t>(std::max(1, steps));
  std::vector<CallRecord> out(records.begin(), records.begin() + static_cast<std::ptrdiff_t>(n));
  for (std::size_t i = n; i < records.size(); ++i) {
    CallRecord& r = out[i % n];
    r.ms = std::min(r.ms, records[i].ms);
  }
  return out;
}

}  // namespace ulysses::bench
