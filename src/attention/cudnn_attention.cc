// cuDNN fused attention (SDPA) through cudnn-frontend, as a LocalAttention.
//
// Views map straight onto cuDNN's [B, H, S, D] tensors through strides: an activation view
// [B, S, H, D] with strides (sb, ss, sh, sd) is the cuDNN tensor dims {B, H, S, D}, strides
// {sb, sh, ss, sd}. So Ulysses' receive buffer is read in place and gradients land in place.
//
// Packed (varlen) batches use cuDNN's ragged layout: B = number of sequences (rounded up to a power
// of two with empty tail sequences, so that a few graphs serve every batch), S = longest sequence
// (rounded up likewise), and per-sequence ragged offsets cu_seqlens[i] * token_stride computed on
// the device, int64 (cuDNN >= 9.5), so a packed tensor may span more than 2^31 elements (backward
// runs such a batch as several calls: see backward_groups()). Tokens past cu_seqlens.back() are
// written here: O, dQ, dK, dV = 0, LSE = -inf.
// VarlenRows (ring blocks) use the same layout with query-side offsets (Q, O, dO, dQ, LSE) and
// key-side offsets (K, V, dK, dV) of their own; rows outside every sequence are written as zeros
// (and -inf) before the graph runs, and a sequence with no query or no key rows is given none of
// either (cuDNN is not asked about empty softmax rows; their answer, O = 0 and LSE = -inf, is the
// prefill).
// Sinks never reach cuDNN: its graphs run without them, forward folds them into O and the LSE
// afterwards (kernels::finalize_partial), backward takes dSinks from kernels::sink_grad. cuDNN's
// own sink token was slower (packed: 1.6-2.8x a step; dense, window 128: +79%) and its ragged
// backward with one is wrong before 9.26; see forward() and docs/PERF.md, "Sinks outside cuDNN".
//
// Masks: cuDNN's top-left diagonal band (see cudnn_band()): causal is right bound 0, window_left w
// is left bound w + 1 (cuDNN keeps keys j > i - bound), window_right w is right bound w; a block's
// diagonal_offset D shifts both (right + D, left - D). LocalProblem::bottom_right is cuDNN's
// bottom-right alignment with the same bounds (each sequence's seq_len_kv - seq_len_q added).
//
// Graphs are built on first use of a descriptor (shape, strides, masks, dtypes) and cached.
#include <cudnn.h>
#include <cudnn_frontend.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>

#include "attention/call_parts.h"
#include "attention/cudnn_support.h"
#include "attention/local_checks.h"
#include "common/cuda_check.h"
#include "common/tensor_rows.h"
#include "kernels/attention_aux.h"
#include "kernels/elementwise.h"
#include "kernels/merge.h"
#include "ulysses/gpu.h"

namespace ulysses {
namespace {

namespace fe = cudnn_frontend;
using detail::str_cat;

constexpr std::string_view kApi = "ulysses::CudnnAttention";

enum Uid : std::int64_t {
  kQ = 1,
  kK,
  kV,
  kO,
  kStats,
  kDO,
  kDQ,
  kDK,
  kDV,
  kSeqQ,
  kSeqKV,
  kRagged = 100,  // kRagged + tensor uid: that tensor's ragged offsets
};

constexpr std::size_t kAlign = 256;
std::size_t align_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

fe::DataType_t fe_type(DType t) {
  switch (t) {
    case DType::kFloat16:
      return fe::DataType_t::HALF;
    case DType::kBFloat16:
      return fe::DataType_t::BFLOAT16;
    case DType::kFloat32:
      return fe::DataType_t::FLOAT;
    default:
      return fe::DataType_t::NOT_SET;
  }
}

using detail::next_pow2;

// Geometry of a packed batch for one call.
struct Varlen {
  bool on = false;
  bool rows = false;  // VarlenRows instead of cu_seqlens
  int num_seqs = 0;
  std::int64_t padded = 1;   // cuDNN batch
  std::int64_t max_len = 1;  // cuDNN S
  std::int64_t valid = 0;    // cu_seqlens.back()
  // VarlenRows whose query ranges tile every query row, each with keys: cuDNN writes every row of
  // O and LSE, so forward needs no prefill (decoding's open pieces).
  bool q_rows_covered = false;
};

// A backward call's views as cuDNN is given them (staged or the caller's).
struct BackwardViews {
  TensorView q, k, v, o, d_o, lse, dq, dk, dv;
};

// One tensor as cuDNN sees it.
struct TensorDesc {
  std::vector<std::int64_t> dim, stride;
};

std::ostream& operator<<(std::ostream& os, const TensorDesc& d) {
  for (auto x : d.dim) os << x << ",";
  os << "/";
  for (auto x : d.stride) os << x << ",";
  return os;
}

TensorDesc act_desc(const TensorView& v, const Varlen& vl) {
  if (!vl.on)
    return {{v.size(0), v.size(2), v.size(1), v.size(3)},
            {v.stride(0), v.stride(2), v.stride(1), v.stride(3)}};
  return {{vl.padded, v.size(2), vl.max_len, v.size(3)},
          {vl.max_len * v.stride(1), v.stride(2), v.stride(1), v.stride(3)}};
}

TensorDesc lse_desc(const TensorView& v, const Varlen& vl) {
  if (!vl.on)
    return {{v.size(0), v.size(1), v.size(2), 1}, {v.stride(0), v.stride(1), v.stride(2), 1}};
  return {{vl.padded, v.size(1), vl.max_len, 1},
          {vl.max_len * v.stride(2), v.stride(1), v.stride(2), 1}};
}

// Token strides of the ragged tensors and the side whose row starts they scale (0: queries, 1:
// keys; VarlenRows only), deduplicated: each tensor points at one offsets row.
struct RaggedRows {
  std::vector<std::int64_t> strides;
  std::vector<int> sides;
  int row(std::int64_t stride, int side = 0) {
    for (std::size_t k = 0; k < strides.size(); ++k) {
      if (strides[k] == stride && sides[k] == side) return static_cast<int>(k);
    }
    strides.push_back(stride);
    sides.push_back(side);
    return static_cast<int>(strides.size()) - 1;
  }
};

struct BuiltGraph {
  std::shared_ptr<fe::graph::Graph> graph;
  std::int64_t workspace = 0;
};

class CudnnAttention final : public LocalAttention {
 public:
  CudnnAttention(int device, CudnnOptions options, cudnnHandle_t handle, int sms, int cc_major)
      : device_(device), options_(options), sms_(sms), cc_major_(cc_major), handle_(handle) {}
  ~CudnnAttention() override {
    cudaSetDevice(device_);
    if (overflow_) cudaFree(overflow_);
    if (stage_) cudaFree(stage_);
    cache_.clear();
    cudnnDestroy(handle_);
  }

  std::string_view name() const override { return detail::kCudnnKernelName; }
  Device device() const override { return Device::cuda(device_); }
  bool provides_lse() const override { return true; }
  bool supports_backward() const override { return true; }
  bool accumulates_grads() const override { return true; }
  // A dense call touches only its arguments, its workspace and the cached graphs (read-only once
  // built); a packed one may grow overflow_ and stage_ (dK, dV in wide rows), and a dense one
  // whose K, O or dO views reach past 2^31 elements stage_, which every call shares (below
  // kConcurrentWaves its tensors hold under 2^25 elements: only views 64x wider than their own rows
  // could). Worth a second workspace only while one call's 128-row query tiles fill the SMs fewer
  // than kConcurrentWaves times: on one H200 at 8k tokens, two 8-head calls (3.9 waves) one after
  // another took 14% longer than one 16-head call and the same on two streams; at 32k (15.5 waves)
  // two streams gained nothing.
  bool concurrent_calls(const LocalProblem& p) const override {
    const std::int64_t tiles = p.batch * p.num_heads_q_local * ((p.seqlen + 127) / 128);
    return !p.varlen && tiles < kConcurrentWaves * sms_;
  }
  static constexpr std::int64_t kConcurrentWaves = 6;

  // Forward's needs, then backward's when the problem will run backward too: a training plan is
  // refused when it is created, not after its first forward (rules: cudnn_support.h).
  Status check_support(const LocalProblem& p) const override {
    ULYSSES_RETURN_IF_ERROR(detail::cudnn_forward_support(p, target()));
    if (!p.backward) return Status::ok();
    ULYSSES_RETURN_IF_ERROR(detail::cudnn_backward_support(p, target()));
    for (const Band& b : detail::causal_bands(p)) ULYSSES_RETURN_IF_ERROR(check_support(b.problem));
    return Status::ok();
  }

  // A backward under a window that is not causal runs as bands (detail::causal_bands()).
  using Band = detail::CausalBand;

  detail::CudnnTarget target() const { return {static_cast<int>(cudnnGetVersion()), cc_major_}; }

  // Whether cudnn-frontend sizes a packed backward's fp32 workspace tensors by the packed tokens
  // (cudnn_support.h); otherwise by padded batch x longest sequence rows, which for many short
  // sequences beside a long one is many times the tokens.
  bool ragged_sized_workspace(const LocalProblem& p) const {
    return detail::cudnn_packed_workspace_follows_tokens(p.config.head_dim, p.config.value_dim(),
                                                         target());
  }
  // Where it does not: the graph rows a packed backward call may span, those of one sequence as
  // long as the call (the canonical graph's, which sized the workspace).
  static std::int64_t row_budget(const LocalProblem& p) {
    return detail::packed_slots(1, std::max(p.seqlen, p.kv_len()));
  }

  // A dense call with one query and one key row: its backward is kernels::cuda::one_key_backward
  // (cuDNN's takes no such graph).
  static bool one_key(const LocalProblem& p) {
    return !p.varlen && p.seqlen == 1 && p.kv_len() == 1;
  }

  std::size_t held_bytes() const override { return overflow_bytes_ + stage_bytes_; }
  // What cached() has built (cudnn_graph_stats()).
  const CudnnGraphStats& graph_stats() const { return stats_; }
  Status release_held(Stream stream) override {
    ULYSSES_CUDA_CHECK(cudaSetDevice(device_));
    ULYSSES_RETURN_IF_ERROR(drop(overflow_, overflow_bytes_, stream));
    return drop(stage_, stage_bytes_, stream);
  }
  // Frees a grow-only buffer in stream order (grow() allocates it again when a call needs it).
  static Status drop(void*& buf, std::size_t& size, Stream stream) {
    if (buf) ULYSSES_CUDA_CHECK(cudaFreeAsync(buf, stream));
    buf = nullptr;
    size = 0;
    return Status::ok();
  }

  std::size_t workspace_bytes(const LocalProblem& p) const override {
    // cuDNN's own workspace: what canonical graphs of this problem report (the graphs that run
    // differ in strides only), or, if a probe cannot be built, an analytic bound with an eighth
    // more for safety. Measured on H100 with cuDNN 9.19 (docs/PERF.md): backward needs an fp32 dQ
    // accumulator [B, hq, S, D], the softmax sums [B, hq, S], and, with GQA, deterministic mode or
    // packed batches, fp32 full-head dK and dV [B, hq, S, D] each. A graph that needs more anyway
    // (packed batches: their graphs depend on the batch's geometry) gets a grow-only overflow
    // (execute()). Plus room for varlen metadata, packed backward stats and dK/dV staging.
    const std::size_t B = static_cast<std::size_t>(p.batch);
    const std::size_t S = static_cast<std::size_t>(std::max(p.seqlen, p.kv_len()));
    const std::size_t Sq = static_cast<std::size_t>(p.seqlen),
                      Skv = static_cast<std::size_t>(p.kv_len());
    const std::size_t hq = static_cast<std::size_t>(p.num_heads_q_local);
    const std::size_t hkv = static_cast<std::size_t>(p.num_heads_kv_local);
    // (head_dim_v != head_dim: the wider of the two sizes every row below.)
    const std::size_t D = wide_dim(p);
    const std::size_t dq_acc = align_up(B * hq * S * D * 4), sums = align_up(B * hq * S * 4);
    const bool full_heads = hq != hkv || options_.deterministic || p.varlen;
    std::size_t bound = dq_acc + sums + (full_heads ? 2 * dq_acc : 0);
    bound += bound / 8;
    if (check_support(p).is_ok()) {
      // Prefer what cuDNN reports for canonical graphs of this problem; keep the bound if a probe
      // cannot be built.
      auto* self = const_cast<CudnnAttention*>(this);
      // (A forward-only problem, e.g. an inference plan's, needs no backward workspace: at 128k
      // tokens and 32 heads that is most of it.)
      // (Nor one whose backward runs as bands: its own graph never runs; the bands' are sized
      // below.)
      const bool whole_backward = p.backward && !one_key(p) && detail::causal_bands(p).empty();
      const std::int64_t fwd = self->canonical_workspace(p, false);
      const std::int64_t bwd = whole_backward ? self->canonical_workspace(p, true) : 0;
      if (fwd >= 0 && bwd >= 0) bound = static_cast<std::size_t>(std::max(fwd, bwd));
    }
    std::size_t extra = align_up(meta_bytes(p)) + align_up(B * hq * Sq * 4);
    if (p.grad_kv_dtype != p.dtype) extra += 2 * align_up(B * Skv * hkv * D * dtype_size(p.dtype));
    extra += stage_count(p) * align_up(B * Sq * hq * D * dtype_size(p.dtype));
    const std::size_t own = align_up(bound + (1u << 20)) + extra;
    const std::vector<Band> bs = detail::causal_bands(p);
    if (bs.empty()) return own;
    // Banded backward: the fp32 sums it keeps and (packed) one band's VarlenRows, then any band's
    // own workspace.
    std::size_t most = 0;
    for (const Band& b : bs) most = std::max(most, workspace_bytes(b.problem));
    return std::max(own, band_sums_bytes(p) + band_table_bytes(p) + most);
  }
  // The fp32 dQ (and dK, dV) sums of a banded backward whose caller's views are not fp32.
  static std::size_t band_sums_bytes(const LocalProblem& p) {
    const auto rows = [&](std::int64_t n, int heads) {
      return align_up(static_cast<std::size_t>(p.batch * n * heads) * wide_dim(p) * 4);
    };
    std::size_t n = p.grad_q_fp32 ? 0 : rows(p.seqlen, p.num_heads_q_local);
    if (p.grad_kv_dtype != DType::kFloat32) n += 2 * rows(p.kv_len(), p.num_heads_kv_local);
    return n;
  }
  // The wider of head_dim and head_dim_v: what the workspace's staging rows are sized by.
  static std::size_t wide_dim(const LocalProblem& p) {
    return static_cast<std::size_t>(std::max(p.config.head_dim, p.config.value_dim()));
  }

  // A packed band's VarlenRows in device memory: four rows of at most one entry per query row
  // (each piece holds one), written before its call; the bands reuse it in stream order.
  static std::size_t band_table_bytes(const LocalProblem& p) {
    return p.varlen ? align_up(4 * static_cast<std::size_t>(p.seqlen) * sizeof(std::int32_t)) : 0;
  }

  // See detail::causal_bands(). Packed: every band runs over the call's whole views, its
  // sequences' pieces as VarlenRows.
  Status banded_backward(const LocalProblem& p, const LocalBackwardArgs& a, Stream stream) {
    // cu_seqlens as VarlenRows: each sequence's query and key rows are the same.
    std::vector<std::int32_t> begin, len;
    VarlenRows seqs = a.rows;
    if (p.varlen && !p.varlen_rows) {
      for (std::size_t i = 0; i + 1 < a.cu_seqlens.size(); ++i) {
        begin.push_back(a.cu_seqlens[i]);
        len.push_back(a.cu_seqlens[i + 1] - a.cu_seqlens[i]);
      }
      seqs = VarlenRows{.q_begin = begin, .q_len = len, .kv_begin = begin, .kv_len = len};
    }
    std::vector<Band> bs = detail::causal_bands(p, seqs);
    char* ws = static_cast<char*>(a.workspace);
    auto sums = [&](const TensorView& caller, bool fp32, std::int64_t rows, int heads) {
      if (fp32) return caller;
      TensorView t = TensorView::contiguous(ws, DType::kFloat32,
                                            {p.batch, rows, heads, caller.size(3)}, device());
      ws += align_up(static_cast<std::size_t>(t.numel()) * 4);
      return t;
    };
    const bool kv_fp32 = p.grad_kv_dtype == DType::kFloat32;
    const TensorView dq = sums(a.dq, p.grad_q_fp32, p.seqlen, p.num_heads_q_local);
    const TensorView dk = sums(a.dk, kv_fp32, p.kv_len(), p.num_heads_kv_local);
    const TensorView dv = sums(a.dv, kv_fp32, p.kv_len(), p.num_heads_kv_local);
    auto* table = reinterpret_cast<std::int32_t*>(ws);
    ws += band_table_bytes(p);
    // No sequence with query and key rows: zero gradients (nothing added to running sums).
    if (p.varlen && bs.front().rows.empty()) bs.clear();
    if (bs.empty()) {
      if (!(p.grad_q_fp32 && p.accumulate_dq)) ULYSSES_RETURN_IF_ERROR(zero_all(dq, stream));
      if (!(kv_fp32 && p.accumulate_dkv)) {
        ULYSSES_RETURN_IF_ERROR(zero_all(dk, stream));
        ULYSSES_RETURN_IF_ERROR(zero_all(dv, stream));
      }
    }
    auto rows = [](const TensorView& t, std::int64_t r0, std::int64_t n) {
      return detail::sequence_rows(t, r0, n);
    };
    for (std::size_t i = 0; i < bs.size(); ++i) {
      const Band& b = bs[i];
      LocalProblem bp = b.problem;
      // The first band (every row and key) writes the sums, unless the caller's own fp32 views
      // are to be added to; the others add.
      bp.accumulate_dq = i > 0 || (p.grad_q_fp32 && p.accumulate_dq);
      bp.accumulate_dkv = i > 0 || (kv_fp32 && p.accumulate_dkv);
      const std::int64_t n = bp.seqlen;
      TensorView lse = a.lse;
      lse.data = static_cast<char*>(a.lse.data) + b.q0 * a.lse.stride(2) * 4;
      lse.shape[2] = n;
      LocalBackwardArgs ba;
      ba.q = rows(a.q, b.q0, n);
      const std::int64_t nk = bp.kv_len();
      ba.k = rows(a.k, b.kv0, nk);
      ba.v = rows(a.v, b.kv0, nk);
      ba.o = rows(a.o, b.q0, n);
      ba.lse = lse;
      ba.d_o = rows(a.d_o, b.q0, n);
      ba.dq = rows(dq, b.q0, n);
      ba.dk = rows(dk, b.kv0, nk);
      ba.dv = rows(dv, b.kv0, nk);
      if (p.varlen) {
        // Written after the previous band's call has read the table (one stream).
        const std::size_t m = b.rows.size() / 4;
        ULYSSES_RETURN_IF_ERROR(kernels::cuda::write_table(b.rows, table, stream));
        auto host = [&](std::size_t r) {
          return std::span<const std::int32_t>(b.rows.data() + r * m, m);
        };
        ba.rows = VarlenRows{host(0), host(1),   host(2),       host(3),
                             table,   table + m, table + 2 * m, table + 3 * m};
      }
      ba.workspace = ws;
      ULYSSES_RETURN_IF_ERROR(backward(bp, ba, stream));
    }
    if (!p.grad_q_fp32) ULYSSES_RETURN_IF_ERROR(kernels::cuda::convert(a.dq, dq, stream));
    if (!kv_fp32) {
      ULYSSES_RETURN_IF_ERROR(kernels::cuda::convert(a.dk, dk, stream));
      ULYSSES_RETURN_IF_ERROR(kernels::cuda::convert(a.dv, dv, stream));
    }
    if (p.config.sinks) {
      ULYSSES_RETURN_IF_ERROR(
          kernels::cuda::sink_grad(a.o, a.d_o, a.lse, a.sinks, p.head_offset_q, a.dsinks, stream));
    }
    return Status::ok();
  }

  Status forward(const LocalProblem& p, const LocalForwardArgs& a, Stream stream) override {
    ULYSSES_RETURN_IF_ERROR(
        detail::check_local_forward_args(p, a, device(), str_cat(kApi, "::forward")));
    ULYSSES_RETURN_IF_ERROR(detail::cudnn_forward_support(p, target()));
    ULYSSES_CUDA_CHECK(cudaSetDevice(device_));
    Varlen vl;
    ULYSSES_RETURN_IF_ERROR(varlen_geometry(p, a.cu_seqlens, a.cu_seqlens_device, a.rows, vl));
    Layout ws = workspace_layout(p, a.workspace);
    RaggedRows rows;
    // Sinks: cuDNN 9.19's forward with a sink token took 1.6-2.8x the time of the same packed call
    // without it (8 and 64 documents of 128k tokens: 164 -> 267 ms and 25 -> 69 ms per step), and
    // a dense one with a 128-token window 1.8x (docs/PERF.md, "Packed documents with sinks",
    // "Sinks outside cuDNN"). So the graph runs without them and they are folded in afterwards,
    // row by row (kernels::finalize_partial, in place): LSE = log(exp(LSE') + exp(sink)),
    // O = O' exp(LSE' - LSE). O is then rounded twice (cuDNN's rounding, then the rescale's): up
    // to 1 ulp from cuDNN's fp32 result, not 1/2.
    LocalProblem pg = p;
    pg.config.sinks = false;
    // The LSE the graph writes: the caller's, or (sinks to fold, none wanted) scratch.
    TensorView lse_out = a.lse;
    if (p.config.sinks && lse_out.empty_view()) {
      lse_out = TensorView::contiguous(ws.stats, DType::kFloat32,
                                       {p.batch, p.num_heads_q_local, p.seqlen}, device());
    }
    const bool stats = !lse_out.empty_view();
    // An fp32 O comes from cuDNN in the I/O dtype, then widens (cuDNN's O has the I/O dtype).
    TensorView o_out = a.o;
    if (p.out_fp32) {
      o_out = TensorView::contiguous(ws.o_stage, p.dtype,
                                     {p.batch, p.seqlen, p.num_heads_q_local, p.config.value_dim()},
                                     device());
    }
    // Rows of no sequence: O = 0, LSE = -inf (cuDNN writes only sequences' rows). VarlenRows with
    // O staged for fp32 (and no sinks to fold over every row): the stage is zeroed and widened
    // only over the rows the sequences span, the caller's rows outside it are zeroed directly, as
    // backward's gradients are (a ring call holding one document of a long view).
    const bool span_only = vl.rows && p.out_fp32 && !p.config.sinks;
    const RowSpan qs = span_only ? detail::varlen_span(a.rows, false) : RowSpan{0, p.seqlen};
    if (vl.rows && !vl.q_rows_covered) {
      ULYSSES_RETURN_IF_ERROR(span_only ? zero_rows(o_out, qs, stream)
                                        : kernels::cuda::zero_tokens_from(o_out, 0, stream));
      if (stats) ULYSSES_RETURN_IF_ERROR(kernels::cuda::fill_lse_from(lse_out, 0, stream));
    }
    const TensorDesc q = act_desc(a.q, vl), k = act_desc(a.k, vl), v = act_desc(a.v, vl),
                     o = act_desc(o_out, vl);
    const TensorDesc l = stats ? lse_desc(lse_out, vl) : TensorDesc{};
    std::map<std::int64_t, int> ragged;  // uid -> offsets row
    if (vl.on) {
      const int kv_side = vl.rows ? 1 : 0;
      ragged[kQ] = rows.row(a.q.stride(1));
      ragged[kK] = rows.row(a.k.stride(1), kv_side);
      ragged[kV] = rows.row(a.v.stride(1), kv_side);
      ragged[kO] = rows.row(o_out.stride(1));
      if (stats) ragged[kStats] = rows.row(lse_out.stride(2));
    }
    std::ostringstream key;
    key << "fwd|" << describe(pg, vl) << "|q" << q << "|k" << k << "|v" << v << "|o" << o << "|l"
        << (stats ? str_cat(l) : "-") << "|r" << ragged_key(ragged);
    auto built = cached(key.str(), [&]() -> Result<BuiltGraph> {
      auto g = new_graph(pg);
      auto Q = g->tensor(tensor("Q", kQ, q));
      auto K = g->tensor(tensor("K", kK, k));
      auto V = g->tensor(tensor("V", kV, v));
      fe::graph::SDPA_attributes at;
      at.set_name("sdpa").set_generate_stats(stats).set_attn_scale(p.config.scale());
      apply_masks(at, pg);
      if (vl.on) {
        auto [sq, skv] = seq_len_tensors(*g, vl);
        at.set_padding_mask(true).set_seq_len_q(sq).set_seq_len_kv(skv);
        at.set_max_total_seq_len_q(p.seqlen).set_max_total_seq_len_kv(p.kv_len());
        Q->set_ragged_offset(g->tensor(ragged_tensor(kQ, vl)));
        K->set_ragged_offset(g->tensor(ragged_tensor(kK, vl)));
        V->set_ragged_offset(g->tensor(ragged_tensor(kV, vl)));
      }
      auto [O, Stats] = g->sdpa(Q, K, V, at);
      O->set_output(true).set_uid(kO).set_dim(o.dim).set_stride(o.stride);
      if (vl.on) O->set_ragged_offset(g->tensor(ragged_tensor(kO, vl)));
      if (stats) {
        Stats->set_output(true)
            .set_uid(kStats)
            .set_data_type(fe::DataType_t::FLOAT)
            .set_dim(l.dim)
            .set_stride(l.stride);
        if (vl.on) Stats->set_ragged_offset(g->tensor(ragged_tensor(kStats, vl)));
      }
      return build(g, "forward", pg);
    });
    if (!built.is_ok()) return built.status();
    std::unordered_map<std::int64_t, void*> pack = {
        {kQ, a.q.data}, {kK, a.k.data}, {kV, a.v.data}, {kO, o_out.data}};
    if (stats) pack[kStats] = lse_out.data;
    if (vl.on) {
      ULYSSES_RETURN_IF_ERROR(
          fill_varlen(a.cu_seqlens_device, a.rows, vl, rows, ragged, ws, pack, stream));
    }
    ULYSSES_RETURN_IF_ERROR(execute(**built, pack, ws, stream));
    if (vl.on && !vl.rows) {
      ULYSSES_RETURN_IF_ERROR(kernels::cuda::zero_tokens_from(a.o, vl.valid, stream));
      if (stats) ULYSSES_RETURN_IF_ERROR(kernels::cuda::fill_lse_from(lse_out, vl.valid, stream));
    }
    if (p.config.sinks) {
      ULYSSES_RETURN_IF_ERROR(kernels::cuda::finalize_partial(
          o_out, lse_out, a.sinks, p.head_offset_q, o_out, lse_out, stream));
    }
    if (p.out_fp32) {
      ULYSSES_RETURN_IF_ERROR(span_only ? widen_rows(a.o, o_out, qs, false, stream)
                                        : kernels::cuda::convert_to_f32(a.o, o_out, stream));
    }
    return Status::ok();
  }

  Status backward(const LocalProblem& p, const LocalBackwardArgs& a, Stream stream) override {
    ULYSSES_RETURN_IF_ERROR(
        detail::check_local_backward_args(p, a, device(), true, str_cat(kApi, "::backward")));
    ULYSSES_RETURN_IF_ERROR(detail::cudnn_forward_support(p, target()));
    ULYSSES_RETURN_IF_ERROR(detail::cudnn_backward_support(p, target()));
    ULYSSES_CUDA_CHECK(cudaSetDevice(device_));
    if (!detail::causal_bands(p).empty()) return banded_backward(p, a, stream);
    Varlen vl;
    ULYSSES_RETURN_IF_ERROR(varlen_geometry(p, a.cu_seqlens, a.cu_seqlens_device, a.rows, vl));
    Layout ws = workspace_layout(p, a.workspace);
    BackwardViews t{.q = a.q,
                    .k = a.k,
                    .v = a.v,
                    .o = a.o,
                    .d_o = a.d_o,
                    .lse = a.lse,
                    .dq = a.dq,
                    .dk = a.dk,
                    .dv = a.dv};
    // dK/dV (dQ) in fp32 (partials summed across ranks or ring steps) come from cuDNN in the I/O
    // dtype, then widen.
    const bool widen = p.grad_kv_dtype != p.dtype;
    if (widen) {
      const std::int64_t B = p.batch, S = p.kv_len(), H = p.num_heads_kv_local,
                         D = p.config.head_dim;
      t.dk = TensorView::contiguous(ws.dk, p.dtype, {B, S, H, D}, device());
      t.dv = TensorView::contiguous(ws.dv, p.dtype, {B, S, H, p.config.value_dim()}, device());
    }
    if (p.grad_q_fp32) {
      t.dq = TensorView::contiguous(ws.o_stage, p.dtype,
                                    {p.batch, p.seqlen, p.num_heads_q_local, p.config.head_dim},
                                    device());
    }
    // Packed batches: cuDNN 9.19's backward reads O (for rowsum(dO * O)) with Q's ragged offsets,
    // so Q, O, dO and dQ must share one token stride (seen on H100/H200: dV right, dQ/dK wrong when
    // they differ). Views of another stride go through copies of the shared one: Q where Ulysses
    // reads it from the packed Q|K|V buffer, and with head_dim_v != head_dim (rows of two widths)
    // whichever of Q, O, dO and dQ are not in rows of hq x max(D, Dv).
    if (p.varlen) ULYSSES_RETURN_IF_ERROR(stage_packed_q_side(p, a, ws, t));
    // dQ staged in the I/O dtype (not widened below): copied back after the graph.
    const bool dq_copy = !p.grad_q_fp32 && t.dq.data != a.dq.data;
    // Packed GQA: cuDNN's frontend keeps fp32 full-head dK and dV partials in the workspace, laid
    // out in dK's and dV's token strides times hq / hkv, so gradients written into wider rows
    // (Ulysses writes them into its K|V send rows) need that many times the workspace the plan
    // holds (the canonical graph's compact rows), and the call took a grow-only overflow of the
    // whole workspace beside it. Compact copies in a grow-only buffer cost far less (16 heads over
    // 4 of 32k rows: 2 x 32 MiB against a 1.25 GiB overflow; docs/PERF.md).
    ULYSSES_ASSIGN_OR_RETURN(const bool staged_kv, stage_packed_kv(p, widen, t, stream));
    // Sinks: dQ, dK and dV need them only through the LSE (P = exp(S - LSE) with the sinks' mass
    // in the LSE; rowsum(dO * O) holds no sink term), so the graph runs without them on the given
    // O and LSE, and dSinks come from kernels::sink_grad over the call's rows (rows of no sequence
    // have LSE = -inf and add nothing). cuDNN before 9.26 has a backward bug with ragged offsets
    // and a sink token; and a call past 2^31 elements splits freely (over the batch too: no part
    // sums dSinks).
    LocalProblem pg = p;
    pg.config.sinks = false;
    // Calls that reach past 2^31 elements run in parts (see backward_groups(), dense_parts()).
    std::vector<detail::RaggedGroup> groups(1);
    std::vector<detail::DensePart> parts;
    if (vl.on) {
      ULYSSES_ASSIGN_OR_RETURN(groups, backward_groups(p, a, vl, t));
    } else {
      ULYSSES_ASSIGN_OR_RETURN(parts, dense_parts(p, t));
    }
    // VarlenRows: cuDNN reads Q only in the pieces' rows, so only those are staged (a banded
    // backward's head and tail bands hold < window_right rows of each sequence; ring's and
    // all-gather's calls may hold one document of a long view).
    const kernels::RowPieces q_rows{a.rows.q_begin, a.rows.q_len};
    const kernels::RowPieces kv_rows{a.rows.kv_begin, a.rows.kv_len};
    for (auto [dst, src] :
         {std::pair{&t.q, &a.q}, std::pair{&t.o, &a.o}, std::pair{&t.d_o, &a.d_o}}) {
      if (dst->data == src->data) continue;
      ULYSSES_RETURN_IF_ERROR(vl.rows ? kernels::cuda::copy_rows(*dst, *src, q_rows, stream)
                                      : kernels::cuda::copy_act(*dst, *src, stream));
    }
    // VarlenRows: cuDNN writes only the sequences' rows; the others get zero gradients. A staged
    // gradient is zeroed, read and widened only over the rows its side's sequences span (qs, ks):
    // the caller's rows outside them are zeroed directly. A call whose few sequences sit in long
    // views (allgather's keys before a chunk: one document) then does not pay for the views.
    const RowSpan qs = vl.rows ? detail::varlen_span(a.rows, false) : RowSpan{0, p.seqlen};
    const RowSpan ks = vl.rows ? detail::varlen_span(a.rows, true) : RowSpan{0, p.kv_len()};
    // Staged gradients added to running fp32 sums (a banded backward's later bands, ring's steps)
    // take only the pieces' rows: nothing outside them is added, so the rows between them (the
    // gaps of a band's pieces, one per sequence, in a long view) are neither zeroed nor walked.
    // The pieces' rows are zeroed first, so a row cuDNN leaves unwritten adds nothing.
    const bool q_pieces = vl.rows && p.grad_q_fp32 && p.accumulate_dq;
    const bool kv_pieces = vl.rows && widen && p.accumulate_dkv;
    if (q_pieces) {
      ULYSSES_RETURN_IF_ERROR(kernels::cuda::fill_zero_rows(t.dq, q_rows, stream));
    } else if (vl.rows) {
      ULYSSES_RETURN_IF_ERROR(p.grad_q_fp32 ? zero_rows(t.dq, qs, stream) : zero_all(a.dq, stream));
    }
    for (const TensorView* g : {&t.dk, &t.dv}) {
      if (kv_pieces) {
        ULYSSES_RETURN_IF_ERROR(kernels::cuda::fill_zero_rows(*g, kv_rows, stream));
      } else if (vl.rows) {
        ULYSSES_RETURN_IF_ERROR(widen ? zero_rows(*g, ks, stream) : zero_all(*g, stream));
      }
    }
    if (vl.on) {
      ULYSSES_RETURN_IF_ERROR(backward_graph(pg, t, a, vl, groups, ws, stream));
    } else {
      for (const detail::DensePart& part : parts) {
        ULYSSES_RETURN_IF_ERROR(backward_part(pg, t, a, part, ws, stream));
      }
    }
    if (p.config.sinks) {
      ULYSSES_RETURN_IF_ERROR(
          kernels::cuda::sink_grad(a.o, a.d_o, a.lse, a.sinks, p.head_offset_q, a.dsinks, stream));
    }
    if (vl.on && !vl.rows) {
      for (const TensorView* g : {&t.dq, &t.dk, &t.dv}) {
        ULYSSES_RETURN_IF_ERROR(kernels::cuda::zero_tokens_from(*g, vl.valid, stream));
      }
    }
    if (dq_copy) {
      ULYSSES_RETURN_IF_ERROR(vl.rows ? kernels::cuda::copy_rows(a.dq, t.dq, q_rows, stream)
                                      : kernels::cuda::copy_act(a.dq, t.dq, stream));
    }
    if (staged_kv) {
      ULYSSES_RETURN_IF_ERROR(kernels::cuda::copy_act(a.dk, t.dk, stream));
      ULYSSES_RETURN_IF_ERROR(kernels::cuda::copy_act(a.dv, t.dv, stream));
    }
    // Staged results into the caller's fp32 views: widened over the spans (zeros outside), or added
    // to running sums over the pieces' rows (q_pieces, kv_pieces) or the spans.
    if (q_pieces) {
      ULYSSES_RETURN_IF_ERROR(kernels::cuda::convert_rows(a.dq, t.dq, q_rows, true, stream));
    } else if (p.grad_q_fp32) {
      ULYSSES_RETURN_IF_ERROR(widen_rows(a.dq, t.dq, qs, p.accumulate_dq, stream));
    }
    if (widen) {
      for (auto [dst, src] : {std::pair{&a.dk, &t.dk}, std::pair{&a.dv, &t.dv}}) {
        ULYSSES_RETURN_IF_ERROR(kv_pieces
                                    ? kernels::cuda::convert_rows(*dst, *src, kv_rows, true, stream)
                                    : widen_rows(*dst, *src, ks, p.accumulate_dkv, stream));
      }
    }
    return Status::ok();
  }

 private:
  using RowSpan = detail::RowSpan;  // rows [begin, end) of dimension 1 of a [B, S, H, D] view
  static TensorView rows_of(const TensorView& t, std::int64_t begin, std::int64_t end) {
    return detail::sequence_rows(t, begin, end - begin);
  }
  static Status zero_rows(const TensorView& t, RowSpan s, Stream stream) {
    if (s.end <= s.begin) return Status::ok();
    return kernels::cuda::zero_tokens_from(rows_of(t, s.begin, s.end), 0, stream);
  }
  static Status zero_all(const TensorView& t, Stream stream) {
    return kernels::cuda::zero_tokens_from(t, 0, stream);
  }
  // dst (fp32) = src over span s and 0 outside it, or dst += src over s (accumulate).
  static Status widen_rows(const TensorView& dst, const TensorView& src, RowSpan s, bool accumulate,
                           Stream stream) {
    if (!accumulate) {
      ULYSSES_RETURN_IF_ERROR(zero_rows(dst, {0, s.begin}, stream));
      ULYSSES_RETURN_IF_ERROR(zero_rows(dst, {s.end, dst.size(1)}, stream));
    }
    if (s.end <= s.begin) return Status::ok();
    const TensorView d = rows_of(dst, s.begin, s.end), x = rows_of(src, s.begin, s.end);
    return accumulate ? kernels::cuda::accumulate(d, x, stream)
                      : kernels::cuda::convert_to_f32(d, x, stream);
  }

  // Where this call's scratch lives inside the caller's workspace.
  struct Layout {
    void* cudnn = nullptr;
    std::size_t cudnn_bytes = 0;
    void* meta = nullptr;  // seq_len_q, seq_len_kv (int32), then the ragged offsets (int64)
    std::size_t meta_bytes = 0;
    void* stats = nullptr;
    void* dk = nullptr;
    void* dv = nullptr;
    void* q_stage = nullptr;  // packed backward's Q in the shared token stride
    void* o_stage = nullptr;  // O or dQ in the I/O dtype before widening to fp32, or packed dQ
    void* o_pad = nullptr;    // packed backward with head_dim_v != head_dim: O, dO in padded rows
    void* do_pad = nullptr;
  };

  // Packed backward with head_dim_v != head_dim: Q, O, dO and dQ in rows of hq x max(D, Dv).
  static bool padded_q_side(const LocalProblem& p) {
    return p.varlen && p.backward && p.config.mixed_dims();
  }
  // I/O-dtype copies of [B, S, hq, max(D, Dv)] this problem may need: Q (packed backward), O / dQ
  // (fp32), and with padded_q_side() Q, O, dO and dQ.
  static std::size_t stage_count(const LocalProblem& p) {
    if (padded_q_side(p)) return 4;
    return (p.varlen ? 1u : 0u) + (p.grad_q_fp32 || p.out_fp32 ? 1u : 0u);
  }

  static std::size_t meta_bytes(const LocalProblem& p) {
    if (!p.varlen) return 0;
    // seq_len_q and seq_len_kv [padded] (int32) + up to 8 rows of padded + 1 ragged offsets
    // (int64, 8-byte aligned since padded is even or 1), padded <= next_pow2(2 seqlen + 2).
    const std::size_t padded = static_cast<std::size_t>(next_pow2(2 * p.seqlen + 2));
    return 2 * padded * sizeof(std::int32_t) + 8 * (padded + 1) * sizeof(std::int64_t);
  }

  Layout workspace_layout(const LocalProblem& p, void* base) const {
    Layout l;
    const std::size_t total = workspace_bytes_cached(p);
    const std::size_t B = static_cast<std::size_t>(p.batch), S = static_cast<std::size_t>(p.seqlen);
    const std::size_t Skv = static_cast<std::size_t>(p.kv_len());
    const std::size_t hq = static_cast<std::size_t>(p.num_heads_q_local);
    const std::size_t hkv = static_cast<std::size_t>(p.num_heads_kv_local);
    const std::size_t D = wide_dim(p);  // (as workspace_bytes() sized them)
    const std::size_t kv_bytes =
        p.grad_kv_dtype != p.dtype ? align_up(B * Skv * hkv * D * dtype_size(p.dtype)) : 0;
    const std::size_t stats_bytes = align_up(B * hq * S * 4);
    const std::size_t stage_bytes = align_up(B * S * hq * D * dtype_size(p.dtype));
    const std::size_t q_bytes = stage_count(p) * stage_bytes;
    l.meta_bytes = align_up(meta_bytes(p));
    l.cudnn_bytes = total - l.meta_bytes - stats_bytes - 2 * kv_bytes - q_bytes;
    char* c = static_cast<char*>(base);
    l.cudnn = c;
    l.meta = c + l.cudnn_bytes;
    l.stats = c + l.cudnn_bytes + l.meta_bytes;
    l.dk = c + l.cudnn_bytes + l.meta_bytes + stats_bytes;
    l.dv = static_cast<char*>(l.dk) + kv_bytes;
    l.q_stage = static_cast<char*>(l.dv) + kv_bytes;
    l.o_stage = p.varlen ? static_cast<char*>(l.q_stage) + stage_bytes : l.q_stage;
    if (padded_q_side(p)) {
      l.o_pad = static_cast<char*>(l.o_stage) + stage_bytes;
      l.do_pad = static_cast<char*>(l.o_pad) + stage_bytes;
    }
    return l;
  }

  // Packed backward: Q, O, dO and dQ in one token stride (see backward()): O's or, with
  // head_dim_v != head_dim, hq x max(D, Dv). A view of another stride is replaced by one of
  // [B, S, hq, d] in that stride in the workspace (backward() fills Q, O, dO and copies dQ back).
  // (Measured with head dims that differ: without these copies Ulysses' packed backward, Q in its
  // Q|K|V rows and dQ in its dQ|dK|dV rows, returned wrong dQ and dK; docs/results/
  // 2026-12-03-h200-mla-packed/.)
  Status stage_packed_q_side(const LocalProblem& p, const LocalBackwardArgs& a, const Layout& ws,
                             BackwardViews& t) const {
    const std::int64_t hq = p.num_heads_q_local, D = p.config.head_dim, Dv = p.config.value_dim();
    const bool padded = padded_q_side(p);
    const std::int64_t T = padded ? hq * std::max(D, Dv) : a.o.stride(1);
    // (A problem with equal dims holds one copy, for Q; an fp32 dQ is staged compact.)
    if (!padded && (a.d_o.stride(1) != T || a.dq.stride(1) != T)) {
      return unsupported(str_cat(kApi,
                                 "::backward: packed batches need o, d_o and dq with one token "
                                 "stride (got ",
                                 a.o.stride(1), ", ", a.d_o.stride(1), ", ", a.dq.stride(1), ")"));
    }
    auto at = [&](void* base, std::int64_t d) {
      return TensorView::strided(base, p.dtype, {p.batch, p.seqlen, hq, d}, {p.seqlen * T, T, d, 1},
                                 device());
    };
    if (a.q.stride(1) != T) t.q = at(ws.q_stage, D);
    if (a.o.stride(1) != T) t.o = at(ws.o_pad, Dv);
    if (a.d_o.stride(1) != T) t.d_o = at(ws.do_pad, Dv);
    if (p.grad_q_fp32 || a.dq.stride(1) != T) t.dq = at(ws.o_stage, D);
    return Status::ok();
  }

  std::size_t workspace_bytes_cached(const LocalProblem& p) const {
    const std::string key = describe(p, Varlen{}) + (p.backward ? "|training" : "|forward");
    auto it = ws_cache_.find(key);
    if (it != ws_cache_.end()) return it->second;
    const std::size_t n = workspace_bytes(p);
    ws_cache_[key] = n;
    return n;
  }

  std::int64_t canonical_workspace(const LocalProblem& problem, bool backward) {
    // Packed [B, S, H, D] views on a null base: only shapes and strides matter for building. The
    // graphs that run have no sinks (forward(), backward()).
    LocalProblem p = problem;
    p.config.sinks = false;
    const std::int64_t B = p.batch, S = p.seqlen, D = p.config.head_dim, Dv = p.config.value_dim();
    const std::int64_t hq = p.num_heads_q_local, hkv = p.num_heads_kv_local;
    Varlen vl;
    // Packed: one sequence of S tokens in a batch padded to S entries. cuDNN's workspace grows
    // with the padded batch (cuDNN 9.19: the 64-document graph of 32k tokens, padded to 64,
    // reports 14 MiB less than this probe), so a batch padded past S gets the overflow. (Padded
    // to the power of two above S instead, test_gpu_cudnn's RaggedOffsetsPast2To31Elements ran
    // out of device memory at S = 2089 on an H200.)
    if (p.varlen) vl = Varlen{.on = true, .num_seqs = 1, .padded = S, .max_len = S};
    // Where the backward's workspace follows the graph's rows instead (ragged_sized_workspace()),
    // that probe would ask for S x S rows; its calls run in runs of row_budget() rows, and the
    // probe is one sequence of that many.
    if (p.varlen && backward && !ragged_sized_workspace(p)) {
      vl = Varlen{.on = true, .num_seqs = 1, .padded = 1, .max_len = row_budget(p)};
    }
    auto act = [&](std::int64_t h, std::int64_t rows, std::int64_t d) {
      return TensorView::contiguous(nullptr, p.dtype, {B, rows, h, d}, device());
    };
    const TensorView q = act(hq, S, D), k = act(hkv, p.kv_len(), D), v = act(hkv, p.kv_len(), Dv),
                     o = act(hq, S, Dv);
    const TensorView lse = TensorView::contiguous(nullptr, DType::kFloat32, {B, hq, S}, device());
    std::ostringstream key;
    key << (backward ? "canon-bwd|" : "canon-fwd|") << describe(p, vl);
    auto built = cached(key.str(), [&]() -> Result<BuiltGraph> {
      auto g = new_graph(p);
      auto Q = g->tensor(tensor("Q", kQ, act_desc(q, vl)));
      auto K = g->tensor(tensor("K", kK, act_desc(k, vl)));
      auto V = g->tensor(tensor("V", kV, act_desc(v, vl)));
      std::shared_ptr<fe::graph::Tensor_attributes> sq, skv;
      if (vl.on) std::tie(sq, skv) = seq_len_tensors(*g, vl);
      auto ragged = [&](auto& t, std::int64_t uid) {
        if (vl.on) t->set_ragged_offset(g->tensor(ragged_tensor(uid, vl)));
      };
      ragged(Q, kQ);
      ragged(K, kK);
      ragged(V, kV);
      if (!backward) {
        fe::graph::SDPA_attributes at;
        at.set_name("sdpa").set_generate_stats(true).set_attn_scale(p.config.scale());
        apply_masks(at, p);
        if (vl.on)
          at.set_padding_mask(true)
              .set_seq_len_q(sq)
              .set_seq_len_kv(skv)
              .set_max_total_seq_len_q(S)
              .set_max_total_seq_len_kv(p.kv_len());
        auto [O, Stats] = g->sdpa(Q, K, V, at);
        const TensorDesc od = act_desc(o, vl), ld = lse_desc(lse, vl);
        O->set_output(true).set_uid(kO).set_dim(od.dim).set_stride(od.stride);
        Stats->set_output(true)
            .set_uid(kStats)
            .set_data_type(fe::DataType_t::FLOAT)
            .set_dim(ld.dim)
            .set_stride(ld.stride);
        ragged(O, kO);
        ragged(Stats, kStats);
      } else {
        auto O = g->tensor(tensor("O", kO, act_desc(o, vl)));
        auto dO = g->tensor(tensor("dO", kDO, act_desc(o, vl)));
        auto Stats = g->tensor(
            tensor("Stats", kStats, lse_desc(lse, vl)).set_data_type(fe::DataType_t::FLOAT));
        ragged(O, kO);
        ragged(dO, kDO);
        ragged(Stats, kStats);
        fe::graph::SDPA_backward_attributes at;
        at.set_name("sdpa_backward")
            .set_attn_scale(p.config.scale())
            .set_deterministic_algorithm(options_.deterministic);
        apply_masks(at, p);
        if (vl.on)
          at.set_padding_mask(true)
              .set_seq_len_q(sq)
              .set_seq_len_kv(skv)
              .set_max_total_seq_len_q(S)
              .set_max_total_seq_len_kv(p.kv_len());
        auto [dQ, dK, dV] = g->sdpa_backward(Q, K, V, O, dO, Stats, at);
        const TensorDesc qd = act_desc(q, vl), kd = act_desc(k, vl), vd = act_desc(v, vl);
        dQ->set_output(true).set_uid(kDQ).set_dim(qd.dim).set_stride(qd.stride);
        dK->set_output(true).set_uid(kDK).set_dim(kd.dim).set_stride(kd.stride);
        dV->set_output(true).set_uid(kDV).set_dim(vd.dim).set_stride(vd.stride);
        ragged(dQ, kDQ);
        ragged(dK, kDK);
        ragged(dV, kDV);
      }
      return build(g, backward ? "backward" : "forward", p);
    });
    return built.is_ok() ? (*built)->workspace : -1;
  }

  template <typename Make>
  Result<BuiltGraph*> cached(const std::string& key, Make&& make) {
    auto it = cache_.find(key);
    if (it != cache_.end()) return &it->second;
    ULYSSES_CUDA_CHECK(cudaSetDevice(device_));
    const auto start = std::chrono::steady_clock::now();
    auto built = make();
    stats_.build_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!built.is_ok()) {
      ++stats_.failed;
      return built.status();
    }
    ++stats_.graphs;
    return &(cache_[key] = std::move(built).value());
  }

  std::shared_ptr<fe::graph::Graph> new_graph(const LocalProblem& p) const {
    auto g = std::make_shared<fe::graph::Graph>();
    g->set_io_data_type(fe_type(p.dtype))
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    return g;
  }

  static fe::graph::Tensor_attributes tensor(const char* name, std::int64_t uid,
                                             const TensorDesc& d) {
    return fe::graph::Tensor_attributes().set_name(name).set_uid(uid).set_dim(d.dim).set_stride(
        d.stride);
  }

  static fe::graph::Tensor_attributes ragged_tensor(std::int64_t uid, const Varlen& vl) {
    return fe::graph::Tensor_attributes()
        .set_name(str_cat("ragged_", uid))
        .set_uid(kRagged + uid)
        .set_dim({vl.padded + 1, 1, 1, 1})
        .set_stride({1, 1, 1, 1})
        .set_data_type(fe::DataType_t::INT64);
  }

  static std::pair<std::shared_ptr<fe::graph::Tensor_attributes>,
                   std::shared_ptr<fe::graph::Tensor_attributes>>
  seq_len_tensors(fe::graph::Graph& g, const Varlen& vl) {
    auto mk = [&](const char* name, std::int64_t uid) {
      return g.tensor(fe::graph::Tensor_attributes()
                          .set_name(name)
                          .set_uid(uid)
                          .set_dim({vl.padded, 1, 1, 1})
                          .set_stride({1, 1, 1, 1})
                          .set_data_type(fe::DataType_t::INT32));
    };
    return {mk("seq_len_q", kSeqQ), mk("seq_len_kv", kSeqKV)};
  }

  // The masks as cuDNN's diagonal band (cudnn_band()), aligned top-left or bottom-right.
  template <typename Attrs>
  static void apply_masks(Attrs& at, const LocalProblem& p) {
    const detail::CudnnBand b = detail::cudnn_band(p);
    if (b.has_left || b.has_right) {
      at.set_diagonal_alignment(p.bottom_right ? fe::DiagonalAlignment_t::BOTTOM_RIGHT
                                               : fe::DiagonalAlignment_t::TOP_LEFT);
    }
    if (b.has_right) at.set_diagonal_band_right_bound(static_cast<int>(b.right));
    if (b.has_left) at.set_diagonal_band_left_bound(static_cast<int>(b.left));
  }

  Result<BuiltGraph> build(const std::shared_ptr<fe::graph::Graph>& g, const char* what,
                           const LocalProblem& p) {
    auto fail = [&](fe::error_t e, const char* step) {
      return unsupported(str_cat(kApi, ": cuDNN ", cudnnGetVersion(), " cannot build the ", what,
                                 " graph (", step, ") for ", describe(p, Varlen{}), ": ",
                                 e.get_message()));
    };
    if (auto e = g->validate(); !e.is_good()) return fail(e, "validate");
    if (auto e = g->build_operation_graph(handle_); !e.is_good())
      return fail(e, "build_operation_graph");
    if (auto e = g->create_execution_plans({fe::HeurMode_t::A}); !e.is_good())
      return fail(e, "create_execution_plans");
    if (auto e = g->check_support(handle_); !e.is_good()) return fail(e, "check_support");
    if (auto e = g->build_plans(handle_); !e.is_good()) return fail(e, "build_plans");
    BuiltGraph out;
    out.graph = g;
    if (auto e = g->get_workspace_size(out.workspace); !e.is_good())
      return fail(e, "get_workspace_size");
    return out;
  }

  // A buffer of at least `bytes`, grown (never shrunk) in stream order.
  static Status grow(void*& buf, std::size_t& size, std::size_t bytes, Stream stream) {
    if (bytes <= size) return Status::ok();
    ULYSSES_RETURN_IF_ERROR(drop(buf, size, stream));
    ULYSSES_CUDA_CHECK(cudaMallocAsync(&buf, bytes, stream));
    size = bytes;
    return Status::ok();
  }

  Status execute(const BuiltGraph& b, std::unordered_map<std::int64_t, void*>& pack,
                 const Layout& ws, Stream stream) {
    void* workspace = ws.cudnn;
    const auto needed = static_cast<std::size_t>(b.workspace);
    if (needed > ws.cudnn_bytes) {
      // Packed batches get here: their graph depends on the batch's geometry (sequence count and
      // longest sequence, bucketed), which the plan cannot know; a dense graph would only if it
      // needed more than the canonical graph of its shape (not seen: docs/PERF.md). Grow-only and
      // stream-ordered, so a new bucket allocates once and steady state allocates nothing.
      ULYSSES_RETURN_IF_ERROR(grow(overflow_, overflow_bytes_, needed, stream));
      workspace = overflow_;
    }
    if (cudnnStatus_t s = cudnnSetStream(handle_, stream); s != CUDNN_STATUS_SUCCESS) {
      return internal_error(str_cat(kApi, ": cudnnSetStream: ", cudnnGetErrorString(s)));
    }
    if (auto e = b.graph->execute(handle_, pack, workspace); !e.is_good()) {
      return internal_error(str_cat(kApi, ": cuDNN execute failed: ", e.get_message()));
    }
    ULYSSES_CUDA_CHECK_LAUNCH();
    return Status::ok();
  }

  Status varlen_geometry(const LocalProblem& p, std::span<const std::int32_t> cu,
                         const std::int32_t* cu_device, const VarlenRows& rows, Varlen& vl) const {
    if (!p.varlen) return Status::ok();
    if (p.varlen_rows) {
      vl.on = vl.rows = true;
      bucket(vl, rows.num_seqs(), longest_rows(true, rows, cu, 0, rows.num_seqs()));
      std::int64_t covered = 0;
      bool tiled = true;
      for (int s = 0; s < vl.num_seqs; ++s) {
        const auto su = static_cast<std::size_t>(s);
        if (rows.q_len[su] == 0) continue;
        tiled = tiled && rows.q_begin[su] == covered && rows.kv_len[su] > 0;
        covered += rows.q_len[su];
      }
      vl.q_rows_covered = tiled && covered == p.seqlen;
      return varlen_limits(p, vl);
    }
    if (cu_device == nullptr) {
      return detail::arg_error(kApi, "cu_seqlens_device", "is null", "nullptr",
                               "cu_seqlens in device memory");
    }
    vl.on = true;
    vl.valid = cu.back();
    const int n = static_cast<int>(cu.size()) - 1;
    bucket(vl, n, longest_rows(false, rows, cu, 0, n));
    return varlen_limits(p, vl);
  }

  // The longest query or key rows of sequences [first, last): of VarlenRows, or of cu_seqlens.
  static std::int64_t longest_rows(bool by_rows, const VarlenRows& rows,
                                   std::span<const std::int32_t> cu, int first, int last) {
    std::int64_t longest = 1;
    for (int s = first; s < last; ++s) {
      const auto su = static_cast<std::size_t>(s);
      longest = by_rows ? std::max<std::int64_t>({longest, rows.q_len[su], rows.kv_len[su]})
                        : std::max<std::int64_t>(longest, cu[su + 1] - cu[su]);
    }
    return longest;
  }
  // `count` sequences, the longest `longest` rows, as a graph's geometry: both rounded up to powers
  // of two (rows at least 64), so that a few graphs serve every batch (detail::packed_slots() is
  // padded x max_len).
  static void bucket(Varlen& vl, int count, std::int64_t longest) {
    vl.num_seqs = count;
    vl.max_len = detail::packed_rows(longest);
    vl.padded = next_pow2(std::max(1, count));
  }

  Status varlen_limits(const LocalProblem& p, const Varlen& vl) const {
    if (vl.padded > next_pow2(2 * p.seqlen + 2)) {
      return unsupported(str_cat(kApi, ": ", vl.num_seqs, " packed sequences in ", p.seqlen,
                                 " tokens (got ", vl.num_seqs, ", expected at most ",
                                 2 * p.seqlen + 2, ")"));
    }
    return Status::ok();
  }

  // Packed backward: cuDNN 9.19's backward took int64 ragged offsets past 2^31 elements and
  // returned wrong dQ and dK (dV right), measured on an H200 by test_gpu_cudnn's
  // RaggedOffsetsPast2To31Elements: the 32-bit reads of K, O and dO that dense_parts() below
  // describes. So a packed call whose views span more runs as several, each on whole sequences
  // within 2^31 elements of its first rows (the same graph: padded batch and longest sequence are
  // the call's). Every view bounds a run, not only those three: the per-view probe was dense.
  //
  // Where cuDNN sizes the backward's workspace by the graph's rows rather than the tokens
  // (ragged_sized_workspace()), runs are also bounded to the rows of one sequence as long as the
  // call (what the plan's workspace was sized for), each run then with a graph of its own geometry.
  Result<std::vector<detail::RaggedGroup>> backward_groups(const LocalProblem& p,
                                                           const LocalBackwardArgs& a,
                                                           const Varlen& vl,
                                                           const BackwardViews& t) const {
    auto extent = [](std::initializer_list<const TensorView*> ts) {
      detail::RaggedExtent e;
      for (const TensorView* v : ts) {
        e.row_stride = std::max(e.row_stride, v->stride(1));
        e.row_last =
            std::max(e.row_last, (v->size(2) - 1) * v->stride(2) + (v->size(3) - 1) * v->stride(3));
      }
      return e;
    };
    const detail::RaggedExtent qe = extent({&t.q, &t.o, &t.d_o, &t.dq}),
                               ke = extent({&t.k, &t.v, &t.dk, &t.dv});
    const std::int64_t max_slots = ragged_sized_workspace(p) ? 0 : row_budget(p);
    Result<std::vector<detail::RaggedGroup>> groups = [&] {
      if (vl.rows) {
        return detail::ragged_groups(a.rows.q_begin, a.rows.q_len, a.rows.kv_begin, a.rows.kv_len,
                                     qe, ke, detail::kCudnnIndexLimit, max_slots);
      }
      const std::span<const std::int32_t> cu = a.cu_seqlens;
      std::vector<std::int32_t> len(cu.size() - 1);
      for (std::size_t i = 0; i + 1 < cu.size(); ++i) len[i] = cu[i + 1] - cu[i];
      const auto begin = cu.first(len.size());
      return detail::ragged_groups(begin, len, begin, len, qe, ke, detail::kCudnnIndexLimit,
                                   max_slots);
    }();
    if (!groups.is_ok()) {
      return unsupported(str_cat(kApi, "::backward: packed ", groups.status().message(),
                                 " (2^31): cuDNN's packed backward returned wrong dQ and dK past "
                                 "2^31 elements (measured with cuDNN 9.19; running ",
                                 cudnnGetVersion(), "); forward has no such limit"));
    }
    return groups;
  }

  // Dense backward: cuDNN 9.19 reads K (for dQ) and O and dO (for rowsum(dO * O)) with 32-bit
  // offsets, so past element 2^31 of those views dQ and dK come out wrong while O, LSE and dV stay
  // right (test_gpu_cudnn's DenseViewsPast2To31Elements; per view and for batch entries past 2^31:
  // docs/results/2026-12-02-h200-dense-2to31/). Such a call runs in parts, batch entries x whole
  // KV groups, each of whose compact K, O and dO hold at most 2^31 elements; a part's view of them
  // that still reaches past (a long row stride: K inside Ulysses' Q|K|V buffer) is staged compact.
  static bool fits(const TensorView& t) {
    std::int64_t last = 0;
    for (int d = 0; d < t.ndim; ++d) last += (t.size(d) - 1) * t.stride(d);
    return last < detail::kCudnnIndexLimit;
  }
  Result<std::vector<detail::DensePart>> dense_parts(const LocalProblem& p,
                                                     const BackwardViews& t) const {
    auto parts =
        detail::dense_parts(p.batch, p.seqlen, p.kv_len(), p.num_heads_q_local,
                            p.num_heads_kv_local, static_cast<std::int64_t>(wide_dim(p)),
                            fits(t.k) && fits(t.o) && fits(t.d_o), detail::kCudnnIndexLimit);
    if (!parts.is_ok()) return detail::cudnn_past_index_limit(parts.status(), target());
    return parts;
  }

  // Batch entries [b0, b0 + nb) and heads [h0, h0 + nh) of a [B, S, H, D] view.
  static TensorView part_of(const TensorView& t, std::int64_t b0, std::int64_t nb, std::int64_t h0,
                            std::int64_t nh) {
    TensorView s = t;
    s.data = static_cast<char*>(t.data) +
             (b0 * t.stride(0) + h0 * t.stride(2)) * static_cast<std::int64_t>(dtype_size(t.dtype));
    s.shape[0] = nb;
    s.shape[2] = nh;
    return s;
  }

  // One part of a dense backward: its own problem (batch entries, heads), K, O and dO staged
  // compact where its views reach past 2^31, and its LSE packed [nb, nh, S] in ws.stats.
  Status backward_part(const LocalProblem& p, const BackwardViews& t, const LocalBackwardArgs& a,
                       const detail::DensePart& part, const Layout& ws, Stream stream) {
    const std::int64_t ratio = p.num_heads_q_local / p.num_heads_kv_local;
    const std::int64_t q0 = part.kv0 * ratio, nq = part.nkv * ratio;
    LocalProblem pp = p;
    pp.batch = part.nb;
    pp.head_offset_q += static_cast<int>(q0);
    pp.head_offset_kv += static_cast<int>(part.kv0);
    pp.num_heads_q_local = static_cast<int>(nq);
    pp.num_heads_kv_local = static_cast<int>(part.nkv);
    auto kv = [&](const TensorView& v) { return part_of(v, part.b0, part.nb, part.kv0, part.nkv); };
    auto qs = [&](const TensorView& v) { return part_of(v, part.b0, part.nb, q0, nq); };
    BackwardViews s{.q = qs(t.q),
                    .k = kv(t.k),
                    .v = kv(t.v),
                    .o = qs(t.o),
                    .d_o = qs(t.d_o),
                    .dq = qs(t.dq),
                    .dk = kv(t.dk),
                    .dv = kv(t.dv)};
    // Stats: before cuDNN 9.26 the backward reads a non-ragged Stats input as packed [B, H, S].
    TensorView lse = a.lse;
    lse.data = static_cast<float*>(a.lse.data) + part.b0 * a.lse.stride(0) + q0 * a.lse.stride(1);
    lse.shape[0] = part.nb;
    lse.shape[1] = nq;
    if (one_key(pp)) {
      // cudnn-frontend (1.32) builds no backward graph with s_q = s_kv = 1 (a ring step at a
      // window's edge, whose query sees one key of the block): our own kernel. check_support()
      // accepted the call only if its one pair lies inside the band (cudnn_band()).
      return kernels::cuda::one_key_backward(s.q, s.k, s.v, s.o, s.d_o, lse, s.dq, s.dk, s.dv,
                                             static_cast<float>(pp.config.scale()),
                                             detail::cudnn_band(pp).ok, stream);
    }
    std::size_t bytes = 0;
    TensorView* staged[] = {&s.k, &s.o, &s.d_o};
    for (TensorView* v : staged) {
      if (!fits(*v)) bytes += align_up(static_cast<std::size_t>(v->numel()) * dtype_size(p.dtype));
    }
    if (bytes > 0) {
      ULYSSES_RETURN_IF_ERROR(grow(stage_, stage_bytes_, bytes, stream));
      char* at = static_cast<char*>(stage_);
      for (TensorView* v : staged) {
        if (fits(*v)) continue;
        const TensorView compact = TensorView::contiguous(
            at, p.dtype, {v->size(0), v->size(1), v->size(2), v->size(3)}, device());
        ULYSSES_RETURN_IF_ERROR(kernels::cuda::copy_act(compact, *v, stream));
        at += align_up(static_cast<std::size_t>(v->numel()) * dtype_size(p.dtype));
        *v = compact;
      }
    }
    s.lse = TensorView::contiguous(ws.stats, DType::kFloat32, {part.nb, nq, p.seqlen}, device());
    ULYSSES_RETURN_IF_ERROR(kernels::cuda::copy_lse(s.lse, lse, stream));
    const std::vector<detail::RaggedGroup> one(1);
    return backward_graph(pp, s, a, Varlen{}, one, ws, stream);
  }

  // Whether a packed GQA backward's dK and dV go through compact copies (see backward()): then
  // t.dk and t.dv point at them, in stage_.
  Result<bool> stage_packed_kv(const LocalProblem& p, bool widen, BackwardViews& t, Stream stream) {
    if (!p.varlen || widen || p.num_heads_q_local == p.num_heads_kv_local) return false;
    const std::int64_t B = p.batch, S = p.kv_len(), H = p.num_heads_kv_local;
    // Only the rows count: a packed call's batch stride is the ragged offsets'.
    auto compact_rows = [&](const TensorView& g) {
      const std::int64_t D = g.size(3);
      return g.stride(1) == H * D && g.stride(2) == D && g.stride(3) == 1;
    };
    if (compact_rows(t.dk) && compact_rows(t.dv)) return false;
    const std::int64_t D = p.config.head_dim, Dv = p.config.value_dim();
    const std::size_t one = align_up(static_cast<std::size_t>(B * S * H * D) * dtype_size(p.dtype));
    const std::size_t two =
        align_up(static_cast<std::size_t>(B * S * H * Dv) * dtype_size(p.dtype));
    ULYSSES_RETURN_IF_ERROR(grow(stage_, stage_bytes_, one + two, stream));
    t.dk = TensorView::contiguous(stage_, p.dtype, {B, S, H, D}, device());
    t.dv =
        TensorView::contiguous(static_cast<char*>(stage_) + one, p.dtype, {B, S, H, Dv}, device());
    return true;
  }

  // The cuDNN backward for views t, run once per group of packed sequences (one group, rows 0, for
  // a dense call), each group with the call's graph or, where the workspace follows the graph's
  // rows (backward_groups()), one of the group's own geometry.
  Status backward_graph(const LocalProblem& p, const BackwardViews& t, const LocalBackwardArgs& a,
                        const Varlen& vl, std::span<const detail::RaggedGroup> groups,
                        const Layout& ws, Stream stream) {
    RaggedRows rows;
    std::map<std::int64_t, int> ragged;
    if (vl.on) {
      using Entry = std::pair<std::int64_t, const TensorView*>;
      const Entry entries[] = {{kQ, &t.q},    {kK, &t.k},   {kV, &t.v},   {kO, &t.o},
                               {kDO, &t.d_o}, {kDQ, &t.dq}, {kDK, &t.dk}, {kDV, &t.dv}};
      for (const auto& [uid, view] : entries) {
        const bool key_side = uid == kK || uid == kV || uid == kDK || uid == kDV;
        ragged[uid] = rows.row(view->stride(1), vl.rows && key_side ? 1 : 0);
      }
      ragged[kStats] = rows.row(t.lse.stride(2));
    }
    const bool own_geometry = vl.on && !ragged_sized_workspace(p);
    // One call per run of sequences, every view starting at the run's first rows (query side: Q,
    // O, dO, dQ and the LSE; key side: K, V, dK, dV).
    for (const detail::RaggedGroup& g : groups) {
      const Varlen gv = own_geometry ? group_geometry(vl, a, g) : vl;
      ULYSSES_ASSIGN_OR_RETURN(const BuiltGraph* built, backward_graph_for(p, t, gv, ragged));
      const std::int64_t r = g.q_row, rk = g.kv_row;
      std::unordered_map<std::int64_t, void*> pack = {
          {kQ, at_row(t.q, r)},   {kK, at_row(t.k, rk)},   {kV, at_row(t.v, rk)},
          {kO, at_row(t.o, r)},   {kDO, at_row(t.d_o, r)}, {kStats, at_row(t.lse, r, 2)},
          {kDQ, at_row(t.dq, r)}, {kDK, at_row(t.dk, rk)}, {kDV, at_row(t.dv, rk)}};
      if (vl.on) {
        ULYSSES_RETURN_IF_ERROR(
            fill_varlen(a.cu_seqlens_device, a.rows, gv, rows, ragged, ws, pack, stream, g));
      }
      ULYSSES_RETURN_IF_ERROR(execute(*built, pack, ws, stream));
    }
    return Status::ok();
  }

  // The packed geometry of sequences g alone: their count and longest query or key rows, bucketed
  // as varlen_geometry() buckets a call's.
  static Varlen group_geometry(const Varlen& vl, const LocalBackwardArgs& a,
                               const detail::RaggedGroup& g) {
    Varlen gv = vl;
    bucket(gv, g.last - g.first, longest_rows(vl.rows, a.rows, a.cu_seqlens, g.first, g.last));
    return gv;
  }

  // The cuDNN backward graph for views t and packed geometry vl (built once per descriptor,
  // cached).
  Result<const BuiltGraph*> backward_graph_for(const LocalProblem& p, const BackwardViews& t,
                                               const Varlen& vl,
                                               const std::map<std::int64_t, int>& ragged) {
    const TensorDesc q = act_desc(t.q, vl), k = act_desc(t.k, vl), v = act_desc(t.v, vl),
                     o = act_desc(t.o, vl), d_o = act_desc(t.d_o, vl), dq = act_desc(t.dq, vl),
                     dkd = act_desc(t.dk, vl), dvd = act_desc(t.dv, vl), l = lse_desc(t.lse, vl);
    std::ostringstream key;
    key << "bwd|" << describe(p, vl) << "|q" << q << "|k" << k << "|v" << v << "|o" << o << "|do"
        << d_o << "|dq" << dq << "|dk" << dkd << "|dv" << dvd << "|l" << l << "|r"
        << ragged_key(ragged) << "|det" << options_.deterministic;
    ULYSSES_ASSIGN_OR_RETURN(
        BuiltGraph * built, cached(key.str(), [&]() -> Result<BuiltGraph> {
          auto g = new_graph(p);
          auto Q = g->tensor(tensor("Q", kQ, q));
          auto K = g->tensor(tensor("K", kK, k));
          auto V = g->tensor(tensor("V", kV, v));
          auto O = g->tensor(tensor("O", kO, o));
          auto dO = g->tensor(tensor("dO", kDO, d_o));
          auto Stats = g->tensor(tensor("Stats", kStats, l).set_data_type(fe::DataType_t::FLOAT));
          fe::graph::SDPA_backward_attributes at;
          at.set_name("sdpa_backward").set_attn_scale(p.config.scale());
          at.set_deterministic_algorithm(options_.deterministic);
          apply_masks(at, p);
          if (vl.on) {
            auto [sq, skv] = seq_len_tensors(*g, vl);
            at.set_padding_mask(true).set_seq_len_q(sq).set_seq_len_kv(skv);
            at.set_max_total_seq_len_q(p.seqlen).set_max_total_seq_len_kv(p.kv_len());
            using Entry = std::pair<std::shared_ptr<fe::graph::Tensor_attributes>, std::int64_t>;
            const Entry entries[] = {{Q, kQ}, {K, kK},   {V, kV},
                                     {O, kO}, {dO, kDO}, {Stats, kStats}};
            for (const auto& [x, uid] : entries)
              x->set_ragged_offset(g->tensor(ragged_tensor(uid, vl)));
          }
          auto [dQ, dK, dV] = g->sdpa_backward(Q, K, V, O, dO, Stats, at);
          dQ->set_output(true).set_uid(kDQ).set_dim(dq.dim).set_stride(dq.stride);
          dK->set_output(true).set_uid(kDK).set_dim(dkd.dim).set_stride(dkd.stride);
          dV->set_output(true).set_uid(kDV).set_dim(dvd.dim).set_stride(dvd.stride);
          if (vl.on) {
            dQ->set_ragged_offset(g->tensor(ragged_tensor(kDQ, vl)));
            dK->set_ragged_offset(g->tensor(ragged_tensor(kDK, vl)));
            dV->set_ragged_offset(g->tensor(ragged_tensor(kDV, vl)));
          }
          return build(g, "backward", p);
        }));
    return built;
  }

  // The address of row `row` of dimension `dim` (tokens: 1 for activations, 2 for the LSE).
  static void* at_row(const TensorView& t, std::int64_t row, int dim = 1) {
    return static_cast<char*>(t.data) +
           row * t.stride(dim) * static_cast<std::int64_t>(dtype_size(t.dtype));
  }

  // Sequences `g` of the call (all of them: the default), their offsets measured from g's rows.
  Status fill_varlen(const std::int32_t* cu_device, const VarlenRows& seq_rows, const Varlen& vl,
                     const RaggedRows& rows, const std::map<std::int64_t, int>& ragged,
                     const Layout& ws, std::unordered_map<std::int64_t, void*>& pack, Stream stream,
                     std::optional<detail::RaggedGroup> g = std::nullopt) {
    if (rows.strides.size() > 8) return internal_error(str_cat(kApi, ": too many ragged layouts"));
    if (!g) g = detail::RaggedGroup{.first = 0, .last = vl.num_seqs};
    const int n = g->last - g->first;
    std::int32_t* seq_len = static_cast<std::int32_t*>(ws.meta);
    std::int32_t* seq_len_kv = seq_len + vl.padded;
    auto* offsets = reinterpret_cast<std::int64_t*>(seq_len + 2 * vl.padded);
    if (vl.rows) {
      const auto f = static_cast<std::size_t>(g->first), m = static_cast<std::size_t>(n);
      const VarlenRows part{.q_begin = seq_rows.q_begin.subspan(f, m),
                            .q_len = seq_rows.q_len.subspan(f, m),
                            .kv_begin = seq_rows.kv_begin.subspan(f, m),
                            .kv_len = seq_rows.kv_len.subspan(f, m),
                            .q_begin_device = seq_rows.q_begin_device + f,
                            .q_len_device = seq_rows.q_len_device + f,
                            .kv_begin_device = seq_rows.kv_begin_device + f,
                            .kv_len_device = seq_rows.kv_len_device + f};
      ULYSSES_RETURN_IF_ERROR(kernels::cuda::varlen_rows_metadata(
          part, static_cast<int>(vl.padded), g->q_row, g->kv_row, rows.strides, rows.sides, seq_len,
          seq_len_kv, offsets, stream));
    } else {
      ULYSSES_RETURN_IF_ERROR(
          kernels::cuda::varlen_metadata(cu_device + g->first, n, static_cast<int>(vl.padded),
                                         g->q_row, rows.strides, seq_len, offsets, stream));
      seq_len_kv = seq_len;
    }
    pack[kSeqQ] = seq_len;
    pack[kSeqKV] = seq_len_kv;
    for (const auto& [uid, row] : ragged) pack[kRagged + uid] = offsets + row * (vl.padded + 1);
    return Status::ok();
  }

  std::string describe(const LocalProblem& p, const Varlen& vl) const {
    const AttentionConfig& c = p.config;
    return str_cat(dtype_name(p.dtype), " B", p.batch, " S", p.seqlen, "x", p.kv_len(), "@",
                   p.diagonal_offset, p.bottom_right ? "br" : "", " hq", p.num_heads_q_local,
                   " hkv", p.num_heads_kv_local, " D", c.head_dim, "/", c.value_dim(), " scale",
                   c.scale(), " causal", c.causal, " win", c.window_left, ",", c.window_right,
                   " sinks", c.sinks, " varlen", p.varlen,
                   vl.on ? str_cat(" nb", vl.padded, " smax", vl.max_len) : std::string(), " gkv",
                   dtype_name(p.grad_kv_dtype), " gq32", p.grad_q_fp32, " o32", p.out_fp32);
  }

  static std::string ragged_key(const std::map<std::int64_t, int>& r) {
    std::ostringstream os;
    for (const auto& [uid, row] : r) os << uid << ":" << row << ",";
    return os.str();
  }

  int device_;
  CudnnOptions options_;
  int sms_ = 0;       // multiprocessors of device_
  int cc_major_ = 0;  // its compute capability major
  cudnnHandle_t handle_;
  std::map<std::string, BuiltGraph> cache_;
  CudnnGraphStats stats_;  // what cached() built
  mutable std::map<std::string, std::size_t> ws_cache_;
  void* overflow_ = nullptr;  // see execute()
  std::size_t overflow_bytes_ = 0;
  // Compact K, O, dO of a dense backward part (backward_part()), or a packed GQA backward's
  // compact dK, dV (stage_packed_kv()).
  void* stage_ = nullptr;
  std::size_t stage_bytes_ = 0;
};

}  // namespace

Result<CudnnGraphStats> cudnn_graph_stats(const LocalAttention& kernel) {
  const auto* cudnn = dynamic_cast<const CudnnAttention*>(&kernel);
  if (cudnn == nullptr) {
    return detail::arg_error("ulysses::cudnn_graph_stats", "kernel",
                             "was not made by create_cudnn_attention()", kernel.name(),
                             "a cuDNN attention kernel");
  }
  return cudnn->graph_stats();
}

Result<std::unique_ptr<LocalAttention>> create_cudnn_attention(int device, CudnnOptions options) {
  const int n = cuda_device_count();
  if (device < 0 || device >= n) {
    return detail::arg_error("ulysses::create_cudnn_attention", "device",
                             "is not a visible CUDA device", device,
                             str_cat("0..", n - 1, " (", n, " visible)"));
  }
  ULYSSES_CUDA_CHECK(cudaSetDevice(device));
  int sms = 0;
  ULYSSES_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  int cc_major = 0;
  ULYSSES_CUDA_CHECK(cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, device));
  cudnnHandle_t handle = nullptr;
  if (cudnnStatus_t s = cudnnCreate(&handle); s != CUDNN_STATUS_SUCCESS) {
    return internal_error(
        str_cat("ulysses::create_cudnn_attention: cudnnCreate: ", cudnnGetErrorString(s)));
  }
  return std::unique_ptr<LocalAttention>(
      std::make_unique<CudnnAttention>(device, options, handle, sms, cc_major));
}

}  // namespace ulysses
