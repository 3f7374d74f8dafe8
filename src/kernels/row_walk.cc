#include "kernels/row_walk.h"

#include <algorithm>

#include "common/check.h"

namespace ulysses::kernels {
namespace {

struct Dim {
  std::int64_t size, dst, src;  // strides in elements
};

bool aligned(const void* p, std::int64_t bytes) {
  return reinterpret_cast<std::uintptr_t>(p) % static_cast<std::uintptr_t>(bytes) == 0;
}

}  // namespace

std::int64_t RowWalk::rows() const {
  std::int64_t n = 1;
  for (int k = 0; k < outer_dims; ++k) n *= outer[static_cast<std::size_t>(k)];
  return n;
}

RowWalk plan_row_walk(const TensorView& dst, const TensorView* src, std::span<const int> widths) {
  RowWalk w;
  const TensorView& s = src != nullptr ? *src : dst;
  // Dims innermost first, without those of size 1; an empty view walks nothing.
  std::vector<Dim> dims;
  for (int k = dst.ndim - 1; k >= 0; --k) {
    if (dst.size(k) == 0) return w;
    if (dst.size(k) != 1) dims.push_back({dst.size(k), dst.stride(k), s.stride(k)});
  }
  // Merge into the row while both views are dense across the next dim.
  std::int64_t row = 1;
  std::size_t merged = 0;
  while (merged < dims.size() && dims[merged].dst == row && dims[merged].src == row &&
         row * dims[merged].size <= kMaxLaunchVectors / 2) {
    row *= dims[merged].size;
    ++merged;
  }
  const auto dst_bytes = static_cast<std::int64_t>(dtype_size(dst.dtype));
  const auto src_bytes = static_cast<std::int64_t>(dtype_size(s.dtype));
  w.vec = 1;
  for (int v : widths) {
    bool ok = v >= 1 && row % v == 0 && aligned(dst.data, v * dst_bytes) &&
              aligned(s.data, v * src_bytes);
    for (std::size_t k = merged; ok && k < dims.size(); ++k) {
      ok = dims[k].dst % v == 0 && dims[k].src % v == 0;
    }
    if (ok) {
      w.vec = v;
      break;
    }
  }
  w.row_vecs = row / w.vec;
  for (std::size_t k = merged; k < dims.size(); ++k) {
    const auto o = static_cast<std::size_t>(w.outer_dims++);
    w.outer[o] = dims[k].size;
    w.dst_stride[o] = dims[k].dst / w.vec;
    w.src_stride[o] = dims[k].src / w.vec;
  }
  return w;
}

Result<std::vector<RowWalkLaunch>> row_walk_launches(const RowWalk& walk, std::int64_t limit) {
  std::vector<RowWalkLaunch> out;
  if (walk.row_vecs == 0 || walk.rows() == 0) return out;
  limit = std::min(limit, kMaxLaunchVectors);
  // Vectors per index of the outermost dim (the whole walk when there is no outer dim).
  const int last = walk.outer_dims - 1;
  const std::int64_t outermost = last >= 0 ? walk.outer[static_cast<std::size_t>(last)] : 1;
  const std::int64_t per_index = walk.total() / outermost;
  if (per_index > limit) {
    return unsupported(detail::str_cat("ulysses::kernels: an element-wise walk needs ", per_index,
                                       " vectors per index of its outermost dim (expected at most ",
                                       limit, ")"));
  }
  const std::int64_t step = limit / per_index;
  for (std::int64_t first = 0; first < outermost; first += step) {
    const std::int64_t n = std::min(step, outermost - first);
    RowWalkLaunch l;
    l.total = static_cast<std::uint32_t>(n * per_index);
    l.outer_dims = walk.outer_dims;
    l.row_vecs = FastDiv(static_cast<std::uint32_t>(walk.row_vecs));
    for (int k = 0; k < walk.outer_dims; ++k) {
      const auto u = static_cast<std::size_t>(k);
      l.outer[k] = FastDiv(static_cast<std::uint32_t>(k == last ? n : walk.outer[u]));
      l.dst_stride[k] = walk.dst_stride[u];
      l.src_stride[k] = walk.src_stride[u];
    }
    if (last >= 0) {
      const auto u = static_cast<std::size_t>(last);
      l.dst_base = first * walk.dst_stride[u];
      l.src_base = first * walk.src_stride[u];
    }
    out.push_back(l);
  }
  return out;
}

Result<std::vector<RowPiecesLaunch>> row_pieces_launches(RowPieces pieces, std::int64_t per_row,
                                                         std::int64_t limit) {
  std::vector<RowPiecesLaunch> out;
  limit = std::min(limit, kMaxLaunchVectors);
  if (per_row <= 0) return out;
  if (per_row > limit) {
    return unsupported(detail::str_cat("ulysses::kernels: a row of ", per_row,
                                       " vectors is more than one launch holds (", limit, ")"));
  }
  const std::int64_t most_rows = limit / per_row;
  RowPiecesLaunch l;
  std::int64_t rows = 0;  // in l
  auto flush = [&] {
    if (l.count == 0) return;
    l.total = static_cast<std::uint32_t>(rows * per_row);
    out.push_back(l);
    l = RowPiecesLaunch{};
    rows = 0;
  };
  const std::size_t n = std::min(pieces.begin.size(), pieces.len.size());
  for (std::size_t i = 0; i < n; ++i) {
    std::int64_t first = pieces.begin[i], left = pieces.len[i];
    while (left > 0) {
      if (l.count == kPiecesPerLaunch || rows == most_rows) flush();
      const std::int64_t take = std::min(left, most_rows - rows);
      l.first[l.count] = static_cast<std::int32_t>(first);
      l.start[l.count] = static_cast<std::uint32_t>(rows);
      ++l.count;
      rows += take;
      l.start[l.count] = static_cast<std::uint32_t>(rows);
      first += take;
      left -= take;
    }
  }
  flush();
  return out;
}

PieceWalk plan_piece_walk(const TensorView& dst, const TensorView* src,
                          std::span<const int> widths) {
  const TensorView& s = src != nullptr ? *src : dst;
  auto one_row = [](TensorView v) {
    v.shape[0] = 1;
    v.shape[1] = 1;
    return v;
  };
  const TensorView dr = one_row(dst), sr = one_row(s);
  const TensorView* srp = src != nullptr ? &sr : nullptr;
  PieceWalk w;
  bool found = false;
  for (int v : widths) {
    const int one[] = {v};
    w.row = plan_row_walk(dr, srp, one);
    found = w.row.vec == v && dst.stride(1) % v == 0 && s.stride(1) % v == 0;
    if (found) break;
  }
  if (!found) {
    const int scalar[] = {1};
    w.row = plan_row_walk(dr, srp, scalar);
  }
  w.dst_row = dst.stride(1) / w.row.vec;
  w.src_row = s.stride(1) / w.row.vec;
  return w;
}

}  // namespace ulysses::kernels
