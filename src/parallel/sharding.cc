#include "ulysses/sharding.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>

#include "common/check.h"

namespace ulysses {

using detail::arg_error;
using detail::str_cat;

int sequence_dim(Layout layout) { return layout == Layout::kTHD ? 0 : 1; }

namespace {

Result<TensorView> slice_dim(const TensorView& t, int dim, int cp, int rank, std::string_view api,
                             std::string_view what) {
  if (cp < 1) return arg_error(api, "cp", "must be positive", cp, ">= 1");
  if (rank < 0 || rank >= cp)
    return arg_error(api, "rank", "is out of range", rank, str_cat("0..", cp - 1));
  if (t.ndim <= dim) {
    return arg_error(api, what, "has too few dimensions", t.to_string(),
                     str_cat("> ", dim, " dims"));
  }
  const std::int64_t n = t.size(dim);
  if (n % cp != 0) {
    return arg_error(api, str_cat(what, " sequence length"),
                     str_cat("must be divisible by cp ", cp), n, str_cat("a multiple of ", cp));
  }
  TensorView out = t;
  const std::int64_t len = n / cp;
  out.shape[static_cast<std::size_t>(dim)] = len;
  if (t.data != nullptr) {
    out.data = static_cast<char*>(t.data) +
               rank * len * t.stride(dim) * static_cast<std::int64_t>(dtype_size(t.dtype));
  }
  return out;
}

// Calls fn(element offset in a, element offset in b) for every multi-index of a's shape.
template <typename Fn>
void for_each_index(const TensorView& a, const TensorView& b, Fn&& fn) {
  std::array<std::int64_t, kMaxDims> idx{};
  const std::int64_t n = a.numel();
  for (std::int64_t lin = 0; lin < n; ++lin) {
    std::int64_t oa = 0, ob = 0;
    for (int d = 0; d < a.ndim; ++d) {
      oa += idx[static_cast<std::size_t>(d)] * a.stride(d);
      ob += idx[static_cast<std::size_t>(d)] * b.stride(d);
    }
    fn(oa, ob);
    for (int d = a.ndim - 1; d >= 0; --d) {
      if (++idx[static_cast<std::size_t>(d)] < a.size(d)) break;
      idx[static_cast<std::size_t>(d)] = 0;
    }
  }
}

}  // namespace

Result<TensorView> shard_view(const TensorView& global, Layout layout, int cp, int rank) {
  return slice_dim(global, sequence_dim(layout), cp, rank, "ulysses::shard_view", "global");
}

Result<TensorView> shard_lse_view(const TensorView& global_lse, Layout layout, int cp, int rank) {
  const int dim = layout == Layout::kTHD ? 1 : 2;
  return slice_dim(global_lse, dim, cp, rank, "ulysses::shard_lse_view", "global_lse");
}

Status copy_tensor(const TensorView& dst, const TensorView& src) {
  constexpr std::string_view api = "ulysses::copy_tensor";
  if (dst.ndim != src.ndim || dst.shape != src.shape) {
    return arg_error(api, "dst", "has another shape than src", dst.to_string(), src.to_string());
  }
  if (dst.dtype != src.dtype) {
    return arg_error(api, "dst", "has another dtype than src", dtype_name(dst.dtype),
                     dtype_name(src.dtype));
  }
  if (!dst.device.is_host() || !src.device.is_host()) {
    return arg_error(api, "dst/src", "are not host tensors",
                     str_cat(dst.device.to_string(), "/", src.device.to_string()), "host");
  }
  const std::size_t e = dtype_size(src.dtype);
  for_each_index(src, dst, [&](std::int64_t os, std::int64_t od) {
    std::memcpy(static_cast<char*>(dst.data) + od * static_cast<std::int64_t>(e),
                static_cast<const char*>(src.data) + os * static_cast<std::int64_t>(e), e);
  });
  return Status::ok();
}

Status gather_sequence(Communicator& comm, const TensorView& shard, const TensorView& global,
                       Layout layout, void* scratch, Stream stream) {
  return gather_sequence(comm, shard, global, sequence_dim(layout),
                         ParallelConfig{.cp = comm.size()}, scratch, stream);
}

Result<std::vector<std::int32_t>> packed_sequence_offsets(
    const ParallelConfig& parallel, std::span<const std::int32_t> cu_seqlens) {
  constexpr std::string_view api = "ulysses::packed_sequence_offsets";
  ULYSSES_RETURN_IF_ERROR(parallel.validate());
  if (cu_seqlens.empty()) return arg_error(api, "cu_seqlens", "is empty", 0, ">= 2 entries");
  ULYSSES_RETURN_IF_ERROR(validate_cu_seqlens(cu_seqlens, cu_seqlens.back(), api));
  std::vector<std::int32_t> out(cu_seqlens.begin(), cu_seqlens.end());
  // Ulysses, all-gather and stream sharding cut the packed stream as it is: no padding.
  if (!parallel.packed_per_sequence()) return out;
  const std::int64_t unit = 2 * parallel.ring_size();
  std::int64_t at = 0;
  for (std::size_t s = 0; s + 1 < cu_seqlens.size(); ++s) {
    out[s] = static_cast<std::int32_t>(at);
    const std::int64_t len = cu_seqlens[s + 1] - cu_seqlens[s];
    at += (len + unit - 1) / unit * unit;
    if (at > std::numeric_limits<std::int32_t>::max()) {
      return arg_error(api, "cu_seqlens", "pads to more tokens than int32 holds", at,
                       "<= 2^31 - 1 padded tokens");
    }
  }
  out.back() = static_cast<std::int32_t>(at);
  return out;
}

Result<std::vector<TokenRange>> shard_token_ranges(const ParallelConfig& parallel,
                                                   std::int64_t seqlen, int rank,
                                                   std::span<const std::int32_t> cu_seqlens) {
  constexpr std::string_view api = "ulysses::shard_token_ranges";
  ULYSSES_RETURN_IF_ERROR(parallel.validate());
  const int cp = parallel.cp;
  if (rank < 0 || rank >= cp)
    return arg_error(api, "rank", "is out of range", rank, str_cat("0..", cp - 1));
  const int multiple = parallel.sequence_multiple();
  if (seqlen < 1 || seqlen % multiple != 0) {
    return arg_error(api, "seqlen",
                     str_cat("must be a positive multiple of ", multiple, " for strategy ",
                             strategy_name(parallel.strategy), " with cp ", cp),
                     seqlen, str_cat("a multiple of ", multiple));
  }
  if (parallel.strategy == Strategy::kUlysses) {
    const std::int64_t len = seqlen / cp;
    return std::vector<TokenRange>{{rank * len, (rank + 1) * len}};
  }
  // Zigzag over the ring (2 R chunks), then piece u of U inside each chunk.
  const int U = parallel.ulysses_size(), R = parallel.ring_size();
  const int j = rank / U, u = rank % U;
  const std::int64_t chunk = seqlen / (2 * R), piece = chunk / U;
  if (cu_seqlens.empty() || !parallel.packed_per_sequence()) {  // zigzag of the stream
    const std::int64_t first = j * chunk + u * piece, second = (2 * R - 1 - j) * chunk + u * piece;
    return std::vector<TokenRange>{{first, first + piece}, {second, second + piece}};
  }
  // Packed sequences: each padded sequence (and the tail after the last) is cut into 2R chunks of
  // its own; ring index x owns H_x, the concatenation of every segment's chunk x (chunk tokens in
  // all), and rank (j, u) holds piece u of H_j and of H_{2R-1-j}.
  ULYSSES_ASSIGN_OR_RETURN(auto offsets, packed_sequence_offsets(parallel, cu_seqlens));
  if (offsets.back() > seqlen) {
    return arg_error(
        api, "cu_seqlens", "needs more tokens than seqlen once padded", offsets.back(),
        str_cat("<= ", seqlen, " (each sequence padded to a multiple of ", 2 * R, ")"));
  }
  offsets.push_back(static_cast<std::int32_t>(seqlen));  // the tail: one more segment
  std::vector<TokenRange> out;
  for (const int x : {j, 2 * R - 1 - j}) {
    const std::int64_t want_begin = u * piece, want_end = want_begin + piece;
    std::int64_t h = 0;  // row of H_x where the current segment's chunk starts
    for (std::size_t s = 0; s + 1 < offsets.size() && h < want_end; ++s) {
      const std::int64_t c = (offsets[s + 1] - offsets[s]) / (2 * R);
      const std::int64_t lo = std::max(h, want_begin), hi = std::min(h + c, want_end);
      if (lo < hi) {
        const std::int64_t g = offsets[s] + x * c + (lo - h);
        if (!out.empty() && out.back().end == g) {
          out.back().end = g + (hi - lo);
        } else {
          out.push_back({g, g + (hi - lo)});
        }
      }
      h += c;
    }
  }
  return out;
}

namespace {
// Runs fn(global slice, shard slice) for each of rank's token ranges.
template <typename Fn>
Status for_each_range(const TensorView& global, const TensorView& shard, int seq_dim,
                      const ParallelConfig& parallel, int rank,
                      std::span<const std::int32_t> cu_seqlens, std::string_view api, Fn&& fn) {
  if (seq_dim < 0 || seq_dim >= global.ndim || global.ndim != shard.ndim) {
    return arg_error(api, "seq_dim", "does not fit the tensors", seq_dim,
                     str_cat("0..", global.ndim - 1, " with global and shard of equal rank"));
  }
  ULYSSES_ASSIGN_OR_RETURN(auto ranges,
                           shard_token_ranges(parallel, global.size(seq_dim), rank, cu_seqlens));
  std::int64_t held = 0;
  for (const TokenRange& r : ranges) held += r.end - r.begin;
  for (int d = 0; d < global.ndim; ++d) {
    if (shard.size(d) != (d == seq_dim ? held : global.size(d))) {
      return arg_error(api, "shard", "does not match this rank's part of global", shard.to_string(),
                       str_cat(held, " tokens along dim ", seq_dim));
    }
  }
  const std::size_t e = dtype_size(global.dtype);
  std::int64_t at = 0;
  for (const TokenRange& r : ranges) {
    TensorView g = global, l = shard;
    g.shape[static_cast<std::size_t>(seq_dim)] = r.end - r.begin;
    l.shape[static_cast<std::size_t>(seq_dim)] = r.end - r.begin;
    g.data = static_cast<char*>(global.data) +
             r.begin * global.stride(seq_dim) * static_cast<std::int64_t>(e);
    l.data =
        static_cast<char*>(shard.data) + at * shard.stride(seq_dim) * static_cast<std::int64_t>(e);
    ULYSSES_RETURN_IF_ERROR(fn(g, l));
    at += r.end - r.begin;
  }
  return Status::ok();
}
}  // namespace

Status copy_shard(const TensorView& global, const TensorView& shard, int seq_dim,
                  const ParallelConfig& parallel, int rank,
                  std::span<const std::int32_t> cu_seqlens) {
  return for_each_range(global, shard, seq_dim, parallel, rank, cu_seqlens, "ulysses::copy_shard",
                        [](const TensorView& g, const TensorView& l) { return copy_tensor(l, g); });
}

Status place_shard(const TensorView& shard, const TensorView& global, int seq_dim,
                   const ParallelConfig& parallel, int rank,
                   std::span<const std::int32_t> cu_seqlens) {
  return for_each_range(global, shard, seq_dim, parallel, rank, cu_seqlens, "ulysses::place_shard",
                        [](const TensorView& g, const TensorView& l) { return copy_tensor(g, l); });
}

Result<std::vector<std::int32_t>> shard_position_ids(const ParallelConfig& parallel,
                                                     std::int64_t seqlen, int rank,
                                                     std::span<const std::int32_t> cu_seqlens) {
  ULYSSES_ASSIGN_OR_RETURN(auto ranges, shard_token_ranges(parallel, seqlen, rank, cu_seqlens));
  std::vector<std::int32_t> ids;
  if (cu_seqlens.empty()) {
    for (const TokenRange& r : ranges) {
      for (std::int64_t t = r.begin; t < r.end; ++t) ids.push_back(static_cast<std::int32_t>(t));
    }
    return ids;
  }
  // Packed: the position inside the token's own sequence, 0 for padding.
  ULYSSES_ASSIGN_OR_RETURN(auto offsets, packed_sequence_offsets(parallel, cu_seqlens));
  for (const TokenRange& r : ranges) {
    for (std::int64_t t = r.begin; t < r.end; ++t) {
      const auto next = std::upper_bound(offsets.begin(), offsets.end(), t);
      const auto s = static_cast<std::size_t>(next - offsets.begin()) - 1;
      const std::int64_t pos = t - offsets[s];
      const bool real = s + 1 < cu_seqlens.size() && pos < cu_seqlens[s + 1] - cu_seqlens[s];
      ids.push_back(real ? static_cast<std::int32_t>(pos) : 0);
    }
  }
  return ids;
}

Status gather_sequence(Communicator& comm, const TensorView& shard, const TensorView& global,
                       int seq_dim, const ParallelConfig& parallel, void* scratch, Stream stream,
                       std::span<const std::int32_t> cu_seqlens) {
  constexpr std::string_view api = "ulysses::gather_sequence";
  if (!comm.device().is_host()) {
    return unsupported(str_cat(api, ": device communicators are not supported yet (got ",
                               comm.backend_name(), ", expected a host communicator)"));
  }
  if (parallel.cp != comm.size()) {
    return arg_error(api, "parallel.cp", "differs from the communicator size", parallel.cp,
                     str_cat(comm.size(), " (comm.size())"));
  }
  if (scratch == nullptr) {
    return arg_error(api, "scratch", "is null", "nullptr", "cp * shard bytes of host memory");
  }
  const std::size_t bytes = static_cast<std::size_t>(shard.numel()) * dtype_size(shard.dtype);
  std::vector<char> packed(bytes);
  TensorView packed_view = shard;
  packed_view.data = packed.data();
  std::int64_t stride = 1;
  for (int d = shard.ndim - 1; d >= 0; --d) {
    packed_view.strides[static_cast<std::size_t>(d)] = stride;
    stride *= shard.size(d);
  }
  ULYSSES_RETURN_IF_ERROR(copy_tensor(packed_view, shard));
  ULYSSES_RETURN_IF_ERROR(comm.all_gather(packed.data(), scratch, bytes, stream));
  for (int r = 0; r < comm.size(); ++r) {
    TensorView src = packed_view;
    src.data = static_cast<char*>(scratch) + static_cast<std::size_t>(r) * bytes;
    ULYSSES_RETURN_IF_ERROR(place_shard(src, global, seq_dim, parallel, r, cu_seqlens));
  }
  return Status::ok();
}

Status validate_cu_seqlens(std::span<const std::int32_t> cu, std::int64_t total_tokens,
                           std::string_view api) {
  if (cu.size() < 2) {
    return arg_error(api, "cu_seqlens", "is too short", str_cat(cu.size(), " entries"),
                     ">= 2 entries (0, then the end of each sequence)");
  }
  if (cu[0] != 0) return arg_error(api, "cu_seqlens[0]", "must be 0", cu[0], "0");
  for (std::size_t i = 1; i < cu.size(); ++i) {
    if (cu[i] < cu[i - 1]) {
      return arg_error(api, str_cat("cu_seqlens[", i, "]"), "decreases", cu[i],
                       str_cat(">= cu_seqlens[", i - 1, "] = ", cu[i - 1]));
    }
  }
  if (cu.back() > total_tokens) {
    return arg_error(api, str_cat("cu_seqlens[", cu.size() - 1, "]"),
                     "exceeds the packed token count", cu.back(), str_cat("<= ", total_tokens));
  }
  return Status::ok();
}

Result<std::vector<std::int32_t>> shard_position_ids(Layout layout, std::int64_t seqlen,
                                                     std::span<const std::int32_t> cu_seqlens,
                                                     int cp, int rank) {
  constexpr std::string_view api = "ulysses::shard_position_ids";
  if (cp < 1) return arg_error(api, "cp", "must be positive", cp, ">= 1");
  if (rank < 0 || rank >= cp)
    return arg_error(api, "rank", "is out of range", rank, str_cat("0..", cp - 1));
  if (seqlen < 1 || seqlen % cp != 0) {
    return arg_error(api, "seqlen", str_cat("must be a positive multiple of cp ", cp), seqlen,
                     str_cat("a multiple of ", cp));
  }
  const std::int64_t len = seqlen / cp, first = rank * len;
  std::vector<std::int32_t> ids(static_cast<std::size_t>(len), 0);
  if (layout == Layout::kBSHD) {
    std::iota(ids.begin(), ids.end(), static_cast<std::int32_t>(first));
    return ids;
  }
  ULYSSES_RETURN_IF_ERROR(validate_cu_seqlens(cu_seqlens, seqlen, api));
  std::size_t seq = 0;
  for (std::int64_t i = 0; i < len; ++i) {
    const std::int64_t t = first + i;
    while (seq + 1 < cu_seqlens.size() && cu_seqlens[seq + 1] <= t) ++seq;
    if (seq + 1 < cu_seqlens.size()) {
      ids[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(t - cu_seqlens[seq]);
    }  // else padding: 0
  }
  return ids;
}

Result<std::int64_t> padded_token_count(std::span<const std::int32_t> cu_seqlens, int cp,
                                        int page_size) {
  constexpr std::string_view api = "ulysses::padded_token_count";
  if (cp < 1) return arg_error(api, "cp", "must be positive", cp, ">= 1");
  if (page_size < 0)
    return arg_error(api, "page_size", "is negative", page_size, ">= 0 (0: no pages)");
  if (cu_seqlens.empty()) return arg_error(api, "cu_seqlens", "is empty", 0, ">= 2 entries");
  ULYSSES_RETURN_IF_ERROR(validate_cu_seqlens(cu_seqlens, cu_seqlens.back(), api));
  const std::int64_t unit =
      page_size > 0 ? std::lcm(static_cast<std::int64_t>(cp), static_cast<std::int64_t>(page_size))
                    : cp;
  const std::int64_t total = std::max<std::int64_t>(cu_seqlens.back(), 1);
  return (total + unit - 1) / unit * unit;
}

Status pad_packed_tokens(const TensorView& src, const TensorView& dst) {
  constexpr std::string_view api = "ulysses::pad_packed_tokens";
  if (src.ndim != 3 || dst.ndim != 3 || src.size(1) != dst.size(1) || src.size(2) != dst.size(2) ||
      dst.size(0) < src.size(0)) {
    return arg_error(api, "dst", "cannot hold src plus padding", dst.to_string(),
                     str_cat("[>= ", src.size(0), ", ", src.size(1), ", ", src.size(2), "]"));
  }
  TensorView head = dst;
  head.shape[0] = src.size(0);
  ULYSSES_RETURN_IF_ERROR(copy_tensor(head, src));
  const std::size_t e = dtype_size(dst.dtype);
  for (std::int64_t t = src.size(0); t < dst.size(0); ++t) {
    for (std::int64_t h = 0; h < dst.size(1); ++h) {
      for (std::int64_t d = 0; d < dst.size(2); ++d) {
        std::memset(
            static_cast<char*>(dst.data) + dst.offset({t, h, d}) * static_cast<std::int64_t>(e), 0,
            e);
      }
    }
  }
  return Status::ok();
}

}  // namespace ulysses
