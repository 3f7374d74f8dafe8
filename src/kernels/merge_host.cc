// Host implementations of the merge operations (see merge.h), in FP64, rounded once on store.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common/check.h"
#include "common/dtype_convert.h"
#include "kernels/merge.h"

namespace ulysses::kernels::host {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

double ld(const TensorView& t, std::initializer_list<std::int64_t> idx) {
  return detail::load_as_double(t.data, t.dtype, t.offset(idx));
}
void st(const TensorView& t, std::initializer_list<std::int64_t> idx, double v) {
  detail::store_from_double(t.data, t.dtype, t.offset(idx), v);
}

Status same_shape(const TensorView& a, const TensorView& b, std::string_view what) {
  if (a.ndim != b.ndim || a.shape != b.shape) {
    return internal_error(detail::str_cat("ulysses::kernels::", what, ": shapes differ (",
                                          a.to_string(), " vs ", b.to_string(), ")"));
  }
  return Status::ok();
}

// Calls fn(b, s, h) for every row of a [B, S, H, D] view.
template <typename Fn>
void rows(const TensorView& t, Fn&& fn) {
  for (std::int64_t b = 0; b < t.size(0); ++b)
    for (std::int64_t s = 0; s < t.size(1); ++s)
      for (std::int64_t h = 0; h < t.size(2); ++h) fn(b, s, h);
}

double log_add_exp(double a, double b) {
  if (a == kNegInf) return b;
  if (b == kNegInf) return a;
  const double m = std::max(a, b);
  return m + std::log(std::exp(a - m) + std::exp(b - m));
}

}  // namespace

Status reset_partial(const TensorView& o_acc, const TensorView& lse_acc) {
  ULYSSES_RETURN_IF_ERROR(zero(o_acc));
  for (std::int64_t b = 0; b < lse_acc.size(0); ++b)
    for (std::int64_t h = 0; h < lse_acc.size(1); ++h)
      for (std::int64_t s = 0; s < lse_acc.size(2); ++s) st(lse_acc, {b, h, s}, kNegInf);
  return Status::ok();
}

Status merge_partial(const TensorView& o_acc, const TensorView& lse_acc, const TensorView& o_blk,
                     const TensorView& lse_blk) {
  ULYSSES_RETURN_IF_ERROR(same_shape(o_acc, o_blk, "merge_partial"));
  ULYSSES_RETURN_IF_ERROR(same_shape(lse_acc, lse_blk, "merge_partial"));
  const std::int64_t D = o_acc.size(3);
  rows(o_acc, [&](std::int64_t b, std::int64_t s, std::int64_t h) {
    const double la = ld(lse_acc, {b, h, s}), lb = ld(lse_blk, {b, h, s});
    if (lb == kNegInf) return;  // the block saw no key of this row
    const double m = log_add_exp(la, lb);
    const double wa = la == kNegInf ? 0.0 : std::exp(la - m), wb = std::exp(lb - m);
    for (std::int64_t d = 0; d < D; ++d) {
      st(o_acc, {b, s, h, d}, ld(o_acc, {b, s, h, d}) * wa + ld(o_blk, {b, s, h, d}) * wb);
    }
    st(lse_acc, {b, h, s}, m);
  });
  return Status::ok();
}

Status packed_chunk_tables(const std::int32_t* cu, int n, int non_empty, int ring,
                           std::int32_t* out) {
  const auto un = static_cast<std::size_t>(non_empty);
  std::int32_t start = 0;
  std::size_t s = 0;  // entry of the next non-empty sequence
  for (int i = 0; i < n; ++i) {
    const std::int32_t len = cu[i + 1] - cu[i];
    if (len <= 0) continue;
    if (s == un) return internal_error("packed_chunk_tables: more non-empty sequences than told");
    const std::int32_t c = (len + 2 * ring - 1) / (2 * ring);
    out[s] = start;
    for (int x = 0; x < 2 * ring; ++x) {
      out[static_cast<std::size_t>(1 + x) * un + s] = std::clamp(len - x * c, 0, c);
    }
    start += c;
    ++s;
  }
  if (s != un) return internal_error("packed_chunk_tables: fewer non-empty sequences than told");
  return Status::ok();
}

Status packed_pair_tables(const std::int32_t* t, int n, int qc, int kc, std::int64_t lo,
                          std::int64_t hi, PairPart part, std::int32_t* out) {
  if (qc == kc) return internal_error("packed_pair_tables: a chunk paired with itself");
  const auto un = static_cast<std::size_t>(n);
  for (std::size_t s = 0; s < un; ++s) {
    const PairRows r =
        pair_rows(t[s], t[un + s], t[static_cast<std::size_t>(1 + qc) * un + s],
                  t[static_cast<std::size_t>(1 + kc) * un + s], qc - kc, lo, hi, part);
    out[s] = r.q_begin;
    out[un + s] = r.q_len;
    out[2 * un + s] = r.kv_begin;
    out[3 * un + s] = r.kv_len;
  }
  return Status::ok();
}

Status finalize_partial(const TensorView& o_acc, const TensorView& lse_acc, const TensorView& sinks,
                        int head_offset, const TensorView& o, const TensorView& lse) {
  ULYSSES_RETURN_IF_ERROR(same_shape(o_acc, o, "finalize_partial"));
  const std::int64_t D = o_acc.size(3);
  rows(o_acc, [&](std::int64_t b, std::int64_t s, std::int64_t h) {
    const double la = ld(lse_acc, {b, h, s});
    double l = la, w = 1.0;
    if (!sinks.empty_view() && la != kNegInf) {  // -inf: padding (real rows see their own key)
      l = log_add_exp(
          la, detail::load_as_double(sinks.data, sinks.dtype, (head_offset + h) * sinks.stride(0)));
      w = la == kNegInf ? 0.0 : std::exp(la - l);
    }
    for (std::int64_t d = 0; d < D; ++d) st(o, {b, s, h, d}, ld(o_acc, {b, s, h, d}) * w);
    st(lse, {b, h, s}, l);
  });
  return Status::ok();
}

Status merge_stacked(const TensorView& o_parts, const TensorView& lse_parts, int parts,
                     std::int64_t o_part_stride, std::int64_t lse_part_stride,
                     const TensorView& sinks, int head_offset, const TensorView& o,
                     const TensorView& lse) {
  ULYSSES_RETURN_IF_ERROR(same_shape(o_parts, o, "merge_stacked"));
  const std::int64_t D = o.size(3);
  std::vector<double> l(static_cast<std::size_t>(std::max(parts, 0)));
  rows(o, [&](std::int64_t b, std::int64_t s, std::int64_t h) {
    const std::int64_t lse_at = lse_parts.offset({b, h, s}), o_at = o_parts.offset({b, s, h, 0});
    double m = kNegInf;
    for (int i = 0; i < parts; ++i) {
      l[static_cast<std::size_t>(i)] =
          detail::load_as_double(lse_parts.data, lse_parts.dtype, lse_at + i * lse_part_stride);
      m = std::max(m, l[static_cast<std::size_t>(i)]);
    }
    double sum = 0.0;
    for (int i = 0; m != kNegInf && i < parts; ++i) {
      const double li = l[static_cast<std::size_t>(i)];
      l[static_cast<std::size_t>(i)] = li == kNegInf ? 0.0 : std::exp(li - m);  // now a weight
      sum += l[static_cast<std::size_t>(i)];
    }
    double lse_out = m == kNegInf ? kNegInf : m + std::log(sum), scale = 0.0;
    if (m != kNegInf) {
      scale = 1.0 / sum;
      if (!sinks.empty_view()) {
        const double with_sink = log_add_exp(
            lse_out,
            detail::load_as_double(sinks.data, sinks.dtype, (head_offset + h) * sinks.stride(0)));
        scale *= std::exp(lse_out - with_sink);
        lse_out = with_sink;
      }
    }
    for (std::int64_t d = 0; d < D; ++d) {
      double acc = 0.0;
      for (int i = 0; m != kNegInf && i < parts; ++i) {
        const double w = l[static_cast<std::size_t>(i)];
        if (w != 0.0) {
          acc += w * detail::load_as_double(o_parts.data, o_parts.dtype,
                                            o_at + i * o_part_stride + d * o_parts.stride(3));
        }
      }
      st(o, {b, s, h, d}, acc * scale);
    }
    if (!lse.empty_view()) st(lse, {b, h, s}, lse_out);
  });
  return Status::ok();
}

Status read_back(const void* src, void* dst, std::size_t bytes) {
  if (bytes > 0) std::memcpy(dst, src, bytes);
  return Status::ok();
}

Status write_table(std::span<const std::int32_t> values, std::int32_t* dst) {
  std::copy(values.begin(), values.end(), dst);
  return Status::ok();
}

Status accumulate(const TensorView& acc, const TensorView& src) {
  ULYSSES_RETURN_IF_ERROR(same_shape(acc, src, "accumulate"));
  rows(acc, [&](std::int64_t b, std::int64_t s, std::int64_t h) {
    for (std::int64_t d = 0; d < acc.size(3); ++d) {
      st(acc, {b, s, h, d}, ld(acc, {b, s, h, d}) + ld(src, {b, s, h, d}));
    }
  });
  return Status::ok();
}

Status convert(const TensorView& dst, const TensorView& src) {
  ULYSSES_RETURN_IF_ERROR(same_shape(dst, src, "convert"));
  rows(dst, [&](std::int64_t b, std::int64_t s, std::int64_t h) {
    for (std::int64_t d = 0; d < dst.size(3); ++d) st(dst, {b, s, h, d}, ld(src, {b, s, h, d}));
  });
  return Status::ok();
}

Status zero(const TensorView& dst) {
  rows(dst, [&](std::int64_t b, std::int64_t s, std::int64_t h) {
    for (std::int64_t d = 0; d < dst.size(3); ++d) st(dst, {b, s, h, d}, 0.0);
  });
  return Status::ok();
}

Status sink_grad(const TensorView& o, const TensorView& d_o, const TensorView& lse,
                 const TensorView& sinks, int head_offset, const TensorView& dsinks) {
  ULYSSES_RETURN_IF_ERROR(same_shape(o, d_o, "sink_grad"));
  const std::int64_t B = o.size(0), S = o.size(1), H = o.size(2), D = o.size(3);
  for (std::int64_t h = 0; h < H; ++h) {
    const std::int64_t g = head_offset + h;
    const double sink = detail::load_as_double(sinks.data, sinks.dtype, g * sinks.stride(0));
    double sum = 0.0;
    for (std::int64_t b = 0; b < B; ++b) {
      for (std::int64_t s = 0; s < S; ++s) {
        const double l = ld(lse, {b, h, s});
        if (l == kNegInf) continue;
        double di = 0.0;
        for (std::int64_t d = 0; d < D; ++d) di += ld(d_o, {b, s, h, d}) * ld(o, {b, s, h, d});
        sum -= std::exp(sink - l) * di;
      }
    }
    detail::store_from_double(dsinks.data, dsinks.dtype, g * dsinks.stride(0), sum);
  }
  return Status::ok();
}

}  // namespace ulysses::kernels::host
