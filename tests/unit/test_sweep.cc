// Random configurations (tests/common/config_sweep.h) on loopback ranks with the reference kernel,
// against the unsharded reference: whatever the library accepts must compute the right thing.
//
// For each draw the library says first whether it takes it (DistributedAttention::check_support):
// a refusal must be InvalidArgument or Unsupported with a message, and every rank must refuse
// alike in create(). An accepted draw runs forward (and backward) on fresh random inputs into
// NaN-poisoned outputs, packed padding rows NaN too, and is checked like the hand-written suites:
//   ulysses: O, LSE, dQ, dSinks bitwise the unsharded reference in the same dtype (on what the
//            payload delivers), dK/dV too unless ranks share a KV head (then STYLE.md's 2x rule);
//   ring, hybrid, allgather: every output within the 2x rule of the FP64 truth.
// With backward_keeps_saved a second backward on the same forward must repeat the first bitwise.
// Half the draws run on a loopback that says its copy to a rank itself is no separate copy
// (copies_own_rows() false, as NCCL): Ulysses then sends a rank's own rows through the exchange
// instead of packing them in place.
// Some draws first make a call with one mistake in its arguments (Mistake) alike on every rank: it
// must be refused with the same InvalidArgument everywhere, write nothing, and leave the plan (and
// forward's `saved`) as usable as before: the valid call after it is checked as above.
// The reference kernel runs under cuDNN's rules for the calls' shapes and masks (CudnnShaped), so
// a plan that would hand cuDNN a call it cannot run is caught here, without a GPU.
//
// ULYSSES_SWEEP_CASES=n runs n draws (default below), ULYSSES_SWEEP_SEED=s replays one,
// ULYSSES_SWEEP_MATCH="words" keeps to draws whose description holds them (config_sweep.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "attention/cudnn_support.h"
#include "common/check.h"
#include "common/config_sweep.h"
#include "common/test_util.h"

namespace ulysses {
namespace {

using testing::HostTensor;
using testing::SweepCase;

constexpr int kDefaultCases = 400;

testing::SweepSpace host_space() {
  return {.cps = {1, 2, 3, 4, 6, 8},
          .dtypes = {DType::kFloat32, DType::kBFloat16, DType::kFloat16, DType::kFloat64},
          .head_dims = {4, 8, 5, 16},
          .kv_heads = {1, 2, 3, 4, 6, 8},
          .group_sizes = {1, 2, 3, 4},
          .max_tokens = 48,
          .max_doc = 20,
          .max_docs = 4};
}

// The reference kernel, refusing (at plan time) every call that `rule` refuses.
class RuledReference : public LocalAttention {
 public:
  using Rule = Status (*)(const LocalProblem&);
  RuledReference(std::string_view name, Rule rule) : name_(name), rule_(rule) {}
  std::string_view name() const override { return name_; }
  Device device() const override { return inner_->device(); }
  bool provides_lse() const override { return true; }
  bool supports_backward() const override { return true; }
  bool accumulates_grads() const override { return true; }  // as cuDNN's
  Status check_support(const LocalProblem& p) const override {
    ULYSSES_RETURN_IF_ERROR(inner_->check_support(p));
    return rule_(p);
  }
  std::size_t workspace_bytes(const LocalProblem& p) const override {
    return inner_->workspace_bytes(p);
  }
  Status forward(const LocalProblem& p, const LocalForwardArgs& a, Stream s) override {
    return inner_->forward(p, a, s);
  }
  Status backward(const LocalProblem& p, const LocalBackwardArgs& a, Stream s) override {
    return inner_->backward(p, a, s);
  }

 private:
  std::string_view name_;
  Rule rule_;
  std::unique_ptr<LocalAttention> inner_ = make_reference_attention();
};

// The cuDNN backend's rules for the calls' shapes and masks (detail::cudnn_forward_support and
// _backward_support for cuDNN 9.19 on Hopper), with dtype and head_dim set to ones cuDNN takes:
// the host sweep's small head_dims and fp32/fp64 dtypes would be refused for themselves, not for
// what the plan asks of the kernel.
Status cudnn_rules(const LocalProblem& p) {
  LocalProblem q = p;  // in bf16: what is in the plan's dtype stays so, wider becomes fp32
  q.dtype = DType::kBFloat16;
  q.config.head_dim = 64;
  q.config.head_dim_v = p.config.mixed_dims() ? 32 : 0;
  const bool wide_kv = p.grad_kv_dtype != p.dtype || p.accumulate_dkv;
  q.grad_kv_dtype = wide_kv ? DType::kFloat32 : DType::kBFloat16;
  q.grad_q_fp32 = p.grad_q_fp32 || p.accumulate_dq;
  const detail::CudnnTarget hopper{91900, 9};
  ULYSSES_RETURN_IF_ERROR(detail::cudnn_forward_support(q, hopper));
  return q.backward ? detail::cudnn_backward_support(q, hopper) : Status::ok();
}

class CudnnShaped final : public RuledReference {
 public:
  CudnnShaped() : RuledReference("reference-under-cudnn-rules", cudnn_rules) {}
};

struct Tensors {
  HostTensor o, lse, dq, dk, dv, dsinks;
};
struct Inputs {
  HostTensor q, k, v, d_o, sinks;
};

bool packed(const SweepCase& c) { return c.layout == Layout::kTHD; }

// Every activation as [B, S, H, D] (B = 1 when packed; `value`: V, O, dO, dV, of head_dim_v),
// every LSE as [B, H, S].
HostTensor act(const SweepCase& c, DType dtype, std::int64_t S, int heads, bool value = false) {
  return HostTensor(dtype, {c.B, S, heads, value && c.Dv > 0 ? c.Dv : c.D});
}

Tensors poisoned(const SweepCase& c, DType dtype, std::int64_t S) {
  Tensors t{act(c, dtype, S, c.Hq, true),  HostTensor(DType::kFloat32, {c.B, c.Hq, S}),
            act(c, dtype, S, c.Hq),        act(c, dtype, S, c.Hkv),
            act(c, dtype, S, c.Hkv, true), HostTensor(DType::kFloat32, {c.Hq})};
  for (HostTensor* x : {&t.o, &t.lse, &t.dq, &t.dk, &t.dv, &t.dsinks}) testing::poison(*x);
  return t;
}

// Packed: sequence s lies at rows [begin[s], begin[s] + len[s]) of the stream (padded offsets
// under ring and hybrid, cu_seqlens itself otherwise).
struct Rows {
  std::vector<std::int32_t> begin, len;
};
Rows rows_of(const SweepCase& c) {
  Rows r;
  if (!packed(c)) return r;
  auto offsets = packed_sequence_offsets(c.parallel(), c.cu);
  EXPECT_TRUE(offsets.is_ok()) << offsets.status().to_string();
  for (std::size_t s = 0; s + 1 < c.cu.size(); ++s) {
    r.begin.push_back((*offsets)[s]);
    r.len.push_back(c.cu[s + 1] - c.cu[s]);
  }
  return r;
}

Inputs make_inputs(const SweepCase& c, std::mt19937_64& rng) {
  Inputs in{act(c, c.dtype, c.S, c.Hq), act(c, c.dtype, c.S, c.Hkv),
            act(c, c.dtype, c.S, c.Hkv, true), act(c, c.dtype, c.S, c.Hq, true),
            HostTensor(DType::kFloat32, {c.Hq})};
  for (HostTensor* t : {&in.q, &in.k, &in.v, &in.d_o}) testing::fill_uniform(*t, rng, -2.0, 2.0);
  testing::fill_uniform(in.sinks, rng, -1.0, 1.0);
  if (packed(c)) {  // rows of no sequence hold NaN (as torch.empty padding may): none may leak
    const Rows rows = rows_of(c);
    std::vector<char> real(static_cast<std::size_t>(c.S), 0);
    for (std::size_t s = 0; s < rows.begin.size(); ++s) {
      std::fill_n(real.begin() + rows.begin[s], rows.len[s], 1);
    }
    for (HostTensor* t : {&in.q, &in.k, &in.v, &in.d_o}) {
      const std::int64_t row = t->numel() / c.S;
      for (std::int64_t r = 0; r < c.S; ++r) {
        if (real[static_cast<std::size_t>(r)]) continue;
        for (std::int64_t i = r * row; i < (r + 1) * row; ++i) t->set(i, std::nan(""));
      }
    }
  }
  return in;
}

// What the kernels read under the payload: ulysses' Q, K, V, dO rounded to fp8 rows; ring's,
// hybrid's and all-gather's K, V (rounded even where one ring step sends nothing). Two head
// widths: rows of gcd(D, Dv) values.
Inputs as_delivered(const SweepCase& c, const Inputs& in) {
  Inputs r = in;
  if (c.payload != Payload::kFp8) return r;
  const std::int64_t u = std::gcd(c.D, c.Dv > 0 ? c.Dv : c.D);
  if (c.strategy == Strategy::kUlysses) {
    for (HostTensor* t : {&r.q, &r.k, &r.v, &r.d_o}) *t = testing::fp8_rounded(*t, u);
  } else {
    for (HostTensor* t : {&r.k, &r.v}) *t = testing::fp8_rounded(*t, u);
  }
  return r;
}

// The unsharded reference in `dtype` on one "device". partial_keys: backward reads the given
// (rounded) O and fp32 LSE, as every real kernel does (the plain run for the 2x rule).
Tensors unsharded(const SweepCase& c, const Inputs& any, DType dtype, bool partial_keys) {
  const HostTensor q = testing::convert(any.q, dtype), k = testing::convert(any.k, dtype),
                   v = testing::convert(any.v, dtype), d_o = testing::convert(any.d_o, dtype);
  Tensors r = poisoned(c, dtype, c.S);
  const bool ulysses_packed = packed(c) && c.strategy == Strategy::kUlysses;
  LocalProblem p = LocalProblem::unsharded(c.attention(), dtype, c.B, c.S, ulysses_packed);
  const Rows rows = rows_of(c);
  LocalForwardArgs f{.q = q.view, .k = k.view, .v = v.view, .o = r.o.view, .lse = r.lse.view};
  if (c.sinks) f.sinks = any.sinks.view;
  if (ulysses_packed) {
    f.cu_seqlens = c.cu;
  } else if (packed(c)) {
    p.varlen = p.varlen_rows = true;
    f.rows = {.q_begin = rows.begin, .q_len = rows.len, .kv_begin = rows.begin, .kv_len = rows.len};
  }
  EXPECT_TRUE(reference_forward(p, f).is_ok());
  if (!c.training) return r;
  p.partial_keys = partial_keys;
  LocalBackwardArgs b{.q = q.view,
                      .k = k.view,
                      .v = v.view,
                      .o = r.o.view,
                      .lse = r.lse.view,
                      .d_o = d_o.view,
                      .dq = r.dq.view,
                      .dk = r.dk.view,
                      .dv = r.dv.view,
                      .cu_seqlens = f.cu_seqlens,
                      .rows = f.rows};
  if (c.sinks) {
    b.sinks = any.sinks.view;
    b.dsinks = r.dsinks.view;
  }
  EXPECT_TRUE(reference_backward(p, b).is_ok());
  return r;
}

// One mistake in a call's arguments, made alike on every rank before the valid call (kNone: none).
enum class Mistake : int {
  kNone = -1,
  kQHeads,         // forward: q with a head too few
  kKDtype,         // forward: k tagged with another dtype
  kVStride,        // forward: v's head_dim not contiguous
  kONull,          // forward: o without data
  kWorkspaceNull,  // forward: no workspace (where one is needed)
  kSinks,          // forward: sinks missing (attention.sinks) or given (not)
  kLseShape,       // forward: lse a token short
  kCuSeqlens,      // forward: packed past the plan's tokens, or cu_seqlens with layout bshd
  kDqHeads,        // backward: dq with a head too few
  kDoDtype,        // backward: d_o tagged with another dtype
  kSavedNull,      // backward: no saved buffer (where one is needed)
  kDkStride,       // backward: dk's head_dim not contiguous
  kCount
};
bool in_backward(Mistake m) { return m >= Mistake::kDqHeads; }

struct Run {
  Tensors out;
  std::vector<HostTensor> dsinks;  // every rank's copy
  Tensors again;                   // keep_saved: the second backward's gradients
  std::vector<Status> refused;     // every rank's status for the call with the mistake
  std::vector<int> untouched;      // whether that call left the outputs as they were (NaN)
};

// A view with a head too few, another dtype tag, or head_dim strided (the check refuses each
// before reading).
TensorView fewer_heads(TensorView v) {
  --v.shape[static_cast<std::size_t>(v.ndim - 2)];
  return v;
}
TensorView other_dtype(TensorView v) {
  v.dtype = v.dtype == DType::kFloat32 ? DType::kBFloat16 : DType::kFloat32;
  return v;
}
TensorView strided_head_dim(TensorView v) {
  v.strides[static_cast<std::size_t>(v.ndim - 1)] = 2;
  return v;
}

// How a rank's activations lie in memory: `padded_heads`, views of the first heads of wider
// tensors (as a fused projection hands them over); `seq_major`, [S/cp, B, H, D] tensors seen as
// [B, S/cp, H, D] (Megatron's sbhd: the batch's rows of a token adjacent).
struct Views {
  bool padded_heads = false;
  bool seq_major = false;
};

// The plan on c.P loopback ranks: each rank copies its shard in (laid out as `views` says), runs,
// and places its outputs back.
// `own_rows`: what the loopback says of its copy to a rank itself (copies_own_rows()), so Ulysses
// plans either pack a rank's own rows in place or send them through the exchange as over NCCL.
Run distributed(const SweepCase& c, const Inputs& in, Views views, Mistake mistake, bool own_rows) {
  Run run{poisoned(c, c.dtype, c.S), {}, poisoned(c, c.dtype, c.S), {}, {}};
  run.refused.resize(static_cast<std::size_t>(c.P));
  run.untouched.assign(static_cast<std::size_t>(c.P), 1);
  run.dsinks.assign(static_cast<std::size_t>(c.P), run.out.dsinks);
  CudnnShaped shaped;
  LocalAttention* kernel = &shaped;
  const PlanConfig cfg = c.plan();
  const std::int64_t Sl = c.S / c.P;
  const std::span<const std::int32_t> cu = c.cu;
  const auto rank = [&](int r, Communicator& comm) -> Status {
    auto plan = DistributedAttention::create(cfg, comm, *kernel);
    if (!plan.is_ok()) return plan.status();
    std::vector<unsigned char> ws((*plan)->workspace_bytes()), saved((*plan)->saved_bytes());
    const std::int64_t pad = views.padded_heads ? 3 : 0;
    auto tensor = [&](DType dtype, std::int64_t heads, std::int64_t d) {
      HostTensor t = views.seq_major ? HostTensor(dtype, {Sl, c.B, heads + pad, d})
                                     : HostTensor(dtype, {c.B, Sl, heads + pad, d});
      testing::poison(t);
      return t;
    };
    auto view = [&](const HostTensor& t) {
      TensorView v = t.view;
      if (views.seq_major) {
        std::swap(v.shape[0], v.shape[1]);
        std::swap(v.strides[0], v.strides[1]);
      }
      v.shape[2] -= pad;
      return v;
    };
    auto arg = [&](const HostTensor& t) {
      return packed(c) ? testing::drop_dim0(view(t)) : view(t);
    };
    auto mine = [&](const HostTensor& global) {
      HostTensor t = tensor(global.view.dtype, global.view.size(2), global.view.size(3));
      EXPECT_TRUE(copy_shard(global.view, view(t), 1, cfg.parallel, r, cu).is_ok());
      return t;
    };
    auto put = [&](const HostTensor& t, HostTensor& global) {
      return place_shard(view(t), global.view, 1, cfg.parallel, r, cu);
    };
    const HostTensor q = mine(in.q), k = mine(in.k), v = mine(in.v), d_o = mine(in.d_o);
    const std::int64_t dv_dim = c.Dv > 0 ? c.Dv : c.D;
    HostTensor o = tensor(c.dtype, c.Hq, dv_dim), dq = tensor(c.dtype, c.Hq, c.D),
               dk = tensor(c.dtype, c.Hkv, c.D), dv = tensor(c.dtype, c.Hkv, dv_dim);
    HostTensor lse(DType::kFloat32, {c.B, c.Hq, Sl});
    testing::poison(lse);
    ForwardArgs f{.q = arg(q),
                  .k = arg(k),
                  .v = arg(v),
                  .o = arg(o),
                  .lse = packed(c) ? testing::drop_dim0(lse.view) : lse.view,
                  .cu_seqlens = cu,
                  .workspace = ws.data(),
                  .saved = saved.data()};
    if (c.sinks) f.sinks = in.sinks.view;
    const auto ri = static_cast<std::size_t>(r);
    std::vector<std::int32_t> bad_cu = {0, static_cast<std::int32_t>(c.S)};
    if (mistake != Mistake::kNone && !in_backward(mistake)) {
      ForwardArgs bad = f;
      switch (mistake) {
        case Mistake::kQHeads:
          bad.q = fewer_heads(f.q);
          break;
        case Mistake::kKDtype:
          bad.k = other_dtype(f.k);
          break;
        case Mistake::kVStride:
          bad.v = strided_head_dim(f.v);
          break;
        case Mistake::kONull:
          bad.o.data = nullptr;
          break;
        case Mistake::kWorkspaceNull:
          bad.workspace = nullptr;
          break;
        case Mistake::kSinks:
          bad.sinks = c.sinks ? TensorView{} : in.sinks.view;
          break;
        case Mistake::kLseShape:
          bad.lse.shape[static_cast<std::size_t>(f.lse.ndim - 1)] -= 1;
          break;
        case Mistake::kCuSeqlens:
          if (packed(c)) bad_cu = {0, static_cast<std::int32_t>(c.S + 1)};
          bad.cu_seqlens = bad_cu;
          break;
        default:
          break;
      }
      run.refused[ri] = (*plan)->forward(bad, nullptr);
      run.untouched[ri] =
          testing::count_nan(o) == o.numel() && testing::count_nan(lse) == lse.numel();
    }
    ULYSSES_RETURN_IF_ERROR((*plan)->forward(f, nullptr));
    ULYSSES_RETURN_IF_ERROR(put(o, run.out.o));
    ULYSSES_RETURN_IF_ERROR(place_shard(lse.view, run.out.lse.view, 2, cfg.parallel, r, cu));
    if (!c.training) return Status::ok();
    std::fill(ws.begin(), ws.end(), 0xFF);  // scratch: backward may not find forward's there
    BackwardArgs b{.d_o = arg(d_o),
                   .dq = arg(dq),
                   .dk = arg(dk),
                   .dv = arg(dv),
                   .cu_seqlens = cu,
                   .workspace = ws.data(),
                   .saved = saved.data(),
                   .q = arg(q),  // read with saved_activations = lse
                   .k = arg(k),
                   .v = arg(v),
                   .o = arg(o)};
    if (c.sinks) {
      b.sinks = in.sinks.view;
      b.dsinks = run.dsinks[static_cast<std::size_t>(r)].view;
    }
    if (in_backward(mistake)) {  // refused without consuming `saved`: the valid call follows
      BackwardArgs bad = b;
      switch (mistake) {
        case Mistake::kDqHeads:
          bad.dq = fewer_heads(b.dq);
          break;
        case Mistake::kDoDtype:
          bad.d_o = other_dtype(b.d_o);
          break;
        case Mistake::kSavedNull:
          bad.saved = nullptr;
          break;
        case Mistake::kDkStride:
          bad.dk = strided_head_dim(b.dk);
          break;
        default:
          break;
      }
      run.refused[ri] = (*plan)->backward(bad, nullptr);
      run.untouched[ri] = testing::count_nan(dq) == dq.numel() &&
                          testing::count_nan(dk) == dk.numel() &&
                          testing::count_nan(dv) == dv.numel();
    }
    ULYSSES_RETURN_IF_ERROR((*plan)->backward(b, nullptr));
    ULYSSES_RETURN_IF_ERROR(put(dq, run.out.dq));
    ULYSSES_RETURN_IF_ERROR(put(dk, run.out.dk));
    ULYSSES_RETURN_IF_ERROR(put(dv, run.out.dv));
    if (!c.keep_saved) return Status::ok();
    for (HostTensor* t : {&dq, &dk, &dv}) testing::poison(*t);
    std::fill(ws.begin(), ws.end(), 0xA5);
    ULYSSES_RETURN_IF_ERROR((*plan)->backward(b, nullptr));
    ULYSSES_RETURN_IF_ERROR(put(dq, run.again.dq));
    ULYSSES_RETURN_IF_ERROR(put(dk, run.again.dk));
    return put(dv, run.again.dv);
  };
  auto st = testing::run_ranks(c.P, rank, LoopbackOptions{.copies_own_rows = own_rows});
  EXPECT_ALL_OK(st);
  return run;
}

// Whether `mistake` is one for this draw (a buffer the plan needs; a backward to make it in).
bool applies(const SweepCase& c, Mistake mistake) {
  if (mistake == Mistake::kNone) return true;
  if (in_backward(mistake) && !c.training) return false;
  // Every rank must need the buffer (an all-gather rank's share may differ): a rank that needs
  // none would take the null pointer and go on to exchange with ranks that refused.
  std::vector<std::size_t> ws(static_cast<std::size_t>(c.P)), saved(ws.size());
  CudnnShaped kernel;
  testing::run_ranks(c.P, [&](int r, Communicator& comm) -> Status {
    auto plan = DistributedAttention::create(c.plan(), comm, kernel);
    if (plan.is_ok()) {
      ws[static_cast<std::size_t>(r)] = (*plan)->workspace_bytes();
      saved[static_cast<std::size_t>(r)] = (*plan)->saved_bytes();
    }
    return plan.status();
  });
  if (mistake == Mistake::kWorkspaceNull) return *std::min_element(ws.begin(), ws.end()) > 0;
  if (mistake == Mistake::kSavedNull) return *std::min_element(saved.begin(), saved.end()) > 0;
  return true;
}

void check(const SweepCase& c, Views views, std::mt19937_64& rng, Mistake mistake,
           bool own_rows = true) {
  const Inputs in = make_inputs(c, rng);
  const Inputs delivered = as_delivered(c, in);
  const Run got = distributed(c, in, views, mistake, own_rows);
  if (views.seq_major) {  // the arithmetic does not depend on the layout: the contiguous bits
    Views contiguous = views;
    contiguous.seq_major = false;
    const Run want = distributed(c, in, contiguous, Mistake::kNone, own_rows);
    EXPECT_BITWISE_EQ(want.out.o, got.out.o, "O, sbhd against contiguous");
    EXPECT_BITWISE_EQ(want.out.lse, got.out.lse, "LSE, sbhd against contiguous");
    EXPECT_BITWISE_EQ(want.out.dq, got.out.dq, "dQ, sbhd against contiguous");
    EXPECT_BITWISE_EQ(want.out.dk, got.out.dk, "dK, sbhd against contiguous");
    EXPECT_BITWISE_EQ(want.out.dv, got.out.dv, "dV, sbhd against contiguous");
  }
  if (mistake != Mistake::kNone) {  // refused alike on every rank, nothing written, plan usable
    for (int r = 0; r < c.P; ++r) {
      const Status& s = got.refused[static_cast<std::size_t>(r)];
      EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << "rank " << r << ": " << s.to_string();
      // The same words; the numbers may be the rank's own (an all-gather rank's workspace).
      EXPECT_EQ(testing::without_numbers(s.message()),
                testing::without_numbers(got.refused[0].message()))
          << "rank " << r;
      EXPECT_TRUE(got.untouched[static_cast<std::size_t>(r)]) << "rank " << r << " wrote outputs";
    }
  }
  const Tensors truth = unsharded(c, delivered, DType::kFloat64, false);
  auto within_2x = [&](const HostTensor& g, const HostTensor& plain, const HostTensor& t,
                       const std::string& what, double floor = 0) {
    EXPECT_EQ(testing::count_nan(g), 0) << what << ": elements never written";
    EXPECT_TRUE(
        testing::within_2x_rule(g, plain, t, floor + 0x1p-18 * std::max(1.0, testing::max_abs(t))))
        << what;
  };
  std::vector<std::pair<std::string, const HostTensor*>> grads;
  if (c.strategy == Strategy::kUlysses) {
    const Tensors plain = unsharded(c, delivered, c.dtype, false);
    EXPECT_BITWISE_EQ(plain.o, got.out.o, "O");
    EXPECT_BITWISE_EQ(plain.lse, got.out.lse, "LSE");
    if (c.training) {
      EXPECT_BITWISE_EQ(plain.dq, got.out.dq, "dQ");
      if (c.P > c.Hkv) {  // KV heads shared by ranks: fp32 partials summed
        within_2x(got.out.dk, plain.dk, truth.dk, "dK");
        within_2x(got.out.dv, plain.dv, truth.dv, "dV");
      } else {
        EXPECT_BITWISE_EQ(plain.dk, got.out.dk, "dK");
        EXPECT_BITWISE_EQ(plain.dv, got.out.dv, "dV");
      }
      for (int r = 0; c.sinks && r < c.P; ++r) {
        EXPECT_BITWISE_EQ(plain.dsinks, got.dsinks[static_cast<std::size_t>(r)],
                          "dSinks on rank " + std::to_string(r));
      }
    }
  } else {
    const Tensors plain = unsharded(c, delivered, c.dtype, true);
    // Sums of partials rounded once may land an ulp off where the plain run lands half an ulp
    // off: half an I/O ulp at the magnitude on top (as test_ring and the GPU suites).
    const double io = testing::half_ulp(c.dtype);
    auto within_2x_io = [&](const HostTensor& g, const HostTensor& p, const HostTensor& t,
                            const std::string& what) {
      within_2x(g, p, t, what, io * testing::max_abs(t));
    };
    within_2x_io(got.out.o, plain.o, truth.o, "O");
    within_2x(got.out.lse, plain.lse, truth.lse, "LSE");
    if (c.training) {
      within_2x_io(got.out.dq, plain.dq, truth.dq, "dQ");
      within_2x_io(got.out.dk, plain.dk, truth.dk, "dK");
      within_2x_io(got.out.dv, plain.dv, truth.dv, "dV");
      const double moved = c.sinks ? testing::dsinks_rounding_bound(delivered.d_o, plain.o, truth.o,
                                                                    truth.lse, delivered.sinks)
                                   : 0;
      for (int r = 0; c.sinks && r < c.P; ++r) {
        within_2x(got.dsinks[static_cast<std::size_t>(r)], plain.dsinks, truth.dsinks,
                  "dSinks on rank " + std::to_string(r), moved);
      }
    }
  }
  if (c.training && c.keep_saved) {
    EXPECT_BITWISE_EQ(got.out.dq, got.again.dq, "dQ of the second backward");
    EXPECT_BITWISE_EQ(got.out.dk, got.again.dk, "dK of the second backward");
    EXPECT_BITWISE_EQ(got.out.dv, got.again.dv, "dV of the second backward");
  }
}

// A kernel that takes no backward call with one query and one key row (as cuDNN's own SDPA
// backward does: CudnnAttention runs such calls through a kernel of its own).
Status no_one_key_backward(const LocalProblem& p) {
  if (p.backward && p.seqlen == 1 && p.kv_len() == 1) {
    return unsupported("no-one-key-backward: no backward with one query and one key row");
  }
  return Status::ok();
}

// A ring step in which one query of a chunk sees one key of another chunk, at the window's edge
// (chunks of 7 tokens on 3 ranks, window_left 8 = 1 mod 7), is a 1 x 1 call. A kernel that
// refuses it gets the plan refused when it is made, naming the call; the cuDNN backend takes it
// (its own kernel runs that backward), and the plan computes what the reference does.
TEST(Sweep, KernelRefusalsNameThePlansCall) {
  SweepCase c;
  c.strategy = Strategy::kRing;
  c.P = 3;
  c.S = 42;
  c.Hq = 4;
  c.Hkv = 2;
  c.D = 8;
  c.dtype = DType::kBFloat16;
  c.causal = true;
  c.wl = 8;
  RuledReference kernel("no-one-key-backward", no_one_key_backward);
  auto st = testing::run_ranks(c.P, [&](int, Communicator& comm) -> Status {
    return DistributedAttention::create(c.plan(), comm, kernel).status();
  });
  int refusing = 0;
  for (const Status& s : st) {
    if (s.code() == StatusCode::kConfigMismatch) continue;  // a peer's refusal, named there
    ++refusing;
    EXPECT_EQ(s.code(), StatusCode::kUnsupported) << s.to_string();
    for (const char* words : {"strategy ring calls kernel no-one-key-backward",
                              "1 query x 1 key rows", "training", "one query and one key"}) {
      EXPECT_NE(s.message().find(words), std::string::npos) << s.message();
    }
  }
  EXPECT_GE(refusing, 1);
  c.training = false;  // forward takes 1 x 1 calls
  EXPECT_ALL_OK(testing::run_ranks(c.P, [&](int, Communicator& comm) -> Status {
    return DistributedAttention::create(c.plan(), comm, kernel).status();
  }));
  c.training = true;
  CudnnShaped cudnn;
  EXPECT_ALL_OK(testing::run_ranks(c.P, [&](int, Communicator& comm) -> Status {
    return DistributedAttention::create(c.plan(), comm, cudnn).status();
  }));
  std::mt19937_64 rng(testing::fresh_seed());
  check(c, Views{}, rng, Mistake::kNone);
}

TEST(Sweep, WhatThePlanTakesItComputes) {
  const testing::SweepSeeds seeds = testing::sweep_seeds(kDefaultCases, testing::fresh_seed());
  std::map<std::string, int> refusals;
  std::map<Strategy, int> ran;
  CudnnShaped kernel;
  int draws = 0, mistakes = 0, seq_major = 0;
  for (std::uint64_t seed : seeds.seeds) {
    // A refused draw is replaced by the next draw of its own chain, so n seeds give n runs.
    auto draw = [](std::uint64_t s) { return testing::draw_case(s, host_space()); };
    SweepCase c = testing::wanted_draw(seed, draw);
    for (int tries = 0; tries < 50; ++tries, ++draws) {
      auto comms = create_loopback_group(c.P);
      ASSERT_TRUE(comms.is_ok()) << comms.status().to_string();
      Status refused;
      if (testing::plan_takes(c, *comms, kernel, refusals, &refused)) break;
      // The plans ask cuDNN only for calls it runs.
      EXPECT_EQ(refused.message().find("CudnnAttention"), std::string::npos)
          << c.describe() << ": " << refused.to_string();
      c = testing::wanted_draw(std::mt19937_64(c.seed)(), draw);
    }
    ++draws;
    std::mt19937_64 rng(c.seed ^ 0x5eedULL);
    Views views{.padded_heads = std::bernoulli_distribution(0.3)(rng)};
    auto mistake = Mistake::kNone;
    if (std::bernoulli_distribution(0.4)(rng)) {
      mistake = static_cast<Mistake>(
          std::uniform_int_distribution<int>(0, static_cast<int>(Mistake::kCount) - 1)(rng));
      if (!applies(c, mistake)) mistake = Mistake::kNone;
    }
    // Half the draws send a rank's own rows through the exchange, as over NCCL.
    const bool own_rows = std::bernoulli_distribution(0.5)(rng);
    // A third of the dense draws hand the activations over sequence-major (sbhd).
    views.seq_major = !packed(c) && std::bernoulli_distribution(1.0 / 3)(rng);
    const std::string how =
        std::string(views.padded_heads ? " strided" : "") + (views.seq_major ? " sbhd" : "") +
        (mistake == Mistake::kNone ? "" : " mistake " + std::to_string(static_cast<int>(mistake))) +
        (own_rows ? "" : " own-rows-exchanged");
    SCOPED_TRACE(c.describe() + how);
    if (seeds.replay) std::printf("%s%s\n", c.describe().c_str(), how.c_str());
    check(c, views, rng, mistake, own_rows);
    mistakes += mistake != Mistake::kNone;
    seq_major += views.seq_major;
    ++ran[c.strategy];
    if (HasFailure()) break;  // one failing draw is enough to replay
  }
  testing::print_sweep(ran, draws, refusals);
  std::printf("%d of them after a call with a mistake, refused; %d with sbhd views\n", mistakes,
              seq_major);
  // The sweep is not vacuous: the draws reach every strategy (at the default size).
  if (!seeds.replay && seeds.seeds.size() >= 60 && std::getenv("ULYSSES_SWEEP_MATCH") == nullptr) {
    EXPECT_EQ(ran.size(), 4u);
  }
}

}  // namespace
}  // namespace ulysses
