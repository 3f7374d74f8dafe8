// ulysses: how the element-wise device kernels (zero, copy, convert, accumulate: elementwise.h)
// walk one or two strided views of one shape.
//
// The views' innermost dims are merged into one "row" for as long as both views are dense across
// them (a [B, S, H, D] view with dense heads has rows of H * D elements; a contiguous one, a single
// row), and each thread moves one vector of `vec` elements of a row. A flat 32-bit vector index is
// decomposed with FastDiv into the row's vector and the coordinates of the dims left outside the
// row, so an element costs a few multiplies instead of 64-bit divisions. Views too large for one
// 32-bit launch are cut into launches along the outermost dim.
//
// Host code (planning) and a host/device function (locate) shared by the kernels and the CPU tests.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "kernels/fast_div.h"
#include "ulysses/status.h"
#include "ulysses/types.h"

namespace ulysses::kernels {

inline constexpr int kMaxWalkDims = kMaxDims;
/// Vectors per launch: flat indices and their grid-stride increments stay below 2^32.
inline constexpr std::int64_t kMaxLaunchVectors = std::int64_t{1} << 31;

/// The walk over dst (and src) planned on the host.
struct RowWalk {
  int outer_dims = 0;                              // dims left outside the row, innermost first
  std::array<std::int64_t, kMaxWalkDims> outer{};  // their sizes
  std::array<std::int64_t, kMaxWalkDims> dst_stride{};  // their strides, in vectors
  std::array<std::int64_t, kMaxWalkDims> src_stride{};
  std::int64_t row_vecs = 0;  // vectors per row (contiguous in both views)
  int vec = 1;                // elements per vector

  std::int64_t rows() const;
  std::int64_t total() const { return rows() * row_vecs; }  // vectors
};

/// Plans the walk over `dst` and `src` (same shape; nullptr: dst alone), views of up to
/// kMaxWalkDims dims with any strides. Dims of size 1 are dropped; dims are merged into the row
/// from the innermost while both views are dense across them (up to kMaxLaunchVectors / 2 vectors a
/// row). `vec` is the first of `widths` (elements per vector, widest first) that divides the row
/// length and every stride left, and keeps each base pointer aligned to vec times its element size;
/// 1 if none does.
RowWalk plan_row_walk(const TensorView& dst, const TensorView* src, std::span<const int> widths);

/// One launch of a walk: at most kMaxLaunchVectors vectors, passed to a kernel by value.
struct RowWalkLaunch {
  std::uint32_t total = 0;  // vectors in this launch
  int outer_dims = 0;
  FastDiv row_vecs;
  FastDiv outer[kMaxWalkDims];  // sizes of the outer dims (the outermost is never divided)
  std::int64_t dst_stride[kMaxWalkDims] = {}, src_stride[kMaxWalkDims] = {};
  std::int64_t dst_base = 0, src_base = 0;  // in vectors
};

/// The walk cut along its outermost dim into launches of at most `limit` vectors; Unsupported when
/// one row, or one index of the outermost dim, holds more than `limit` vectors.
Result<std::vector<RowWalkLaunch>> row_walk_launches(const RowWalk& walk,
                                                     std::int64_t limit = kMaxLaunchVectors);

/// Vector offsets into dst and src of flat vector index i (< l.total) of a launch.
ULYSSES_HOST_DEVICE void locate(const RowWalkLaunch& l, std::uint32_t i, std::int64_t& dst,
                                std::int64_t& src) {
  std::uint32_t row = 0, v = 0;
  l.row_vecs.divmod(i, row, v);
  dst = l.dst_base + v;
  src = l.src_base + v;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int k = 0; k < kMaxWalkDims; ++k) {
    if (k >= l.outer_dims) break;
    std::uint32_t c = row;
    if (k + 1 < l.outer_dims) l.outer[k].divmod(row, row, c);
    dst += static_cast<std::int64_t>(c) * l.dst_stride[k];
    src += static_cast<std::int64_t>(c) * l.src_stride[k];
  }
}

/// Rows picked out of dim 1 of a view whose dim 0 has size 1 (a packed call's [1, S, H, D]): rows
/// [begin[i], begin[i] + len[i]) for each i, host values (one side of a VarlenRows). Empty pieces
/// are allowed; pieces must not overlap (each row is visited once).
struct RowPieces {
  std::span<const std::int32_t> begin, len;
};

/// Pieces one launch holds (their tables travel as kernel arguments).
inline constexpr int kPiecesPerLaunch = 96;

/// One launch over pieces' rows, passed to a kernel by value: its flat row r is row
/// first[i] + (r - start[i]) of the view for the i with start[i] <= r < start[i + 1].
struct RowPiecesLaunch {
  std::uint32_t total = 0;  // vectors: start[count] * vectors per row
  int count = 0;            // non-empty pieces
  std::int32_t first[kPiecesPerLaunch] = {};
  std::uint32_t start[kPiecesPerLaunch + 1] = {};
};

/// The non-empty pieces in launches of at most kPiecesPerLaunch pieces and `limit` vectors,
/// `per_row` vectors a row, in order; a piece longer than a launch is cut. Unsupported when one
/// row holds more than `limit` vectors.
Result<std::vector<RowPiecesLaunch>> row_pieces_launches(RowPieces pieces, std::int64_t per_row,
                                                         std::int64_t limit = kMaxLaunchVectors);

/// The view row of flat row r (< start[count]) of a launch.
ULYSSES_HOST_DEVICE std::int64_t piece_row(const RowPiecesLaunch& l, std::uint32_t r) {
  int lo = 0, hi = l.count - 1;  // the last i with start[i] <= r (start ascends strictly)
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (l.start[mid] <= r) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return static_cast<std::int64_t>(l.first[lo]) + static_cast<std::int64_t>(r - l.start[lo]);
}

/// A walk over one row of dst and src (the dims past 1) for the pieces' kernels, and each view's
/// row stride in vectors: `row.vec` is the first of `widths` that plan_row_walk() takes for the row
/// and that also divides both row strides.
struct PieceWalk {
  RowWalk row;
  std::int64_t dst_row = 0, src_row = 0;
};
PieceWalk plan_piece_walk(const TensorView& dst, const TensorView* src,
                          std::span<const int> widths);

}  // namespace ulysses::kernels
