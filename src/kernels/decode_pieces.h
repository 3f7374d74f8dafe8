// ulysses: how a decode step cuts one sequence's cache into pieces (flash-decoding), on the host
// and on the device. DistributedDecode plans each step on the host from DecodeArgs::segments; with
// DecodeConfig::device_layout a kernel plans it on the device from the segments in device memory,
// so that a step captured in a CUDA graph follows a cache that grows between replays. Both call
// plan_decode_pieces(), so both cut the same pieces.
//
// Query token i of a step sits at position p0 + i and sees keys at positions [lo(i), hi(i)]
// (window_left w: lo = p0 + i - w; right bound r, 0 under causal: hi = p0 + i + r; unbounded sides
// open). Of each segment's keys, those every token sees form one run, cut into open pieces of at
// least min_split_rows keys and at most max_splits pieces over the sequence (rounding adds at most
// one per segment); those only some tokens see form at most two edges per segment (the left edge
// of a window, keys right of token 0), each with the diagonal offset of its masked call. With one
// query token there are no edges.
#pragma once

#include <cstdint>

#include "kernels/fast_div.h"  // ULYSSES_HOST_DEVICE

namespace ulysses::kernels {

/// The step's mask and splitting, as DecodeConfig gives them.
struct DecodePieceRules {
  std::int64_t tokens = 1;        // query tokens per sequence
  std::int64_t window_left = -1;  // < 0: none
  std::int64_t right = -1;        // keys right of a token it sees: 0 causal, < 0 unbounded
  std::int64_t min_split_rows = 1;
  std::int64_t max_splits = 1;
};

/// Cache rows [kv_row, kv_row + kv_len) of the sequence, seen by query tokens [q_begin, q_begin +
/// q_len) (open pieces: every token); diagonal_offset: position of token q_begin minus that of key
/// kv_row (edges; 0 for open pieces).
struct DecodePiece {
  std::int64_t kv_row = 0, kv_len = 0;
  std::int64_t q_begin = 0, q_len = 0;
  std::int64_t diagonal_offset = 0;
};

/// Plans one sequence: `segment(i, row, rows, position)` fills in segment i of n (rows <= 0: it
/// holds nothing), p0 is query token 0's position. Calls edge(piece) for each edge in segment
/// order, then open(index, piece) for the open pieces, index counting them in segment order from
/// 0; returns how many open pieces there are. Several threads may share the open pieces: thread
/// `lane` of `lanes` gets those whose index within their segment is lane modulo lanes (each
/// thread still gets every edge).
template <class Segment, class Open, class Edge>
ULYSSES_HOST_DEVICE std::int64_t plan_decode_pieces(const DecodePieceRules& c, int n,
                                                    Segment segment, std::int64_t p0, Open open,
                                                    Edge edge, int lane = 0, int lanes = 1) {
  constexpr std::int64_t kFar = INT64_MAX / 4;
  const std::int64_t T = c.tokens, wl = c.window_left, r = c.right;
  const auto lo = [&](std::int64_t i) { return wl >= 0 ? p0 + i - wl : -kFar; };
  const auto hi = [&](std::int64_t i) { return r >= 0 ? p0 + i + r : kFar; };
  const auto max = [](std::int64_t a, std::int64_t b) { return a > b ? a : b; };
  const auto min = [](std::int64_t a, std::int64_t b) { return a < b ? a : b; };
  // Segment i's keys some token sees [v0, v1) and every token sees [f0, f1), as positions; s0 its
  // first position, row its first row. False: no key of it is visible.
  struct Seen {
    std::int64_t row, s0, v0, v1, f0, f1;
  };
  const auto seen = [&](int i, Seen& s) {
    std::int64_t rows = 0;
    segment(i, s.row, rows, s.s0);
    if (rows <= 0) return false;
    s.v0 = max(s.s0, lo(0));
    s.v1 = min(s.s0 + rows, hi(T - 1) + 1);
    if (s.v0 >= s.v1) return false;
    s.f0 = max(s.v0, lo(T - 1));
    s.f1 = min(s.v1, hi(0) + 1);
    return true;
  };
  // Edges, and the open keys' total.
  std::int64_t total = 0;
  for (int i = 0; i < n; ++i) {
    Seen s{};
    if (!seen(i, s)) continue;
    const auto put_edge = [&](std::int64_t k0, std::int64_t k1) {
      if (k0 >= k1) return;
      // Tokens [i0, i1) see at least one key of [k0, k1): hi(i) >= k0 and lo(i) < k1.
      const std::int64_t i0 = r >= 0 ? max(0, k0 - p0 - r) : 0;
      const std::int64_t i1 = wl >= 0 ? min(T, k1 - p0 + wl) : T;
      if (i0 >= i1) return;  // not reached: [v0, v1) is visible to someone
      edge(DecodePiece{s.row + (k0 - s.s0), k1 - k0, i0, i1 - i0, p0 + i0 - k0});
    };
    if (s.f0 >= s.f1) {
      put_edge(s.v0, s.v1);
    } else {
      put_edge(s.v0, s.f0);
      total += s.f1 - s.f0;
      put_edge(s.f1, s.v1);
    }
  }
  if (total == 0) return 0;
  const std::int64_t target = max(c.min_split_rows, (total + c.max_splits - 1) / c.max_splits);
  std::int64_t index = 0;
  for (int i = 0; i < n; ++i) {
    Seen s{};
    if (!seen(i, s) || s.f0 >= s.f1) continue;
    const std::int64_t row = s.row + (s.f0 - s.s0), len = s.f1 - s.f0;
    const std::int64_t pieces = (len + target - 1) / target;
    for (std::int64_t k = lane; k < pieces; k += lanes) {
      const std::int64_t b = len * k / pieces, e = len * (k + 1) / pieces;
      open(index + k, DecodePiece{row + b, e - b, 0, T, 0});
    }
    index += pieces;
  }
  return index;
}

/// DecodeConfig::device_layout: what the device reads to write a step's slot table (split_kv.h,
/// SplitKvArgs::table) in place of the host.
struct DecodeSlotTableArgs {
  /// [batch, max_segments, 3] int64: sequence b's segment i is (row, rows, position) at (b
  /// max_segments + i) 3. A segment that is not inside rows [0, cache_rows) with position >= 0
  /// (or has rows <= 0) holds nothing: the kernel never reads outside the cache.
  const std::int64_t* segments = nullptr;
  const std::int64_t* query_positions = nullptr;  // [batch] int64, clamped to [0, 2^60]
  int batch = 0, max_segments = 0;
  std::int64_t cache_rows = 0;
  std::int64_t seq_pitch = 0;  // sequence b's first row in the table: b seq_pitch (paged: 0)
  DecodePieceRules rules;
  /// Slots per sequence: open ones (min(max_splits, cache_rows / min_split_rows) + max_segments:
  /// the rounding adds at most one per segment) and edges (max_segments + 1 when tokens > 1, else
  /// 0). The table holds batch (n_open + n_edge) slots: sequence b's open pieces at b n_open + j,
  /// its edges at batch n_open + b n_edge + k; unused slots read no rows.
  int n_open = 0, n_edge = 0;
  std::int32_t* table = nullptr;  // 5 rows of batch (n_open + n_edge) int32
};

/// Sequence b's slots of the table, every one of them written: by thread `lane` of `lanes` that
/// share the sequence, its share of the open pieces and of the unused slots (lane 0 the edges).
ULYSSES_HOST_DEVICE void write_decode_slots(const DecodeSlotTableArgs& a, int b, int lane,
                                            int lanes) {
  constexpr std::int64_t kMaxPosition = std::int64_t{1} << 60;
  const std::int64_t n = static_cast<std::int64_t>(a.batch) * (a.n_open + a.n_edge);
  const auto put = [&](std::int64_t slot, std::int64_t row, std::int64_t rows, std::int64_t delta) {
    a.table[slot] = static_cast<std::int32_t>(row);
    a.table[n + slot] = static_cast<std::int32_t>(rows);
    a.table[2 * n + slot] = b;
    a.table[3 * n + slot] = static_cast<std::int32_t>(static_cast<std::uint32_t>(delta));
    a.table[4 * n + slot] = static_cast<std::int32_t>(delta >> 32);
  };
  const std::int64_t first_open = static_cast<std::int64_t>(b) * a.n_open;
  const std::int64_t first_edge =
      static_cast<std::int64_t>(a.batch) * a.n_open + static_cast<std::int64_t>(b) * a.n_edge;
  const std::int64_t* seg = a.segments + static_cast<std::int64_t>(b) * a.max_segments * 3;
  std::int64_t p0 = a.query_positions[b];
  p0 = p0 < 0 ? 0 : (p0 > kMaxPosition ? kMaxPosition : p0);
  const std::int64_t base = static_cast<std::int64_t>(b) * a.seq_pitch;
  std::int64_t edges = 0;
  // (The slot counts hold every piece of a valid layout, decode.cc; the guards keep a bad one
  // inside the sequence's slots.)
  const std::int64_t opens = plan_decode_pieces(
      a.rules, a.max_segments,
      [&](int i, std::int64_t& row, std::int64_t& rows, std::int64_t& position) {
        row = seg[3 * i];
        rows = seg[3 * i + 1];
        position = seg[3 * i + 2];
        const bool inside = row >= 0 && rows > 0 && rows <= a.cache_rows - row && position >= 0 &&
                            position <= kMaxPosition;
        if (!inside) rows = 0;
      },
      p0,
      [&](std::int64_t index, const DecodePiece& p) {
        if (index < a.n_open) put(first_open + index, base + p.kv_row, p.kv_len, 0);
      },
      [&](const DecodePiece& p) {
        if (lane == 0 && edges < a.n_edge) {
          put(first_edge + edges, base + p.kv_row, p.kv_len, p.diagonal_offset - p.q_begin);
        }
        ++edges;
      },
      lane, lanes);
  // The slots no piece took read nothing.
  for (std::int64_t j = opens + lane; j < a.n_open; j += lanes) put(first_open + j, 0, 0, 0);
  for (std::int64_t k = edges + lane; k < a.n_edge; k += lanes) put(first_edge + k, 0, 0, 0);
}

}  // namespace ulysses::kernels
