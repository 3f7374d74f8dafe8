// ulysses: the shared memory of the split-KV kernel (split_kv_cuda.cu), as constants the kernel
// and the host checks (split_kv.cc) both use, so that what a launch asks for is what it takes.
//
// A CTA is kWarps warps; each warp streams tiles of kTile keys (K and V rows) through its own ring
// of up to 4 tiles, within a byte budget per warp; the warps' final merge reuses the same bytes.
// Widths are in blocks of 16 elements (the kernel's templates: K 4, 8, 12 or 16 blocks; V 4, 8 or
// 16). A tile is laid out in one of two ways, by how its rows arrive:
//   * row copies (before Hopper, and paged caches whose pages are not whole tiles): each row
//     padded by 16 bytes, so that ldmatrix reads rows without bank conflicts;
//   * tensor copies (Hopper on): boxes of 16 rows x 64 columns (2 KiB), 128-byte swizzled, K's
//     boxes then V's, each ring slot starting at a multiple of 1024 bytes (the swizzle's period).
#pragma once

#include <cstddef>

namespace ulysses::kernels::split_kv_layout {

inline constexpr int kWarps = 8;
inline constexpr int kTile = 16;  // keys per tile
inline constexpr int kRows = 16;  // query rows per CTA (the mma's M), or 8 (transposed)
inline constexpr int kMaxStages = 4;
inline constexpr int kBoxCols = 64;                     // a tensor copy's columns
inline constexpr int kBoxBytes = kTile * kBoxCols * 2;  // and bytes (16-bit data)
inline constexpr std::size_t kSwizzleAlign = 1024;      // where a swizzled box starts

// A warp's ring budget: from Hopper on (227 KiB per CTA, bulk copies) two stages at head_dim 128
// and at MLA's 192 / 128 (one tile in flight while one is computed; three stages at 128 measured
// 3.5% slower at 1M keys, docs/PERF.md); but one stage for tensor copies of an unpaged cache into
// CTAs of 8 query rows (GQA up to 8, one token), measured 4% faster at D = 128 and 6-10% for MLA
// than two (paged, two stages hide the page lookup in front of each tile's copies); before Hopper
// (A100: 163 KiB) two at 128, one at 192.
inline constexpr int kRingBytesHopper = 21504;
inline constexpr int kRingBytesHopperNarrow = 12288;
inline constexpr int kRingBytesOlder = 17408;
constexpr int ring_bytes(int cc_major, int rows, bool tensor, bool paged) {
  if (cc_major < 9) return kRingBytesOlder;
  return tensor && rows == 8 && !paged ? kRingBytesHopperNarrow : kRingBytesHopper;
}

// The template's blocks of 16 for a width.
constexpr int k_blocks(int head_dim) {
  return head_dim <= 64 ? 4 : head_dim <= 128 ? 8 : head_dim <= 192 ? 12 : 16;
}
constexpr int v_blocks(int head_dim_v) { return head_dim_v <= 64 ? 4 : head_dim_v <= 128 ? 8 : 16; }

// Elements of a K / V row of a row-copied tile: the template's width plus 16 bytes of padding.
constexpr int padded(int blocks) { return blocks * 16 + 8; }
// Bytes of one tile (K and V rows of kTile keys) of 16-bit data: a tensor-copied tile is blocks / 4
// boxes of K and of V (the template's widths are multiples of 64 columns).
constexpr int tile_bytes(int nk, int nv, bool tensor) {
  return tensor ? kTile * 16 * (nk + nv) * 2 : kTile * (padded(nk) + padded(nv)) * 2;
}
// Tiles in a warp's ring (1 to kMaxStages): kStages - 1 of them in flight while one is computed.
constexpr int stages(int nk, int nv, int budget, bool tensor) {
  const int s = budget / tile_bytes(nk, nv, tensor);
  return s > kMaxStages ? kMaxStages : (s < 1 ? 1 : s);
}
// Each warp's ring barriers (bulk copies), 8 bytes per stage.
inline constexpr std::size_t kBarrierBytes = kWarps * kMaxStages * 8;
// Where the rings start at the latest: after the barriers, rounded up to the swizzle's period for
// tensor copies (the dynamic shared memory itself is only 16-byte aligned).
constexpr std::size_t ring_offset_max(bool tensor) {
  return kBarrierBytes + (tensor ? kSwizzleAlign - 16 : 0);
}
// The final merge: every warp's O rows (fp32, padded by 4 so that the fragments' eight rows fall
// in different banks), per warp and row its max, sum and weight, then the rows' LSE.
constexpr std::size_t merge_bytes(int nv) {
  return static_cast<std::size_t>(kWarps * kRows * (nv * 16 + 4 + 3) + kRows) * 4;
}
// Dynamic shared memory of a CTA: the barriers and rings, or the merge after them if larger.
constexpr std::size_t shared_bytes(int nk, int nv, int budget, bool tensor) {
  const std::size_t ring = ring_offset_max(tensor) + static_cast<std::size_t>(kWarps) *
                                                         stages(nk, nv, budget, tensor) *
                                                         tile_bytes(nk, nv, tensor);
  return ring > merge_bytes(nv) ? ring : merge_bytes(nv);
}

}  // namespace ulysses::kernels::split_kv_layout
