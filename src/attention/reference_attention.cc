// FP64 host reference attention (see include/ulysses/reference.h for the semantics).
//
// Legend: b batch, i query position, j key position, h query head (local), g key/value head
// (local), d head_dim. Everything is computed per query head, independently of which other heads
// are present: running a subset of heads gives bitwise the same numbers as running all of them.
// That is what lets Ulysses (which runs a slice of heads per rank) be held to exact equality with
// this reference.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "attention/local_checks.h"
#include "common/check.h"
#include "common/dtype_convert.h"
#include "ulysses/reference.h"

namespace ulysses {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// Visible key range [lo, hi] of every query position (hi < lo: none), from masks and packing.
struct KeyRanges {
  std::vector<std::int64_t> lo, hi;
  std::vector<char> padding;  // in no packed sequence: no keys, no sink, LSE = -inf
};

KeyRanges key_ranges(const LocalProblem& p, std::span<const std::int32_t> cu_seqlens,
                     const VarlenRows& rows) {
  const std::int64_t S = p.seqlen, Skv = p.kv_len();
  const auto n = static_cast<std::size_t>(S);
  KeyRanges r{std::vector<std::int64_t>(n), std::vector<std::int64_t>(n), std::vector<char>(n, 0)};
  // Keys [seg_start, seg_end) of each query row's sequence, and the row's position in key rows
  // (key row j is visible to the causal mask when j <= pos). Rows of no sequence are padding.
  std::vector<std::int64_t> seg_start(n, 0), seg_end(n, Skv), pos(n);
  for (std::int64_t i = 0; i < S; ++i) pos[static_cast<std::size_t>(i)] = i + p.diagonal_offset;
  if (p.varlen) {
    std::fill(seg_end.begin(), seg_end.end(), 0);  // padding: [0, 0) -> sees nothing
    std::fill(r.padding.begin(), r.padding.end(), 1);
    auto add = [&](std::int64_t q0, std::int64_t q_len, std::int64_t k0, std::int64_t k_len) {
      for (std::int64_t i = q0; i < q0 + q_len; ++i) {
        const auto iu = static_cast<std::size_t>(i);
        r.padding[iu] = 0;
        seg_start[iu] = k0;
        seg_end[iu] = k0 + k_len;
        pos[iu] = i - q0 + k0 + p.diagonal_offset + (p.bottom_right ? k_len - q_len : 0);
      }
    };
    if (p.varlen_rows) {
      for (int s = 0; s < rows.num_seqs(); ++s) {
        const auto su = static_cast<std::size_t>(s);
        add(rows.q_begin[su], rows.q_len[su], rows.kv_begin[su], rows.kv_len[su]);
      }
    } else {
      for (std::size_t s = 0; s + 1 < cu_seqlens.size(); ++s) {
        const std::int64_t len = cu_seqlens[s + 1] - cu_seqlens[s];
        add(cu_seqlens[s], len, cu_seqlens[s], len);
      }
    }
  }
  const AttentionConfig& c = p.config;
  for (std::int64_t i = 0; i < S; ++i) {
    const auto iu = static_cast<std::size_t>(i);
    std::int64_t lo = seg_start[iu], hi = seg_end[iu] - 1;
    if (c.window_left >= 0) lo = std::max(lo, pos[iu] - c.window_left);
    if (c.causal) hi = std::min(hi, pos[iu]);
    if (c.window_right >= 0) hi = std::min(hi, pos[iu] + c.window_right);
    r.lo[iu] = lo;
    r.hi[iu] = hi;
  }
  return r;
}

// Loads view[b, :, head, :] as a dense FP64 [S][D] matrix.
std::vector<double> load_head(const TensorView& t, std::int64_t b, std::int64_t head) {
  const std::int64_t S = t.size(1), D = t.size(3);
  std::vector<double> out(static_cast<std::size_t>(S * D));
  for (std::int64_t i = 0; i < S; ++i) {
    for (std::int64_t d = 0; d < D; ++d) {
      out[static_cast<std::size_t>(i * D + d)] =
          detail::load_as_double(t.data, t.dtype, t.offset({b, i, head, d}));
    }
  }
  return out;
}

// Writes one head; with `add`, adds the values (rounded to t's dtype first, as a kernel that
// writes its result and then sums it would) to what t holds.
void store_head(const TensorView& t, std::int64_t b, std::int64_t head,
                const std::vector<double>& values, bool add = false) {
  const std::int64_t S = t.size(1), D = t.size(3);
  for (std::int64_t i = 0; i < S; ++i) {
    for (std::int64_t d = 0; d < D; ++d) {
      const std::int64_t at = t.offset({b, i, head, d});
      double v = values[static_cast<std::size_t>(i * D + d)];
      if (add) v = detail::load_as_double(t.data, t.dtype, at) + detail::round_to_dtype(v, t.dtype);
      detail::store_from_double(t.data, t.dtype, at, v);
    }
  }
}

double dot(const double* a, const double* b, std::int64_t n) {
  double s = 0.0;
  for (std::int64_t d = 0; d < n; ++d) s += a[d] * b[d];
  return s;
}

// Softmax statistics and output of one head, all in FP64.
struct HeadForward {
  std::vector<double> o;    // [S][D]
  std::vector<double> lse;  // [S]
};

HeadForward head_forward(const LocalProblem& p, const KeyRanges& kr, const std::vector<double>& q,
                         const std::vector<double>& k, const std::vector<double>& v,
                         std::optional<double> sink) {
  const std::int64_t S = p.seqlen, D = p.config.head_dim, Dv = p.config.value_dim();
  const double scale = p.config.scale();
  HeadForward f{std::vector<double>(static_cast<std::size_t>(S * Dv), 0.0),
                std::vector<double>(static_cast<std::size_t>(S), kNegInf)};
  std::vector<double> logits(static_cast<std::size_t>(p.kv_len()));
  for (std::int64_t i = 0; i < S; ++i) {
    const auto iu = static_cast<std::size_t>(i);
    const std::int64_t lo = kr.lo[iu], hi = kr.hi[iu];
    const bool padding = kr.padding[iu] != 0;
    double m = (sink && !padding) ? *sink : kNegInf;
    for (std::int64_t j = lo; j <= hi; ++j) {
      const double s = scale * dot(&q[iu * D], &k[static_cast<std::size_t>(j * D)], D);
      logits[static_cast<std::size_t>(j)] = s;
      m = std::max(m, s);
    }
    if (m == kNegInf) continue;  // sees no key and no sink: O = 0, LSE = -inf
    double l = (sink && !padding) ? std::exp(*sink - m) : 0.0;
    double* o = &f.o[iu * static_cast<std::size_t>(Dv)];
    for (std::int64_t j = lo; j <= hi; ++j) {
      const double w = std::exp(logits[static_cast<std::size_t>(j)] - m);
      l += w;
      const double* vj = &v[static_cast<std::size_t>(j * Dv)];
      for (std::int64_t d = 0; d < Dv; ++d) o[d] += w * vj[d];
    }
    for (std::int64_t d = 0; d < Dv; ++d) o[d] /= l;
    f.lse[iu] = m + std::log(l);
  }
  return f;
}

// O and LSE of head h as the caller passed them (the statistics of the whole row).
HeadForward given_stats(const LocalProblem& p, const LocalBackwardArgs& a, std::int64_t b, int h) {
  HeadForward f{load_head(a.o, b, h), std::vector<double>(static_cast<std::size_t>(p.seqlen))};
  for (std::int64_t i = 0; i < p.seqlen; ++i) {
    f.lse[static_cast<std::size_t>(i)] =
        detail::load_as_double(a.lse.data, DType::kFloat32, a.lse.offset({b, h, i}));
  }
  return f;
}

int kv_head_of(const LocalProblem& p, int h_local) {
  const int ratio = p.config.num_heads_q / p.config.num_heads_kv;
  return (p.head_offset_q + h_local) / ratio - p.head_offset_kv;
}

std::optional<double> sink_of(const LocalProblem& p, const TensorView& sinks, int h_local) {
  if (!p.config.sinks) return std::nullopt;
  return detail::load_as_double(sinks.data, sinks.dtype,
                                (p.head_offset_q + h_local) * sinks.stride(0));
}

class ReferenceAttention final : public LocalAttention {
 public:
  std::string_view name() const override { return "reference-fp64"; }
  Device device() const override { return Device::host(); }
  bool provides_lse() const override { return true; }
  bool supports_backward() const override { return true; }
  bool accumulates_grads() const override { return true; }
  Status check_support(const LocalProblem& problem) const override {
    return detail::check_local_problem(problem, "ulysses::ReferenceAttention");
  }

  Status forward(const LocalProblem& p, const LocalForwardArgs& a, Stream) override {
    ULYSSES_RETURN_IF_ERROR(detail::check_local_forward_args(
        p, a, Device::host(), "ulysses::ReferenceAttention::forward"));
    const KeyRanges kr = key_ranges(p, a.cu_seqlens, a.rows);
    for (std::int64_t b = 0; b < p.batch; ++b) {
      for (int g = 0; g < p.num_heads_kv_local; ++g) {
        const std::vector<double> k = load_head(a.k, b, g), v = load_head(a.v, b, g);
        for (int h = 0; h < p.num_heads_q_local; ++h) {
          if (kv_head_of(p, h) != g) continue;
          const HeadForward f =
              head_forward(p, kr, load_head(a.q, b, h), k, v, sink_of(p, a.sinks, h));
          store_head(a.o, b, h, f.o);
          if (!a.lse.empty_view()) {
            for (std::int64_t i = 0; i < p.seqlen; ++i) {
              detail::store_from_double(a.lse.data, DType::kFloat32, a.lse.offset({b, h, i}),
                                        f.lse[static_cast<std::size_t>(i)]);
            }
          }
        }
      }
    }
    return Status::ok();
  }

  // Recomputes O and LSE in FP64 (it does not trust the rounded forward outputs; for a block of a
  // longer row, partial_keys, it takes them as given since this block alone cannot produce them),
  // then
  //   P = exp(S - LSE), dV = P^T dO, dP = dO V^T, Di = rowsum(dO * O), dS = P (dP - Di),
  //   dQ = scale dS K, dK = scale dS^T Q, dSink = -sum_i exp(sink - LSE_i) Di.
  // dK/dV of a key/value head accumulate over its query heads in head order, in FP64.
  Status backward(const LocalProblem& p, const LocalBackwardArgs& a, Stream) override {
    ULYSSES_RETURN_IF_ERROR(detail::check_local_backward_args(
        p, a, Device::host(), /*needs_o_lse=*/false, "ulysses::ReferenceAttention::backward"));
    const std::int64_t S = p.seqlen, Skv = p.kv_len(), D = p.config.head_dim,
                       Dv = p.config.value_dim();
    const double scale = p.config.scale();
    const KeyRanges kr = key_ranges(p, a.cu_seqlens, a.rows);
    std::vector<double> dsink(static_cast<std::size_t>(p.num_heads_q_local), 0.0);
    for (std::int64_t b = 0; b < p.batch; ++b) {
      for (int g = 0; g < p.num_heads_kv_local; ++g) {
        const std::vector<double> k = load_head(a.k, b, g), v = load_head(a.v, b, g);
        std::vector<double> dk(static_cast<std::size_t>(Skv * D), 0.0),
            dv(static_cast<std::size_t>(Skv * Dv), 0.0);
        for (int h = 0; h < p.num_heads_q_local; ++h) {
          if (kv_head_of(p, h) != g) continue;
          const std::vector<double> q = load_head(a.q, b, h), d_o = load_head(a.d_o, b, h);
          const std::optional<double> sink = sink_of(p, a.sinks, h);
          const HeadForward f =
              p.partial_keys ? given_stats(p, a, b, h) : head_forward(p, kr, q, k, v, sink);
          std::vector<double> dq(static_cast<std::size_t>(S * D), 0.0);
          for (std::int64_t i = 0; i < S; ++i) {
            const auto iu = static_cast<std::size_t>(i);
            const double lse = f.lse[iu];
            if (lse == kNegInf) continue;
            const double* doi = &d_o[iu * static_cast<std::size_t>(Dv)];
            const double di = dot(doi, &f.o[iu * static_cast<std::size_t>(Dv)], Dv);
            if (sink) dsink[static_cast<std::size_t>(h)] -= std::exp(*sink - lse) * di;
            const double* qi = &q[iu * static_cast<std::size_t>(D)];
            for (std::int64_t j = kr.lo[iu]; j <= kr.hi[iu]; ++j) {
              const auto jo = static_cast<std::size_t>(j * D),
                         jv = static_cast<std::size_t>(j * Dv);
              const double pij = std::exp(scale * dot(qi, &k[jo], D) - lse);
              const double dpij = dot(doi, &v[jv], Dv);
              const double dsij = pij * (dpij - di);
              for (std::int64_t d = 0; d < Dv; ++d)
                dv[jv + static_cast<std::size_t>(d)] += pij * doi[d];
              for (std::int64_t d = 0; d < D; ++d) {
                dq[iu * static_cast<std::size_t>(D) + static_cast<std::size_t>(d)] +=
                    scale * dsij * k[jo + static_cast<std::size_t>(d)];
                dk[jo + static_cast<std::size_t>(d)] += scale * dsij * qi[d];
              }
            }
          }
          store_head(a.dq, b, h, dq, p.accumulate_dq);
        }
        store_head(a.dk, b, g, dk, p.accumulate_dkv);
        store_head(a.dv, b, g, dv, p.accumulate_dkv);
      }
    }
    if (p.config.sinks) {
      for (int h = 0; h < p.num_heads_q_local; ++h) {
        detail::store_from_double(a.dsinks.data, DType::kFloat32,
                                  (p.head_offset_q + h) * a.dsinks.stride(0),
                                  dsink[static_cast<std::size_t>(h)]);
      }
    }
    return Status::ok();
  }
};

}  // namespace

std::unique_ptr<LocalAttention> make_reference_attention() {
  return std::make_unique<ReferenceAttention>();
}

Status reference_forward(const LocalProblem& problem, const LocalForwardArgs& args) {
  ReferenceAttention ref;
  return ref.forward(problem, args, nullptr);
}

Status reference_backward(const LocalProblem& problem, const LocalBackwardArgs& args) {
  ReferenceAttention ref;
  return ref.backward(problem, args, nullptr);
}

LocalProblem LocalProblem::unsharded(const AttentionConfig& config, DType dtype, std::int64_t batch,
                                     std::int64_t seqlen, bool varlen) {
  LocalProblem p;
  p.config = config;
  p.dtype = dtype;
  p.batch = batch;
  p.seqlen = seqlen;
  p.varlen = varlen;
  p.head_offset_q = 0;
  p.num_heads_q_local = config.num_heads_q;
  p.head_offset_kv = 0;
  p.num_heads_kv_local = config.num_heads_kv;
  p.grad_kv_dtype = dtype;
  return p;
}

}  // namespace ulysses
