// Test helpers: owning host tensors, fresh random inputs, NaN poisoning, bitwise and numeric
// comparisons that name the first mismatch, and a runner for N loopback ranks on N threads.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/dtype_convert.h"
#include "common/host_tensor.h"
#include "ulysses/ulysses.h"

namespace ulysses::testing {

using detail::HostTensor;

/// A fresh seed per check (printed by SCOPED_TRACE so a failure can be replayed).
inline std::uint64_t fresh_seed() {
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
}

/// Uniform values in [lo, hi), rounded to the tensor's dtype.
inline void fill_uniform(HostTensor& t, std::mt19937_64& rng, double lo = -1.0, double hi = 1.0) {
  std::uniform_real_distribution<double> dist(lo, hi);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.set(i, dist(rng));
}

/// Fills every element with NaN (so an element an operation forgot to write is caught).
inline void poison(HostTensor& t) {
  for (std::int64_t i = 0; i < t.numel(); ++i) t.set(i, std::nan(""));
}

/// Same dtype and shape, converted element by element (e.g. bf16 inputs as fp64 for the truth).
/// The view without its leading dimension (of size 1): [1, S, H, D] -> [S, H, D] (layout thd),
/// [1, H, S] -> [H, S].
inline TensorView drop_dim0(const TensorView& v) {
  TensorView out = v;
  out.ndim = v.ndim - 1;
  for (int d = 0; d + 1 < v.ndim; ++d) {
    out.shape[static_cast<std::size_t>(d)] = v.shape[static_cast<std::size_t>(d + 1)];
    out.strides[static_cast<std::size_t>(d)] = v.strides[static_cast<std::size_t>(d + 1)];
  }
  out.shape[static_cast<std::size_t>(v.ndim - 1)] = 0;
  out.strides[static_cast<std::size_t>(v.ndim - 1)] = 0;
  return out;
}

/// Entry b of a view's leading (batch) dimension, as a view of size 1 there: [B, ..] -> [1, ..].
inline TensorView batch_entry(TensorView v, std::int64_t b) {
  v.data =
      static_cast<char*>(v.data) + b * v.stride(0) * static_cast<std::int64_t>(dtype_size(v.dtype));
  v.shape[0] = 1;
  return v;
}

inline HostTensor convert(const HostTensor& src, DType dtype) {
  HostTensor out;
  out.storage.assign(static_cast<std::size_t>(src.numel()) * dtype_size(dtype), 0);
  out.view = src.view;
  out.view.dtype = dtype;
  out.view.data = out.storage.data();
  for (std::int64_t i = 0; i < src.numel(); ++i) out.set(i, src.at(i));
  return out;
}

// `inner` (a host communicator) reporting a GPU as its device: reaches the refusals of device
// communicators without one.
struct ClaimsGpu final : ForwardingCommunicator {
  using ForwardingCommunicator::ForwardingCommunicator;
  Device device() const override { return Device::cuda(0); }
};

struct Mismatch {
  std::int64_t count = 0;
  std::int64_t first = -1;
  double expected = 0, got = 0;
  double max_abs = 0;
};

/// Bitwise comparison of two contiguous tensors of one dtype (NaN == NaN only if same bits).
inline Mismatch compare_bits(const HostTensor& expected, const HostTensor& got) {
  Mismatch m;
  const std::size_t e = dtype_size(expected.view.dtype);
  for (std::int64_t i = 0; i < expected.numel(); ++i) {
    if (std::memcmp(&expected.storage[static_cast<std::size_t>(i) * e],
                    &got.storage[static_cast<std::size_t>(i) * e], e) != 0) {
      if (m.count == 0) {
        m.first = i;
        m.expected = expected.at(i);
        m.got = got.at(i);
      }
      ++m.count;
      m.max_abs = std::max(m.max_abs, std::fabs(expected.at(i) - got.at(i)));
    }
  }
  return m;
}

inline std::string describe(const Mismatch& m, const std::string& what) {
  std::ostringstream os;
  os << what << ": " << m.count << " elements differ; first at flat index " << m.first
     << " (expected " << m.expected << ", got " << m.got << "), max |diff| " << m.max_abs;
  return os.str();
}

#define EXPECT_BITWISE_EQ(expected, got, what)                                                   \
  do {                                                                                           \
    const ::ulysses::testing::Mismatch m_ = ::ulysses::testing::compare_bits((expected), (got)); \
    EXPECT_EQ(m_.count, 0) << ::ulysses::testing::describe(m_, (what));                          \
  } while (0)

// What Payload::kFp8 delivers for `t` (contiguous, head_dim last): every row of D values (or of
// `row` values, a divisor of D: head_dim_v != head_dim scales rows of gcd(head_dim, head_dim_v))
// rounded to E4M3 under the smallest power-of-two scale 2^k (|k| <= 127) with max |row| <= 448 *
// 2^k, then to t's dtype. Modelled from the definition, independently of the library's pack
// kernels.
inline HostTensor fp8_rounded(const HostTensor& t, std::int64_t row_values = 0) {
  HostTensor r = convert(t, t.view.dtype);
  const std::int64_t D = row_values > 0 ? row_values : t.view.shape[t.view.ndim - 1];
  for (std::int64_t row = 0; row < t.numel() / D; ++row) {
    double amax = 0.0;
    for (std::int64_t d = 0; d < D; ++d) amax = std::max(amax, std::fabs(t.at(row * D + d)));
    int k = 0;
    if (amax > 0.0) {
      k = static_cast<int>(std::ceil(std::log2(amax / 448.0)));
      while (std::ldexp(448.0, k) < amax) ++k;
      while (std::ldexp(448.0, k - 1) >= amax) --k;
      k = std::clamp(k, -127, 127);
    }
    for (std::int64_t d = 0; d < D; ++d) {
      const double code =
          detail::round_to_dtype(std::ldexp(t.at(row * D + d), -k), DType::kFloat8E4M3);
      r.set(row * D + d, detail::round_to_dtype(std::ldexp(code, k), t.view.dtype));
    }
  }
  return r;
}

/// max |a - b| over elements (inf if a NaN appears in b where a is not NaN).
inline double max_abs_diff(const HostTensor& a, const HostTensor& b) {
  double m = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    const double x = a.at(i), y = b.at(i);
    if (std::isnan(x) != std::isnan(y)) return INFINITY;
    if (std::isinf(x) || std::isinf(y)) {
      if (x != y) return INFINITY;
      continue;
    }
    m = std::max(m, std::fabs(x - y));
  }
  return m;
}

inline double max_abs(const HostTensor& a) {
  double m = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    if (std::isfinite(a.at(i))) m = std::max(m, std::fabs(a.at(i)));
  }
  return m;
}

inline std::int64_t count_nan(const HostTensor& a) {
  std::int64_t n = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) n += std::isnan(a.at(i)) ? 1 : 0;
  return n;
}

/// STYLE.md's rule for results that cannot be bitwise: max|out - ref| <= 2 max|plain - ref| +
/// floor, with ref in FP64 and plain a straightforward same-dtype computation.
inline ::testing::AssertionResult within_2x_rule(const HostTensor& out, const HostTensor& plain,
                                                 const HostTensor& ref64, double floor) {
  const double e_out = max_abs_diff(out, ref64), e_plain = max_abs_diff(plain, ref64);
  if (e_out <= 2 * e_plain + floor) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "max|out - ref| = " << e_out << " > 2 * max|plain - ref| (" << e_plain << ") + floor ("
         << floor << ")";
}

/// Half the spacing of `dtype`'s values relative to a magnitude (2^-(mantissa bits + 1)): the most
/// one rounding to it moves a value, relative. 0 for fp32 and fp64 (their tests' floors cover it).
inline double half_ulp(DType dtype) {
  if (dtype == DType::kBFloat16) return 0x1p-8;
  if (dtype == DType::kFloat16) return 0x1p-11;
  return 0;
}

/// dSinks[h] = -sum_i exp(sink_h - LSE_i) (dO_i . O_i). A kernel may take O_i as the rounded output
/// (a call given its statistics) or recompute it exactly (the reference on a call that sees every
/// key), and ring and all-gather plans mix such calls row by row, so their dSinks error is bounded
/// by what O's rounding moves each term, summed over rows, not by a multiple of one whole-rounded
/// run's error (whose row errors may cancel): max over h of sum_i exp(sink_h - LSE_i) |dO_i .
/// (rounded_i - exact_i)|. Activations [B, S, H, D], lse [B, H, S] (rows with a non-finite LSE,
/// padding, are skipped), sinks [H].
inline double dsinks_rounding_bound(const HostTensor& d_o, const HostTensor& rounded,
                                    const HostTensor& exact, const HostTensor& lse,
                                    const HostTensor& sinks) {
  const std::int64_t B = d_o.view.size(0), S = d_o.view.size(1), H = d_o.view.size(2),
                     D = d_o.view.size(3);
  double bound = 0;
  for (std::int64_t h = 0; h < H; ++h) {
    double sum = 0;
    for (std::int64_t b = 0; b < B; ++b) {
      for (std::int64_t i = 0; i < S; ++i) {
        const double l = lse.at((b * H + h) * S + i);
        if (!std::isfinite(l)) continue;
        double moved = 0;
        for (std::int64_t d = 0; d < D; ++d) {
          const std::int64_t at = ((b * S + i) * H + h) * D + d;
          moved += d_o.at(at) * (rounded.at(at) - exact.at(at));
        }
        sum += std::exp(sinks.at(h) - l) * std::fabs(moved);
      }
    }
    bound = std::max(bound, sum);
  }
  return bound;
}

/// `heads` heads of head_dim D starting `offset` elements into rows of `row` elements per token of
/// a buffer at `base`, `shift` elements past it: [B, S, heads, D] (kBSHD) or [S, heads, D] (kTHD),
/// as a fused projection hands Q, K or V over (rows of heads of two widths with head_dim_v).
/// Host or device memory (the view's `device`).
inline TensorView row_slice(void* base, DType dtype, Layout layout, std::int64_t B, std::int64_t S,
                            std::int64_t row, std::int64_t offset, int heads, int D,
                            std::int64_t shift = 0, Device device = Device::host()) {
  void* at =
      static_cast<char*>(base) + (shift + offset) * static_cast<std::int64_t>(dtype_size(dtype));
  if (layout == Layout::kTHD) {
    return TensorView::strided(at, dtype, {S, heads, D}, {row, D, 1}, device);
  }
  return TensorView::strided(at, dtype, {B, S, heads, D}, {S * row, row, D, 1}, device);
}

/// Heads [h0, h0 + heads) of a buffer at `base` holding `channels` heads of head_dim D per token
/// (row_slice()).
inline TensorView head_slice(void* base, DType dtype, Layout layout, std::int64_t B, std::int64_t S,
                             int channels, int h0, int heads, int D, std::int64_t shift = 0,
                             Device device = Device::host()) {
  return row_slice(base, dtype, layout, B, S, static_cast<std::int64_t>(channels) * D,
                   static_cast<std::int64_t>(h0) * D, heads, D, shift, device);
}

/// Element i of `like`'s (contiguous) index order, as an offset into the strided host view `v`
/// of the same shape.
inline std::int64_t strided_offset(const TensorView& v, const HostTensor& like, std::int64_t i) {
  std::int64_t at = 0;
  for (int d = like.view.ndim - 1; d >= 0; --d) {
    at += i % like.view.size(d) * v.stride(d);
    i /= like.view.size(d);
  }
  return at;
}
/// `src` into the strided host view `dst` of the same shape and dtype, element by element.
inline void copy_into(const TensorView& dst, const HostTensor& src) {
  for (std::int64_t i = 0; i < src.numel(); ++i) {
    detail::store_from_double(dst.data, dst.dtype, strided_offset(dst, src, i), src.at(i));
  }
}
/// The strided host view `v` as a contiguous tensor shaped like `like`.
inline HostTensor copy_of(const TensorView& v, const HostTensor& like) {
  HostTensor out = like;
  for (std::int64_t i = 0; i < out.numel(); ++i) {
    out.set(i, detail::load_as_double(v.data, v.dtype, strided_offset(v, like, i)));
  }
  return out;
}

/// Runs fn(rank, comm) on `size` threads with a fresh loopback group; returns each rank's Status.
inline std::vector<Status> run_ranks(int size, const std::function<Status(int, Communicator&)>& fn,
                                     LoopbackOptions options = {}) {
  auto comms = create_loopback_group(size, options);
  EXPECT_TRUE(comms.is_ok()) << comms.status().to_string();
  std::vector<Status> out(static_cast<std::size_t>(size));
  if (!comms.is_ok()) return out;
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      out[static_cast<std::size_t>(r)] = fn(r, *(*comms)[static_cast<std::size_t>(r)]);
    });
  }
  for (auto& t : threads) t.join();
  return out;
}

#define EXPECT_ALL_OK(statuses)                                                   \
  do {                                                                            \
    const auto& s_ = (statuses);                                                  \
    for (std::size_t r_ = 0; r_ < s_.size(); ++r_) {                              \
      EXPECT_TRUE(s_[r_].is_ok()) << "rank " << r_ << ": " << s_[r_].to_string(); \
    }                                                                             \
  } while (0)

}  // namespace ulysses::testing
