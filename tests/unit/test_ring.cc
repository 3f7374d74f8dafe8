// Ring attention, the Ulysses x ring hybrid and all-gather context parallelism on the loopback
// communicator, against the unsharded reference.
//
// Ring merges partial results (all-gather sums dK/dV partials over ranks) (block outputs by LSE,
// gradient partials by addition), so the result cannot be bitwise equal to one unsharded call.
// Every output is held to STYLE.md's 2x rule:
//   max|ring - truth| <= 2 max|plain - truth| + floor,
// truth = the unsharded FP64 reference on the same (rounded) inputs, plain = the unsharded
// reference in the run's dtype whose backward, like every real kernel, reads the rounded O and the
// fp32 LSE it was given (partial_keys). floor: a few fp32 ulps of the largest value.
#include <gtest/gtest.h>

#include <algorithm>
#include <mutex>
#include <tuple>

#include "common/check.h"
#include "common/test_util.h"

namespace ulysses {
namespace {

using testing::HostTensor;

struct Case {
  std::string name;
  Strategy strategy;
  int P;
  int U;  // hybrid: ulysses_degree
  std::int64_t B, S;
  int Hq, Hkv, D;
  DType dtype;
  bool causal = false;
  int wl = -1, wr = -1;
  bool sinks = false;
  bool training = true;
  std::vector<std::int32_t> lens = {};  // packed sequences' real lengths (layout thd, B = 1)
  PackedSharding sharding = PackedSharding::kDefault;  // packed: how ring and hybrid cut them
  int Dv = 0;                                          // head_dim_v (0: D)

  bool packed() const { return !lens.empty(); }
  std::int64_t dv() const { return Dv > 0 ? Dv : D; }  // V, O, dO, dV heads' width
  std::vector<std::int32_t> cu() const {
    std::vector<std::int32_t> out{0};
    for (std::int32_t l : lens) out.push_back(out.back() + l);
    return out;
  }
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

// V and O heads `dv` wide (head_dim_v; MLA: narrower than Q and K).
Case mla(Case c, int dv) {
  c.Dv = dv;
  return c;
}

void expect_invalid_packed(const Status& s) {
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  EXPECT_NE(s.message().find("cu_seqlens"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("padded"), std::string::npos) << s.message();
}

AttentionConfig attention(const Case& c) {
  return {.num_heads_q = c.Hq,
          .num_heads_kv = c.Hkv,
          .head_dim = c.D,
          .head_dim_v = c.Dv,
          .causal = c.causal,
          .window_left = c.wl,
          .window_right = c.wr,
          .sinks = c.sinks};
}

ParallelConfig parallel(const Case& c) {
  return {.strategy = c.strategy,
          .cp = c.P,
          .ulysses_degree = c.strategy == Strategy::kHybrid ? c.U : 0,
          .packed_sharding = c.sharding};
}

struct Tensors {
  HostTensor o, lse, dq, dk, dv, dsinks;
};
struct Inputs {
  HostTensor q, k, v, d_o, sinks;
};

Inputs make_inputs(const Case& c, std::mt19937_64& rng) {
  Inputs in{HostTensor(c.dtype, {c.B, c.S, c.Hq, c.D}), HostTensor(c.dtype, {c.B, c.S, c.Hkv, c.D}),
            HostTensor(c.dtype, {c.B, c.S, c.Hkv, c.dv()}),
            HostTensor(c.dtype, {c.B, c.S, c.Hq, c.dv()}), HostTensor(DType::kFloat32, {c.Hq})};
  for (HostTensor* t : {&in.q, &in.k, &in.v, &in.d_o}) testing::fill_uniform(*t, rng, -2.0, 2.0);
  testing::fill_uniform(in.sinks, rng, -1.0, 1.0);
  return in;
}

Tensors poisoned(const Case& c, DType dtype, std::int64_t S) {
  Tensors t{HostTensor(dtype, {c.B, S, c.Hq, c.dv()}),  HostTensor(DType::kFloat32, {c.B, c.Hq, S}),
            HostTensor(dtype, {c.B, S, c.Hq, c.D}),     HostTensor(dtype, {c.B, S, c.Hkv, c.D}),
            HostTensor(dtype, {c.B, S, c.Hkv, c.dv()}), HostTensor(DType::kFloat32, {c.Hq})};
  for (HostTensor* x : {&t.o, &t.lse, &t.dq, &t.dk, &t.dv, &t.dsinks}) testing::poison(*x);
  return t;
}

// The unsharded reference in `dtype`; backward reads the given (rounded) O and LSE, or with
// given_stats = false recomputes them as for a call that sees every key. fp32_kv_grads: dK and dV
// are written in fp32, then rounded to `dtype` (what a plan that sums fp32 partials returns).
Tensors unsharded(const Case& c, const Inputs& any, DType dtype, bool given_stats = true,
                  bool fp32_kv_grads = false) {
  const HostTensor q = testing::convert(any.q, dtype), k = testing::convert(any.k, dtype),
                   v = testing::convert(any.v, dtype), d_o = testing::convert(any.d_o, dtype);
  Tensors r = poisoned(c, dtype, c.S);
  LocalProblem p = LocalProblem::unsharded(attention(c), dtype, c.B, c.S);
  LocalForwardArgs f{.q = q.view, .k = k.view, .v = v.view, .o = r.o.view, .lse = r.lse.view};
  if (c.sinks) f.sinks = any.sinks.view;
  // Packed: every sequence at its padded offset, padding rows in no sequence.
  std::vector<std::int32_t> begin, len;
  if (c.packed()) {
    const std::vector<std::int32_t> cu = c.cu();
    auto offsets = packed_sequence_offsets(parallel(c), cu);
    EXPECT_TRUE(offsets.is_ok());
    for (std::size_t s = 0; s + 1 < cu.size(); ++s) {
      begin.push_back((*offsets)[s]);
      len.push_back(cu[s + 1] - cu[s]);
    }
    p.varlen = p.varlen_rows = true;
    f.rows = {.q_begin = begin, .q_len = len, .kv_begin = begin, .kv_len = len};
  }
  EXPECT_TRUE(reference_forward(p, f).is_ok());
  if (!c.training) return r;
  p.partial_keys = given_stats;
  LocalBackwardArgs b{.q = q.view,
                      .k = k.view,
                      .v = v.view,
                      .o = r.o.view,
                      .lse = r.lse.view,
                      .d_o = d_o.view,
                      .dq = r.dq.view,
                      .dk = r.dk.view,
                      .dv = r.dv.view,
                      .rows = f.rows};
  if (c.sinks) {
    b.sinks = any.sinks.view;
    b.dsinks = r.dsinks.view;
  }
  Tensors wide;
  if (fp32_kv_grads) {
    wide = poisoned(c, DType::kFloat32, c.S);
    p.grad_kv_dtype = DType::kFloat32;
    b.dk = wide.dk.view;
    b.dv = wide.dv.view;
  }
  EXPECT_TRUE(reference_backward(p, b).is_ok());
  if (fp32_kv_grads) {
    r.dk = testing::convert(wide.dk, dtype);
    r.dv = testing::convert(wide.dv, dtype);
  }
  return r;
}

// The reference kernel as a kernel that cannot add into gradient sums (accumulates_grads() keeps
// its default, false): ring attention must stage its block gradients.
class NonAccumulating final : public LocalAttention {
 public:
  std::string_view name() const override { return "reference-staged"; }
  Device device() const override { return inner_->device(); }
  bool provides_lse() const override { return true; }
  bool supports_backward() const override { return true; }
  Status check_support(const LocalProblem& p) const override {
    if (p.accumulate_dq || p.accumulate_dkv) return internal_error("asked to accumulate");
    return inner_->check_support(p);
  }
  Status forward(const LocalProblem& p, const LocalForwardArgs& a, Stream s) override {
    return inner_->forward(p, a, s);
  }
  Status backward(const LocalProblem& p, const LocalBackwardArgs& a, Stream s) override {
    if (p.accumulate_dq || p.accumulate_dkv) return internal_error("asked to accumulate");
    return inner_->backward(p, a, s);
  }

 private:
  std::unique_ptr<LocalAttention> inner_ = make_reference_attention();
};

// How distributed() runs: the kernel (staged: NonAccumulating), what forward saves, and where to
// report rank 0's plan's workspace_bytes() and saved_bytes().
struct RunOptions {
  bool staged = false;
  SavedActivations saved = SavedActivations::kHeadSharded;
  std::size_t* workspace_bytes = nullptr;
  std::size_t* saved_bytes = nullptr;
  bool strided = false;  // activations as views into wider tensors
  Payload payload = Payload::kNative;
  LocalAttention* kernel = nullptr;  // this kernel instead (shared by the ranks' threads)
};

// The distributed run: each rank copies its (zigzag) shard in, runs, and places its outputs back.
Tensors distributed(const Case& c, const Inputs& in, std::vector<HostTensor>& dsinks_per_rank,
                    const RunOptions& run = {}) {
  Tensors out = poisoned(c, c.dtype, c.S);
  dsinks_per_rank.assign(static_cast<std::size_t>(c.P), out.dsinks);
  std::unique_ptr<LocalAttention> own =
      run.staged ? std::make_unique<NonAccumulating>() : make_reference_attention();
  LocalAttention* kernel = run.kernel != nullptr ? run.kernel : own.get();
  const PlanConfig cfg{.attention = attention(c),
                       .parallel = parallel(c),
                       .layout = c.packed() ? Layout::kTHD : Layout::kBSHD,
                       .dtype = c.dtype,
                       .batch = c.B,
                       .seqlen = c.S,
                       .training = c.training,
                       .saved_activations = run.saved,
                       .payload = run.payload};
  const std::int64_t Sl = c.S / c.P;
  const std::vector<std::int32_t> cu = c.packed() ? c.cu() : std::vector<std::int32_t>{};
  auto st = testing::run_ranks(c.P, [&](int r, Communicator& comm) -> Status {
    auto plan = DistributedAttention::create(cfg, comm, *kernel);
    if (!plan.is_ok()) return plan.status();
    std::vector<unsigned char> ws((*plan)->workspace_bytes()), saved((*plan)->saved_bytes());
    if (r == 0 && run.workspace_bytes) *run.workspace_bytes = ws.size();
    if (r == 0 && run.saved_bytes) *run.saved_bytes = saved.size();
    // This rank's activations, [B, Sl, H, D]; with run.strided a view of the first H heads of a
    // wider tensor (like q, k, v cut out of a fused projection), so no stride is the contiguous
    // one.
    const std::int64_t pad = run.strided ? 3 : 0;
    auto tensor = [&](DType dtype, std::int64_t heads, std::int64_t width) {
      HostTensor t(dtype, {c.B, Sl, heads + pad, width});
      testing::poison(t);
      return t;
    };
    auto view = [&](const HostTensor& t) {
      TensorView v = t.view;
      v.shape[2] -= pad;
      return v;
    };
    auto act = [&](const HostTensor& t) {
      return c.packed() ? testing::drop_dim0(view(t)) : view(t);
    };
    auto mine = [&](const HostTensor& global) {
      HostTensor t = tensor(global.view.dtype, global.view.size(2), global.view.size(3));
      EXPECT_TRUE(copy_shard(global.view, view(t), 1, cfg.parallel, r, cu).is_ok());
      return t;
    };
    const HostTensor q = mine(in.q), k = mine(in.k), v = mine(in.v), d_o = mine(in.d_o);
    HostTensor o = tensor(c.dtype, c.Hq, c.dv()), dq = tensor(c.dtype, c.Hq, c.D),
               dk = tensor(c.dtype, c.Hkv, c.D), dv = tensor(c.dtype, c.Hkv, c.dv());
    HostTensor lse(DType::kFloat32, {c.B, c.Hq, Sl});
    testing::poison(lse);
    const TensorView lse_act = c.packed() ? testing::drop_dim0(lse.view) : lse.view;
    ForwardArgs f{.q = act(q),
                  .k = act(k),
                  .v = act(v),
                  .o = act(o),
                  .lse = lse_act,
                  .cu_seqlens = cu,
                  .workspace = ws.data(),
                  .saved = saved.data()};
    if (c.sinks) f.sinks = in.sinks.view;
    ULYSSES_RETURN_IF_ERROR((*plan)->forward(f, nullptr));
    ULYSSES_RETURN_IF_ERROR(place_shard(view(o), out.o.view, 1, cfg.parallel, r, cu));
    ULYSSES_RETURN_IF_ERROR(place_shard(lse.view, out.lse.view, 2, cfg.parallel, r, cu));
    if (!c.training) return Status::ok();
    std::fill(ws.begin(), ws.end(), 0xFF);  // scratch: backward may not find forward's there (NaN)
    const std::vector<unsigned char> saved_after_forward = saved;
    BackwardArgs b{.d_o = act(d_o),
                   .dq = act(dq),
                   .dk = act(dk),
                   .dv = act(dv),
                   .cu_seqlens = cu,
                   .workspace = ws.data(),
                   .saved = saved.data(),
                   .q = act(q),  // read with saved_activations = lse
                   .k = act(k),
                   .v = act(v),
                   .o = act(o)};
    if (c.sinks) {
      b.sinks = in.sinks.view;
      b.dsinks = dsinks_per_rank[static_cast<std::size_t>(r)].view;
    }
    ULYSSES_RETURN_IF_ERROR((*plan)->backward(b, nullptr));
    // attention.h: ring and hybrid never write `saved` in backward (it may be shared or reused).
    EXPECT_TRUE(saved == saved_after_forward) << "backward wrote saved on rank " << r;
    ULYSSES_RETURN_IF_ERROR(place_shard(view(dq), out.dq.view, 1, cfg.parallel, r, cu));
    ULYSSES_RETURN_IF_ERROR(place_shard(view(dk), out.dk.view, 1, cfg.parallel, r, cu));
    return place_shard(view(dv), out.dv.view, 1, cfg.parallel, r, cu);
  });
  EXPECT_ALL_OK(st);
  return out;
}

class RingVsReference : public ::testing::TestWithParam<Case> {};

TEST_P(RingVsReference, WithinTwiceThePlainError) {
  const Case c = GetParam();
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Inputs in = make_inputs(c, rng);
  const Tensors plain = unsharded(c, in, c.dtype);
  const Tensors truth = unsharded(c, in, DType::kFloat64);
  std::vector<HostTensor> dsinks;
  const Tensors got = distributed(c, in, dsinks);

  auto check = [&](const HostTensor& g, const HostTensor& p, const HostTensor& t, const char* what,
                   double floor = 0) {
    EXPECT_EQ(testing::count_nan(g), 0) << what << ": elements never written (or NaN)";
    EXPECT_TRUE(
        // 2^-18: a few tens of fp32 ulps of the largest value, what fp32 sums over blocks may
        // move (2^-20 failed packed_ring_p4_fp32_full's dQ by 15% once in 20000 runs).
        testing::within_2x_rule(g, p, t, floor + 0x1p-18 * std::max(1.0, testing::max_abs(t))))
        << what;
  };
  // O and the gradients come from fp32 sums of partials rounded once to the I/O dtype, which may
  // land an ulp from the truth where the plain run's single rounding lands half an ulp from it
  // (2.03x its error for one seed in a few thousand in bf16): half an I/O ulp at the tensor's
  // magnitude on top, as the GPU suites allow (gpu_ulysses_common.h).
  const double half_ulp = testing::half_ulp(c.dtype);
  auto check_io = [&](const HostTensor& g, const HostTensor& p, const HostTensor& t,
                      const char* what) { check(g, p, t, what, half_ulp * testing::max_abs(t)); };
  check_io(got.o, plain.o, truth.o, "O");
  check(got.lse, plain.lse, truth.lse, "LSE");
  if (!c.training) return;
  check_io(got.dq, plain.dq, truth.dq, "dQ");
  check_io(got.dk, plain.dk, truth.dk, "dK");
  check_io(got.dv, plain.dv, truth.dv, "dV");
  if (c.sinks) {
    // All-gather's calls that see every key of their rows recompute O exactly, its split parts
    // take the rounded O: dSinks may move by O's rounding row by row (about one seed in a hundred
    // of p2_gqa_bf16_causal_sinks_b2 past 2x the plain error without this floor).
    const double moved =
        testing::dsinks_rounding_bound(in.d_o, plain.o, truth.o, truth.lse, in.sinks);
    for (int r = 0; r < c.P; ++r) {
      check(dsinks[static_cast<std::size_t>(r)], plain.dsinks, truth.dsinks,
            ("dSinks on rank " + std::to_string(r)).c_str(), moved);
    }
  }
}

// A kernel that adds its block gradients into ring's running sums (accumulates_grads()) gives the
// same bits as one whose gradients ring stages and adds itself, with less workspace: no per-block
// dQ buffer, and with one ring step (hybrid, U = cp) no per-block dK/dV buffer either.
class RingGradientSums : public ::testing::TestWithParam<Case> {};

TEST_P(RingGradientSums, AccumulatedInTheKernelEqualStagedBitwise) {
  const Case c = GetParam();
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Inputs in = make_inputs(c, rng);
  std::vector<HostTensor> dsinks_added, dsinks_staged;
  std::size_t ws_added = 0, ws_staged = 0;
  const Tensors added = distributed(c, in, dsinks_added, {.workspace_bytes = &ws_added});
  const Tensors staged =
      distributed(c, in, dsinks_staged, {.staged = true, .workspace_bytes = &ws_staged});
  EXPECT_EQ(testing::count_nan(added.dq), 0);
  EXPECT_BITWISE_EQ(added.o, staged.o, "O");
  EXPECT_BITWISE_EQ(added.dq, staged.dq, "dQ");
  EXPECT_BITWISE_EQ(added.dk, staged.dk, "dK");
  EXPECT_BITWISE_EQ(added.dv, staged.dv, "dV");
  const int U = c.strategy == Strategy::kHybrid ? c.U : 1;
  const std::size_t rows = static_cast<std::size_t>(c.B * c.S / (c.P / U));
  const std::size_t acc = c.dtype == DType::kFloat64 ? 8 : 4;
  const std::size_t dq_blk = rows * static_cast<std::size_t>(c.Hq / U * c.D) * acc;
  const std::size_t dkv_blk =
      rows * static_cast<std::size_t>(std::max(1, c.Hkv / U) * (c.D + c.dv())) * acc;
  const bool one_step = c.P == U;
  EXPECT_GE(ws_staged, ws_added + dq_blk + (one_step ? dkv_blk : 0))
      << "staged " << ws_staged << " accumulated " << ws_added;
}

std::vector<Case> gradient_sum_cases() {
  const auto bf16 = DType::kBFloat16, fp32 = DType::kFloat32, fp16 = DType::kFloat16;
  const auto ring = Strategy::kRing, hybrid = Strategy::kHybrid;
  Case packed_one_step{
      "packed_hybrid_2x1_one_step_mqa_bf16", hybrid, 2, 2, 1, 48, 4, 1, 8, bf16, true};
  packed_one_step.lens = {9, 20, 11};  // one ring step in several calls: dK/dV add too
  // The packed stream: staged sums over the rows each call's documents span.
  Case stream{"stream_ring_p4_gqa_fp32_causal", ring, 4, 0, 1, 64, 4, 2, 8, fp32, true};
  stream.lens = {3, 30, 1, 17, 9};
  stream.sharding = PackedSharding::kStream;
  Case stream_window{"stream_ring_p2_bf16_window", ring, 2, 0, 1, 48, 4, 2, 8, bf16, true, 7};
  stream_window.lens = {20, 4, 21};
  stream_window.sharding = PackedSharding::kStream;
  return {
      Case{"ring_p2_gqa_causal_bf16", ring, 2, 0, 1, 64, 4, 2, 16, bf16, true},
      Case{"ring_p4_window_fp32", ring, 4, 0, 1, 64, 2, 1, 8, fp32, true, 9, 0},
      packed_one_step,
      Case{"hybrid_2x2_sinks_fp16", hybrid, 4, 2, 1, 64, 4, 2, 8, fp16, true, -1, -1, true},
      stream,
      stream_window,
      mla(Case{"mla_ring_p2_gqa_causal_bf16", ring, 2, 0, 1, 64, 4, 2, 24, bf16, true}, 16),
      mla(Case{"mla_hybrid_2x1_one_step_fp32_window", hybrid, 2, 2, 1, 32, 4, 2, 8, fp32, true, 5},
          24),
  };
}

INSTANTIATE_TEST_SUITE_P(Loopback, RingGradientSums, ::testing::ValuesIn(gradient_sum_cases()),
                         [](const auto& param_info) { return param_info.param.name; });

// SavedActivations::kLseOnly: forward keeps the LSE (and, with sinks, the fp32 O) only; backward
// builds the head-sharded Q, K, V, O again from the caller's q, k, v, o. Same arithmetic, so the
// same bits as saving them; saved_bytes() shrinks to the LSE.
class RingLseOnly : public ::testing::TestWithParam<Case> {};

TEST_P(RingLseOnly, SameBitsAsSavingTheHeadsWithOnlyTheLseSaved) {
  const Case c = GetParam();
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Inputs in = make_inputs(c, rng);
  std::vector<HostTensor> dsinks_heads, dsinks_lse;
  std::size_t saved_heads = 0, saved_lse = 0;
  const Tensors heads = distributed(c, in, dsinks_heads, {.saved_bytes = &saved_heads});
  const Tensors lse = distributed(c, in, dsinks_lse,
                                  {.saved = SavedActivations::kLseOnly, .saved_bytes = &saved_lse});
  EXPECT_EQ(testing::count_nan(lse.dq), 0);
  EXPECT_BITWISE_EQ(heads.o, lse.o, "O");
  EXPECT_BITWISE_EQ(heads.lse, lse.lse, "LSE");
  EXPECT_BITWISE_EQ(heads.dq, lse.dq, "dQ");
  EXPECT_BITWISE_EQ(heads.dk, lse.dk, "dK");
  EXPECT_BITWISE_EQ(heads.dv, lse.dv, "dV");
  for (int r = 0; r < c.P && c.sinks; ++r) {
    const auto i = static_cast<std::size_t>(r);
    EXPECT_BITWISE_EQ(dsinks_heads[i], dsinks_lse[i], "dSinks rank " + std::to_string(r));
  }
  // The caller's tensors with strides of their own (views into wider ones): what ring reads and
  // writes in place (bshd, U = 1) must follow them.
  for (SavedActivations saved : {SavedActivations::kHeadSharded, SavedActivations::kLseOnly}) {
    std::vector<HostTensor> dsinks_strided;
    const Tensors strided = distributed(c, in, dsinks_strided, {.saved = saved, .strided = true});
    const std::string name(saved_activations_name(saved));
    EXPECT_BITWISE_EQ(heads.o, strided.o, "O, strided, " + name);
    EXPECT_BITWISE_EQ(heads.dq, strided.dq, "dQ, strided, " + name);
    EXPECT_BITWISE_EQ(heads.dk, strided.dk, "dK, strided, " + name);
    EXPECT_BITWISE_EQ(heads.dv, strided.dv, "dV, strided, " + name);
  }
  // Saved: the fp32 LSE of the group's rows (plus their fp32 O with sinks), 256-byte aligned,
  // for rank 0's query heads (uneven heads: the group's most, ceil(Hkv / U) query groups).
  const int U = c.strategy == Strategy::kHybrid ? c.U : 1;
  const std::size_t rows = static_cast<std::size_t>(c.B * c.S / (c.P / U));
  const std::size_t hq =
      static_cast<std::size_t>(U <= c.Hkv ? (c.Hkv + U - 1) / U * (c.Hq / c.Hkv) : c.Hq / U);
  std::size_t want = rows * hq * 4;
  // (all-gather's kernel calls see every key of their rows: the sinks are in the LSE already)
  if (c.sinks && c.strategy != Strategy::kAllGather) {
    want += rows * hq * static_cast<std::size_t>(c.dv()) * 4;
  }
  EXPECT_GE(saved_lse, want);
  EXPECT_LE(saved_lse, want + 2 * 256);
  EXPECT_GT(saved_heads, saved_lse + rows * hq * static_cast<std::size_t>(c.D) * 2);
}

std::vector<Case> lse_only_cases() {
  const auto bf16 = DType::kBFloat16, fp32 = DType::kFloat32, fp16 = DType::kFloat16;
  const auto ring = Strategy::kRing, hybrid = Strategy::kHybrid;
  Case packed{"packed_hybrid_2x2_gqa_bf16_causal", hybrid, 4, 2, 1, 48, 4, 2, 8, bf16, true};
  packed.lens = {9, 20, 11};
  Case stream = packed;
  stream.name = "stream_hybrid_2x2_gqa_bf16_causal_window_sinks";
  stream.sharding = PackedSharding::kStream;
  stream.wl = 6;
  stream.sinks = true;
  return {
      Case{"ring_p2_gqa_causal_bf16", ring, 2, 0, 2, 64, 4, 2, 16, bf16, true},
      Case{"ring_p3_window_sinks_fp32", ring, 3, 0, 1, 96, 2, 1, 8, fp32, true, 9, 0, true},
      Case{"hybrid_2x2_mqa_fp16", hybrid, 4, 2, 1, 64, 4, 1, 8, fp16, false},
      packed,
      stream,
      mla(Case{"mla_ring_p3_window_sinks_fp32", ring, 3, 0, 1, 96, 2, 1, 16, fp32, true, 9, 0,
               true},
          8),
      mla(Case{"mla_hybrid_2x2_gqa_bf16_causal", hybrid, 4, 2, 2, 64, 4, 2, 24, bf16, true}, 16),
      // Uneven Ulysses groups (3 KV heads over 2: 2 and 1).
      Case{"uneven_hybrid_2x2_gqa_fp32_causal_sinks", hybrid, 4, 2, 1, 48, 6, 3, 8, fp32, true, -1,
           -1, true},
  };
}

INSTANTIATE_TEST_SUITE_P(Loopback, RingLseOnly, ::testing::ValuesIn(lse_only_cases()),
                         [](const auto& param_info) { return param_info.param.name; });

std::vector<Case> allgather_lse_only_cases() {
  const auto ag = Strategy::kAllGather;
  return {
      mla(Case{"allgather_mla_p2_gqa_causal_sinks_bf16", ag, 2, 0, 2, 64, 4, 2, 24,
               DType::kBFloat16, true, -1, -1, true},
          16),
      Case{"allgather_p2_gqa_causal_bf16", ag, 2, 0, 2, 64, 4, 2, 16, DType::kBFloat16, true},
      Case{"allgather_p3_window_sinks_fp32", ag, 3, 0, 1, 96, 2, 1, 8, DType::kFloat32, true, 9, 0,
           true},
      Case{"allgather_packed_p2_causal_sinks_fp32",
           ag,
           2,
           0,
           1,
           48,
           2,
           1,
           8,
           DType::kFloat32,
           true,
           -1,
           -1,
           true,
           true,
           {11, 20, 7}},
      // Forward's staged row classes live in the workspace after kv_all, which backward (lse)
      // gathers again at forward's offset (found by the sweep: staged before it, they moved it).
      Case{"allgather_packed_p4_two_sided_window_gqa_fp32",
           ag,
           4,
           0,
           1,
           64,
           4,
           2,
           8,
           DType::kFloat32,
           false,
           3,
           2,
           true,
           true,
           {15, 40, 6}},
  };
}

INSTANTIATE_TEST_SUITE_P(AllGather, RingLseOnly, ::testing::ValuesIn(allgather_lse_only_cases()),
                         [](const auto& param_info) { return param_info.param.name; });

// Payload::kFp8: K and V travel the ring as FP8 rows, and the rank that owns a block computes with
// the rounded values too, so every result is bitwise ring's native one on K and V rounded that way
// (Q, dO and the sinks unchanged) -- whatever forward saved and whether the kernel adds its block
// gradients itself. The workspace stays that of native: the ring buffers hold codes at about half
// size, plus one block to decode into (half a block more with a single ring step).
class RingFp8 : public ::testing::TestWithParam<Case> {};

TEST_P(RingFp8, BitwiseTheNativeRingOnRoundedKeysAndValues) {
  const Case c = GetParam();
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Inputs in = make_inputs(c, rng);
  // Rows of gcd(D, Dv) values, each with its own scale. With two head widths every other such
  // piece of K and V is 2^-20 smaller, which one scale per head would flush to zero.
  const std::int64_t unit = std::gcd(c.D, c.dv());
  if (c.Dv > 0) {
    for (HostTensor* t : {&in.k, &in.v}) {
      const std::int64_t width = t->view.shape[3];
      for (std::int64_t i = 0; i < t->numel(); ++i) {
        if ((i % width) / unit % 2 == 1) t->set(i, std::ldexp(t->at(i), -20));
      }
    }
  }
  Inputs rounded = in;
  rounded.k = testing::fp8_rounded(in.k, unit);
  rounded.v = testing::fp8_rounded(in.v, unit);
  EXPECT_GT(testing::compare_bits(in.k, rounded.k).count, in.k.numel() / 2);
  EXPECT_GT(testing::compare_bits(in.v, rounded.v).count, in.v.numel() / 2);
  std::vector<HostTensor> dsinks_want;
  std::size_t ws_native = 0;
  const Tensors want = distributed(c, rounded, dsinks_want, {.workspace_bytes = &ws_native});
  const std::vector<std::pair<std::string, RunOptions>> runs = {
      {"heads", {}},
      {"lse", {.saved = SavedActivations::kLseOnly}},
      {"staged", {.staged = true}},
  };
  for (auto [name, run] : runs) {
    SCOPED_TRACE(name);
    std::size_t ws_fp8 = 0;
    run.payload = Payload::kFp8;
    run.workspace_bytes = &ws_fp8;
    std::vector<HostTensor> dsinks;
    const Tensors got = distributed(c, in, dsinks, run);
    EXPECT_EQ(testing::count_nan(got.o), 0) << "O elements never written";
    // At cp = 1 native runs the one-rank plan (one kernel call) and fp8 the strategy's own plan
    // (chunks whose fp32 partials are summed), so a value near a rounding boundary may land one
    // ulp apart (seed 2404771321706860229 on all-gather p1: one element of dV): there both are
    // held to one ulp of the largest value (fp32: four, LSE and dSinks sum differently); from
    // cp = 2 both run the same plan, bit for bit.
    auto same = [&](const HostTensor& w, const HostTensor& g, const std::string& what) {
      if (c.P > 1) {
        EXPECT_BITWISE_EQ(w, g, what);
        return;
      }
      const double ulp = w.view.dtype == DType::kBFloat16  ? 0x1p-8
                         : w.view.dtype == DType::kFloat16 ? 0x1p-11
                                                           : 0x1p-22;
      EXPECT_LE(testing::max_abs_diff(w, g), 2 * ulp * testing::max_abs(w)) << what;
    };
    same(want.o, got.o, "O");
    same(want.lse, got.lse, "LSE");
    if (c.training) {
      same(want.dq, got.dq, "dQ");
      same(want.dk, got.dk, "dK");
      same(want.dv, got.dv, "dV");
      for (int r = 0; r < c.P && c.sinks; ++r) {
        const auto i = static_cast<std::size_t>(r);
        same(dsinks_want[i], dsinks[i], "dSinks rank " + std::to_string(r));
      }
    }
    if (name != "heads") continue;
    // FP8 rows per token and batch entry for `kv` KV heads: K|V rows of kv (D + Dv) values cut
    // into rows of `unit` values, each unit + 1 bytes.
    auto fp8_rows = [&](int kv) { return static_cast<std::size_t>(kv * (c.D + c.dv()) / unit); };
    if (c.strategy == Strategy::kAllGather) {
      // FP8 rows of this rank's two chunks and of each arriving one (at most all 2 cp chunks):
      // c rows of B x 2 Hkv heads, D + 1 bytes each. (At cp = 1 native runs the one-rank plan.)
      if (c.P == 1) continue;
      const std::size_t chunk = static_cast<std::size_t>(c.B * c.S / (2 * c.P)) * fp8_rows(c.Hkv) *
                                static_cast<std::size_t>(unit + 1);
      EXPECT_LE(ws_fp8, ws_native + static_cast<std::size_t>(2 * c.P) * (chunk + 16) + 2 * 256)
          << "fp8 " << ws_fp8 << " native " << ws_native;
      continue;
    }
    // One KV block of the group: 2c tokens of B x rank 0's K|V rows (uneven: the most heads).
    const int U = c.strategy == Strategy::kHybrid ? c.U : 1;
    const std::size_t rows = static_cast<std::size_t>(c.B * c.S / (c.P / U)) *
                             fp8_rows(std::max(1, (c.Hkv + U - 1) / U));
    const std::size_t codes = rows * static_cast<std::size_t>(unit + 1);
    const bool one_step = c.P == U;
    EXPECT_LE(ws_fp8, ws_native + (one_step ? codes : 2 * rows) + 3 * 256)
        << "fp8 " << ws_fp8 << " native " << ws_native;
  }
}

std::vector<Case> fp8_cases() {
  const auto bf16 = DType::kBFloat16, fp16 = DType::kFloat16, fp32 = DType::kFloat32,
             fp64 = DType::kFloat64;
  const auto ring = Strategy::kRing, hybrid = Strategy::kHybrid;
  Case packed{"packed_ring_p2_gqa_bf16_causal", ring, 2, 0, 1, 40, 4, 2, 16, bf16, true};
  packed.lens = {5, 12, 1, 9};
  Case stream = packed;
  stream.name = "stream_ring_p4_gqa_bf16_causal";
  stream.P = 4;
  stream.sharding = PackedSharding::kStream;
  Case inference{"ring_p2_inference_bf16_sinks", ring, 2, 0, 1, 16, 4, 2, 16, bf16, true};
  inference.sinks = true;
  inference.training = false;
  Case packed_mla = packed;
  packed_mla.name = "mla_packed_ring_p2_gqa_bf16_causal";
  return {
      {"ring_p2_gqa_bf16_causal_sinks", ring, 2, 0, 2, 32, 4, 2, 16, bf16, true, -1, -1, true},
      {"ring_p4_mqa_fp32_window", ring, 4, 0, 1, 32, 4, 1, 8, fp32, true, 5},
      {"ring_p3_fp64_odd_dim_full", ring, 3, 0, 1, 18, 2, 2, 5, fp64},
      {"hybrid_2x2_gqa_bf16_causal", hybrid, 4, 2, 2, 24, 8, 4, 8, bf16, true},
      {"hybrid_4x2_replicated_kv_fp16_causal", hybrid, 8, 4, 1, 32, 8, 2, 8, fp16, true},
      {"hybrid_4x1_one_step_fp32_sinks", hybrid, 4, 4, 1, 16, 4, 4, 8, fp32, true, -1, -1, true},
      packed,
      stream,
      inference,
      // Two head widths (MLA): rows of gcd(D, Dv) values.
      mla({"mla_ring_p2_gqa_bf16_causal_sinks", ring, 2, 0, 1, 32, 4, 2, 24, bf16, true, -1, -1,
           true},
          16),
      mla({"mla_ring_p3_fp32_window_wider_v", ring, 3, 0, 1, 36, 3, 1, 8, fp32, true, 5}, 24),
      mla({"mla_hybrid_2x2_gqa_fp16_causal", hybrid, 4, 2, 1, 24, 8, 4, 16, fp16, true}, 24),
      mla({"mla_hybrid_2x1_one_step_fp32_sinks", hybrid, 2, 2, 1, 16, 4, 4, 8, fp32, true, -1, -1,
           true},
          12),
      mla(packed_mla, 8),
  };
}

INSTANTIATE_TEST_SUITE_P(Loopback, RingFp8, ::testing::ValuesIn(fp8_cases()),
                         [](const auto& param_info) { return param_info.param.name; });

// All-gather: the K/V chunks travel as FP8 rows (the owner computes with them rounded too), so
// again bitwise the native plan on K and V rounded that way.
std::vector<Case> allgather_fp8_cases() {
  const auto bf16 = DType::kBFloat16, fp16 = DType::kFloat16, fp32 = DType::kFloat32;
  const auto ag = Strategy::kAllGather;
  Case packed{"p4_packed_gqa_bf16_causal_window", ag, 4, 0, 1, 64, 4, 2, 16, bf16, true, 9};
  packed.lens = {5, 30, 1, 17};
  Case packed_two_sided{
      "p2_packed_bf16_two_sided_window", ag, 2, 0, 1, 48, 4, 2, 16, bf16, false, 5, 3};
  packed_two_sided.lens = {9, 30, 6};
  Case inference{"p2_inference_fp16_sinks", ag, 2, 0, 1, 16, 4, 2, 16, fp16, true};
  inference.sinks = true;
  inference.training = false;
  return {
      {"p1_gqa_bf16_causal", ag, 1, 0, 1, 16, 4, 2, 16, bf16, true},
      {"p2_gqa_bf16_causal_sinks_b2", ag, 2, 0, 2, 32, 4, 2, 16, bf16, true, -1, -1, true},
      {"p3_mqa_fp32_window", ag, 3, 0, 1, 36, 3, 1, 8, fp32, true, 5},
      {"p4_fp16_full_two_sided", ag, 4, 0, 1, 32, 2, 2, 8, fp16, false, 6, 3},
      {"p8_gqa_bf16_causal", ag, 8, 0, 1, 64, 8, 2, 8, bf16, true},
      packed,
      packed_two_sided,
      inference,
      mla({"mla_p2_gqa_bf16_causal_sinks", ag, 2, 0, 1, 32, 4, 2, 24, bf16, true, -1, -1, true},
          16),
      mla({"mla_p3_fp32_window_wider_v", ag, 3, 0, 1, 36, 3, 1, 8, fp32, true, 5}, 24),
  };
}

INSTANTIATE_TEST_SUITE_P(AllGather, RingFp8, ::testing::ValuesIn(allgather_fp8_cases()),
                         [](const auto& param_info) { return param_info.param.name; });

std::vector<Case> cases() {
  const auto bf16 = DType::kBFloat16, fp32 = DType::kFloat32, fp64 = DType::kFloat64;
  const auto ring = Strategy::kRing, hybrid = Strategy::kHybrid;
  return {
      // Ring: P = 1 (one step), 2, 3, 4, 8.
      {"ring_p1_fp32_causal", ring, 1, 0, 1, 6, 2, 1, 8, fp32, true},
      {"ring_p2_gqa_bf16_causal_sinks", ring, 2, 0, 2, 16, 4, 2, 16, bf16, true, -1, -1, true},
      {"ring_p2_mha_fp32_full", ring, 2, 0, 1, 12, 2, 2, 8, fp32},
      {"ring_p3_gqa_fp32_causal_odd", ring, 3, 0, 1, 18, 3, 1, 8, fp32, true},
      {"ring_p4_mqa_bf16_causal_window", ring, 4, 0, 1, 32, 4, 1, 8, bf16, true, 5},
      {"ring_p4_gqa_fp32_two_sided_window_sinks", ring, 4, 0, 2, 24, 4, 2, 8, fp32, false, 4, 2,
       true},
      {"ring_p4_fp64_causal_window_sinks", ring, 4, 0, 1, 16, 2, 1, 4, fp64, true, 3, -1, true},
      {"ring_p8_gqa_fp32_causal_sinks", ring, 8, 0, 1, 32, 4, 2, 8, fp32, true, -1, -1, true},
      {"ring_p8_mha_bf16_wide_window", ring, 8, 0, 1, 48, 2, 2, 8, bf16, true, 20},
      {"ring_p2_inference_bf16", ring, 2, 0, 1, 16, 4, 2, 16, bf16, true, -1, -1, true, false},
      // Hybrid U x R.
      {"hybrid_2x2_gqa_bf16_causal_sinks", hybrid, 4, 2, 2, 24, 8, 4, 8, bf16, true, -1, -1, true},
      {"hybrid_2x4_gqa_fp32_window", hybrid, 8, 2, 1, 32, 4, 2, 8, fp32, true, 6},
      {"hybrid_4x2_replicated_kv_bf16_causal", hybrid, 8, 4, 1, 32, 8, 2, 8, bf16, true},
      {"hybrid_4x2_mqa_fp32_two_sided_sinks", hybrid, 8, 4, 1, 48, 4, 1, 8, fp32, false, 7, 3,
       true},
      {"hybrid_4x1_is_ulysses_fp32_window", hybrid, 4, 4, 1, 16, 4, 4, 8, fp32, true, 3},
      // fp64 plans sum replicated KV heads' partials in fp64 (the sweep's first find: refused as
      // an internal error after the exchange).
      {"hybrid_4x1_replicated_kv_fp64_sinks", hybrid, 4, 4, 1, 16, 4, 2, 8, fp64, true, -1, -1,
       true},
      {"hybrid_4x2_replicated_kv_fp64_window", hybrid, 8, 4, 1, 32, 8, 2, 4, fp64, true, 5},
      {"hybrid_1x4_is_ring_bf16_causal", hybrid, 4, 1, 1, 16, 2, 2, 8, bf16, true},
      {"hybrid_2x2_inference_fp32", hybrid, 4, 2, 1, 16, 4, 2, 8, fp32, true, -1, -1, false, false},
      // Packed sequences (thd): each padded to a multiple of 2R, padding between and after them.
      {"packed_ring_p2_gqa_bf16_causal",
       ring,
       2,
       0,
       1,
       40,
       4,
       2,
       16,
       bf16,
       true,
       -1,
       -1,
       false,
       true,
       {5, 12, 1, 9}},
      {"packed_ring_p4_fp32_full",
       ring,
       4,
       0,
       1,
       40,
       2,
       2,
       8,
       fp32,
       false,
       -1,
       -1,
       false,
       true,
       {7, 16, 3}},
      {"packed_ring_p3_fp32_causal_sinks_no_tail",
       ring,
       3,
       0,
       1,
       36,
       3,
       1,
       8,
       fp32,
       true,
       -1,
       -1,
       true,
       true,
       {10, 2, 13}},
      {"packed_ring_p8_mqa_fp32_causal",
       ring,
       8,
       0,
       1,
       96,
       2,
       1,
       8,
       fp32,
       true,
       -1,
       -1,
       false,
       true,
       {40, 3, 21}},
      {"packed_hybrid_2x2_gqa_bf16_causal_sinks",
       hybrid,
       4,
       2,
       1,
       40,
       8,
       4,
       8,
       bf16,
       true,
       -1,
       -1,
       true,
       true,
       {9, 20, 4}},
      {"packed_hybrid_4x2_replicated_kv_fp32_causal",
       hybrid,
       8,
       4,
       1,
       64,
       8,
       2,
       8,
       fp32,
       true,
       -1,
       -1,
       false,
       true,
       {17, 6, 30}},
      {"packed_hybrid_2x4_fp64_causal_empty_seq",
       hybrid,
       8,
       2,
       1,
       64,
       4,
       2,
       4,
       fp64,
       true,
       -1,
       -1,
       true,
       true,
       {3, 25, 11, 0, 8}},
      // cu_seqlens padded with repeated offsets (static-shape loaders): 8 entries, 6 of them empty,
      // where seqlen / 2R = 4 sequences could hold tokens. Empty ones take no rows.
      {"packed_empty_entries_past_the_room",
       ring,
       2,
       0,
       1,
       16,
       4,
       2,
       8,
       fp32,
       true,
       -1,
       -1,
       true,
       true,
       {3, 0, 9, 0, 0, 0, 0, 0}},
      {"packed_ring_p2_inference_bf16",
       ring,
       2,
       0,
       1,
       24,
       4,
       2,
       8,
       bf16,
       true,
       -1,
       -1,
       true,
       false,
       {6, 11}},
      // Windows on packed documents: a pair of different chunks runs as an unmasked call and one
      // with the diagonal on the window's edge, each document's rows cut to its chunk size
      // (kernels/packed_pairs.h). Windows narrower and wider than chunks, documents of one chunk
      // row to several windows, empty ones, padding after and between them.
      {"packed_ring_p2_gqa_bf16_causal_window",
       ring,
       2,
       0,
       1,
       64,
       4,
       2,
       8,
       bf16,
       true,
       5,
       -1,
       false,
       true,
       {13, 30, 3, 9}},
      {"packed_ring_p4_fp32_two_sided_window_sinks",
       ring,
       4,
       0,
       1,
       96,
       4,
       2,
       8,
       fp32,
       false,
       6,
       3,
       true,
       true,
       {21, 2, 40, 0, 17}},
      {"packed_ring_p4_fp64_window_right_only",
       ring,
       4,
       0,
       1,
       64,
       2,
       1,
       4,
       fp64,
       false,
       -1,
       4,
       false,
       true,
       {30, 9, 16}},
      {"packed_ring_p8_mqa_fp32_causal_wide_window_sinks",
       ring,
       8,
       0,
       1,
       176,
       2,
       1,
       8,
       fp32,
       true,
       20,
       -1,
       true,
       true,
       {70, 5, 33, 16, 1}},
      {"packed_hybrid_2x2_gqa_bf16_causal_window_sinks",
       hybrid,
       4,
       2,
       1,
       64,
       4,
       2,
       8,
       bf16,
       true,
       3,
       -1,
       true,
       true,
       {19, 6, 30}},
      {"packed_ring_p2_fp32_causal_window_of_zero",
       ring,
       2,
       0,
       1,
       32,
       2,
       1,
       8,
       fp32,
       true,
       0,
       -1,
       false,
       true,
       {7, 18}},
      {"packed_ring_p4_inference_bf16_two_sided_window",
       ring,
       4,
       0,
       1,
       72,
       4,
       4,
       8,
       bf16,
       false,
       9,
       9,
       false,
       false,
       {33, 11, 12}},
      // head_dim_v != head_dim (MLA): KV blocks (and their travelling fp32 gradient sums) hold
      // hkv K heads of D then hkv V heads of Dv; O, its sums and dO are Dv wide, Q and dQ D wide.
      // Narrower V, wider V, coprime widths, replicated KV heads, packed documents.
      mla({"mla_ring_p2_gqa_bf16_causal_sinks", ring, 2, 0, 2, 16, 4, 2, 24, bf16, true, -1, -1,
           true},
          16),
      mla({"mla_ring_p3_fp32_two_sided_sinks_wider_v", ring, 3, 0, 1, 18, 3, 1, 8, fp32, false, 4,
           2, true},
          24),
      mla({"mla_ring_p4_mqa_fp64_causal_window_coprime", ring, 4, 0, 1, 32, 2, 1, 5, fp64, true, 6},
          3),
      mla({"mla_hybrid_2x2_gqa_bf16_causal_sinks", hybrid, 4, 2, 2, 24, 8, 4, 24, bf16, true, -1,
           -1, true},
          16),
      mla({"mla_hybrid_4x2_replicated_kv_fp32_window", hybrid, 8, 4, 1, 32, 8, 2, 16, fp32, true,
           5},
          8),
      mla({"mla_hybrid_2x2_inference_fp32", hybrid, 4, 2, 1, 16, 4, 2, 12, fp32, true, -1, -1,
           false, false},
          8),
      mla({"packed_mla_ring_p2_fp32_causal_window_sinks",
           ring,
           2,
           0,
           1,
           40,
           4,
           2,
           16,
           fp32,
           true,
           6,
           -1,
           true,
           true,
           {5, 12, 1, 9}},
          8),
      mla({"packed_mla_hybrid_2x2_gqa_bf16_causal",
           hybrid,
           4,
           2,
           1,
           48,
           4,
           2,
           12,
           bf16,
           true,
           -1,
           -1,
           false,
           true,
           {9, 20, 11}},
          20),
  };
}

INSTANTIATE_TEST_SUITE_P(Loopback, RingVsReference, ::testing::ValuesIn(cases()),
                         [](const auto& param_info) { return param_info.param.name; });

// Hybrid groups that split the KV heads unevenly (U < Hkv, U not dividing it: the first Hkv mod U
// group positions own one KV head more, each with its query group; head_routing.h).
std::vector<Case> uneven_hybrid_cases() {
  const auto bf16 = DType::kBFloat16, fp16 = DType::kFloat16, fp32 = DType::kFloat32,
             fp64 = DType::kFloat64;
  const auto hybrid = Strategy::kHybrid;
  Case packed{"packed_uneven_hybrid_2x2_gqa_bf16_causal_sinks",
              hybrid,
              4,
              2,
              1,
              64,
              6,
              3,
              8,
              bf16,
              true,
              -1,
              -1,
              true};
  packed.lens = {9, 20, 11};
  Case stream{"stream_uneven_hybrid_2x2_mha_fp32_causal_window",
              hybrid,
              4,
              2,
              1,
              64,
              3,
              3,
              8,
              fp32,
              true,
              9};
  stream.lens = {17, 30, 9};
  stream.sharding = PackedSharding::kStream;
  return {
      {"uneven_hybrid_2x2_mha_bf16_causal_sinks", hybrid, 4, 2, 2, 24, 3, 3, 8, bf16, true, -1, -1,
       true},
      {"uneven_hybrid_3x2_gqa_fp32_window", hybrid, 6, 3, 1, 48, 8, 4, 8, fp32, true, 7},
      {"uneven_hybrid_2x3_gqa_fp16_two_sided", hybrid, 6, 2, 1, 36, 6, 3, 8, fp16, false, 5, 2},
      {"uneven_hybrid_3x1_one_step_fp64_sinks", hybrid, 3, 3, 1, 12, 5, 5, 4, fp64, true, -1, -1,
       true},
      {"uneven_hybrid_2x2_inference_gqa_bf16", hybrid, 4, 2, 1, 16, 6, 3, 8, bf16, true, -1, -1,
       false, false},
      packed,
      stream,
      mla({"mla_uneven_hybrid_2x2_gqa_bf16_causal", hybrid, 4, 2, 1, 24, 6, 3, 24, bf16, true}, 16),
      mla({"mla_uneven_hybrid_3x2_fp32_sinks_wider_v", hybrid, 6, 3, 1, 24, 4, 4, 8, fp32, false,
           -1, -1, true},
          24),
  };
}

INSTANTIATE_TEST_SUITE_P(Uneven, RingVsReference, ::testing::ValuesIn(uneven_hybrid_cases()),
                         [](const auto& param_info) { return param_info.param.name; });

// Each rank of an uneven hybrid computes what ring rank j computes, for its own heads: the same
// zigzag chunks, the same kernel calls head by head, merges element by element. So every output is
// bitwise that of an R-rank ring on the same inputs, whatever the group's head counts, saved
// activations, kernel (staged gradients), strides or payload (fp8 K/V rows never span two heads).
// (R > 1: a one-rank ring is the unsharded kernel, with no merge.)
class HybridUneven : public ::testing::TestWithParam<Case> {};

TEST_P(HybridUneven, BitwiseTheRingOfItsGroups) {
  const Case c = GetParam();
  Case ring = c;
  ring.strategy = Strategy::kRing;
  ring.P = c.P / c.U;
  ring.U = 0;
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Inputs in = make_inputs(c, rng);
  const std::vector<std::pair<std::string, RunOptions>> runs = {
      {"heads", {}},
      {"lse_strided", {.saved = SavedActivations::kLseOnly, .strided = true}},
      {"staged", {.staged = true}},
      {"fp8", {.payload = Payload::kFp8}},
  };
  for (const auto& [name, run] : runs) {
    SCOPED_TRACE(name);
    std::vector<HostTensor> dsinks_hybrid, dsinks_ring;
    const Tensors got = distributed(c, in, dsinks_hybrid, run);
    const Tensors want = distributed(ring, in, dsinks_ring, run);
    EXPECT_EQ(testing::count_nan(got.o), 0) << "O elements never written";
    EXPECT_BITWISE_EQ(want.o, got.o, "O");
    EXPECT_BITWISE_EQ(want.lse, got.lse, "LSE");
    if (!c.training) continue;
    EXPECT_EQ(testing::count_nan(got.dq), 0) << "dQ elements never written";
    EXPECT_BITWISE_EQ(want.dq, got.dq, "dQ");
    EXPECT_BITWISE_EQ(want.dk, got.dk, "dK");
    EXPECT_BITWISE_EQ(want.dv, got.dv, "dV");
    for (int r = 0; r < c.P && c.sinks; ++r) {
      EXPECT_BITWISE_EQ(dsinks_ring[0], dsinks_hybrid[static_cast<std::size_t>(r)],
                        "dSinks rank " + std::to_string(r));
    }
  }
}

std::vector<Case> uneven_hybrid_ring_cases() {
  std::vector<Case> out;
  for (const Case& c : uneven_hybrid_cases()) {
    if (c.P > c.U) out.push_back(c);
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Loopback, HybridUneven, ::testing::ValuesIn(uneven_hybrid_ring_cases()),
                         [](const auto& param_info) { return param_info.param.name; });

// The packed stream cut like one sequence (PackedSharding::kStream): every packed ring and hybrid
// case above (documents across chunk boundaries, empty ones, padding after them), and documents
// that span several chunks, one per chunk, or many in one.
std::vector<Case> stream_cases() {
  std::vector<Case> out;
  for (Case c : cases()) {
    if (!c.packed()) continue;
    c.name = "stream_" + c.name;
    c.sharding = PackedSharding::kStream;
    out.push_back(c);
  }
  const auto ring = Strategy::kRing, hybrid = Strategy::kHybrid;
  const auto bf16 = DType::kBFloat16, fp32 = DType::kFloat32, fp64 = DType::kFloat64;
  const auto stream = PackedSharding::kStream;
  auto add = [&](Case c, std::vector<std::int32_t> lens) {
    c.lens = std::move(lens);
    c.sharding = stream;
    out.push_back(c);
  };
  // One document over every chunk but the last few rows; then many short ones.
  add({"stream_ring_p4_gqa_fp32_causal_long_doc", ring, 4, 0, 1, 64, 4, 2, 8, fp32, true}, {61});
  add({"stream_ring_p4_fp32_causal_short_docs", ring, 4, 0, 1, 64, 2, 1, 8, fp32, true},
      {3, 1, 5, 2, 7, 4, 1, 9, 6, 2, 8, 3, 5});
  // Documents ending exactly on chunk boundaries (c = 8), and one a window wide.
  add({"stream_ring_p4_bf16_causal_window_boundaries", ring, 4, 0, 1, 64, 4, 2, 8, bf16, true, 6},
      {8, 16, 8, 6, 26});
  add({"stream_ring_p2_fp64_two_sided_window_sinks", ring, 2, 0, 1, 48, 2, 1, 4, fp64, false, 5, 7,
       true},
      {30, 2, 14});
  add({"stream_ring_p8_mqa_fp32_window_right_only", ring, 8, 0, 1, 128, 2, 1, 8, fp32, false, -1,
       3},
      {50, 1, 40, 30});
  add({"stream_hybrid_2x2_gqa_bf16_full", hybrid, 4, 2, 1, 48, 4, 2, 8, bf16, false}, {20, 27});
  // Windows far shorter than a chunk (c = 16): pairs of chunks run over the band's rows only.
  add({"stream_ring_p4_fp32_causal_short_window_one_doc", ring, 4, 0, 1, 128, 2, 1, 8, fp32, true,
       5},
      {128});
  add({"stream_ring_p4_bf16_two_sided_short_window", ring, 4, 0, 1, 128, 4, 2, 8, bf16, false, 5,
       3},
      {70, 3, 40, 15});
  // Nothing but padding: step 0's one call holds no sequence (skipped; the sums start from zero).
  add({"stream_ring_p2_fp32_causal_only_padding", ring, 2, 0, 1, 16, 2, 1, 8, fp32, true}, {0});
  add({"stream_hybrid_2x2_fp32_full_only_padding", hybrid, 4, 2, 1, 16, 2, 2, 8, fp32, false},
      {0, 0});
  // One rank: the one-rank plan (the stream is the caller's rows as they are).
  add({"stream_ring_p1_fp32_causal_window_sinks", ring, 1, 0, 1, 24, 2, 1, 8, fp32, true, 4, -1,
       true},
      {5, 12, 4});
  add({"stream_hybrid_2x4_fp32_causal_wide_window_sinks", hybrid, 8, 2, 1, 128, 4, 2, 8, fp32, true,
       40, -1, true},
      {100, 5, 20});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Stream, RingVsReference, ::testing::ValuesIn(stream_cases()),
                         [](const auto& param_info) { return param_info.param.name; });

// The reference kernel, recording the shape and mask of every call the ranks make.
class RecordingKernel final : public LocalAttention {
 public:
  struct Call {
    bool backward = false, masked = false;
    std::int64_t seqlen = 0, seqlen_kv = 0, diagonal_offset = 0;
  };
  std::string_view name() const override { return "reference-recorded"; }
  Device device() const override { return inner_->device(); }
  bool provides_lse() const override { return inner_->provides_lse(); }
  bool supports_backward() const override { return inner_->supports_backward(); }
  bool accumulates_grads() const override { return inner_->accumulates_grads(); }
  Status check_support(const LocalProblem& p) const override { return inner_->check_support(p); }
  std::size_t workspace_bytes(const LocalProblem& p) const override {
    return inner_->workspace_bytes(p);
  }
  Status forward(const LocalProblem& p, const LocalForwardArgs& a, Stream s) override {
    record(p, false);
    return inner_->forward(p, a, s);
  }
  Status backward(const LocalProblem& p, const LocalBackwardArgs& a, Stream s) override {
    record(p, true);
    return inner_->backward(p, a, s);
  }
  std::vector<Call> calls() const {
    const std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

 private:
  void record(const LocalProblem& p, bool backward) {
    const bool masked = p.config.causal || p.config.window_left >= 0 || p.config.window_right >= 0;
    const std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back({backward, masked, p.seqlen, p.seqlen_kv, p.diagonal_offset});
  }
  std::unique_ptr<LocalAttention> inner_ = make_reference_attention();
  mutable std::mutex mu_;  // the ranks' threads share the kernel
  std::vector<Call> calls_;
};

// The packed stream under a window shorter than a chunk: a pair of different chunks runs over the
// rows the window lets see each other, one row more a side, not over the chunks' c rows (a call's
// fixed costs follow its rows); and where one document spans every chunk, no query sees all of a
// pair's keys, so no pair runs an unmasked call (the extra row keeps it so).
TEST(RingPackedStream, WindowedPairsRunOverTheBandsRowsOnly) {
  for (const auto& [wl, wr, causal] : {std::tuple{5, -1, true}, std::tuple{5, 3, false}}) {
    Case c{"one_doc", Strategy::kRing, 4, 0, 1, 128, 2, 1, 8, DType::kFloat32, causal, wl, wr};
    c.lens = {128};
    c.sharding = PackedSharding::kStream;
    SCOPED_TRACE("window " + std::to_string(wl) + "," + std::to_string(wr));
    std::mt19937_64 rng(testing::fresh_seed());
    const Inputs in = make_inputs(c, rng);
    RecordingKernel kernel;
    std::vector<HostTensor> dsinks;
    const Tensors got = distributed(c, in, dsinks, {.kernel = &kernel});
    EXPECT_EQ(testing::count_nan(got.dq), 0);
    const std::int64_t chunk = c.S / (2 * c.P), band = std::max(wl, wr) + 1;
    int self = 0, pairs = 0, backward = 0;
    for (const RecordingKernel::Call& call : kernel.calls()) {
      backward += call.backward ? 1 : 0;
      EXPECT_TRUE(call.masked) << "an unmasked call of " << call.seqlen << " x " << call.seqlen_kv
                               << " rows";
      if (call.diagonal_offset == 0) {  // a chunk against itself
        EXPECT_EQ(call.seqlen, chunk);
        ++self;
        continue;
      }
      EXPECT_LE(call.seqlen, band) << "offset " << call.diagonal_offset;
      EXPECT_LE(call.seqlen_kv, band) << "offset " << call.diagonal_offset;
      ++pairs;
    }
    // Forward and backward: 2P chunks against themselves; 2P - 1 pairs of adjacent chunks, and as
    // many the other way round under the two-sided window.
    EXPECT_EQ(self, 2 * 2 * c.P);
    EXPECT_EQ(pairs, 2 * (2 * c.P - 1) * (causal ? 1 : 2));
    EXPECT_EQ(2 * backward, self + pairs) << "backward runs forward's calls";
  }
}

// Strategy::kAllGather: zigzag shards like ring, one kernel call per query chunk on gathered K/V.
std::vector<Case> allgather_cases() {
  const auto bf16 = DType::kBFloat16, fp32 = DType::kFloat32, fp64 = DType::kFloat64;
  const auto fp16 = DType::kFloat16;
  const auto ag = Strategy::kAllGather;
  return {
      {"p1_fp32_causal", ag, 1, 0, 1, 6, 2, 1, 8, fp32, true},
      {"p2_gqa_bf16_causal_sinks_b2", ag, 2, 0, 2, 16, 4, 2, 16, bf16, true, -1, -1, true},
      {"p2_mha_fp32_full", ag, 2, 0, 1, 12, 2, 2, 8, fp32},
      {"p2_three_heads_fp32_causal", ag, 2, 0, 1, 8, 3, 3, 8, fp32, true},
      {"p3_gqa_fp32_causal_odd", ag, 3, 0, 1, 18, 3, 1, 8, fp32, true},
      {"p4_mqa_bf16_causal_window", ag, 4, 0, 1, 32, 4, 1, 8, bf16, true, 5},
      {"p4_gqa_fp32_two_sided_window_sinks", ag, 4, 0, 2, 24, 4, 2, 8, fp32, false, 4, 2, true},
      {"p4_fp64_causal_window_sinks", ag, 4, 0, 1, 16, 2, 1, 4, fp64, true, 3, -1, true},
      {"p4_fp16_full_window_right_only", ag, 4, 0, 1, 32, 2, 1, 8, fp16, false, -1, 3},
      {"p8_two_heads_fp32_causal_sinks", ag, 8, 0, 1, 32, 2, 1, 8, fp32, true, -1, -1, true},
      {"p8_mha_bf16_wide_window", ag, 8, 0, 1, 48, 2, 2, 8, bf16, true, 20},
      // Windows shorter than a chunk (8 rows): backward splits the calls whose keys start before
      // their queries, the part before the chunk covering only its first rows; batch 2 so that
      // those rows are not a prefix of the fp32 dQ sum.
      {"p2_gqa_bf16_causal_short_window_b2", ag, 2, 0, 2, 32, 4, 2, 8, bf16, true, 3},
      {"p2_fp32_causal_short_window_sinks_b2", ag, 2, 0, 2, 32, 2, 1, 8, fp32, true, 5, -1, true},
      {"p4_fp64_causal_window_of_one", ag, 4, 0, 1, 64, 2, 1, 4, fp64, true, 1},
      // Window wider than a chunk near the start: rank 1's call of chunk 1 (rows 8-15) has 8 keys
      // before it: backward splits its rows into those that see all 8 (8-11) and those that see a
      // suffix (cuDNN takes no windowed call with more query than key rows). fp32: in
      // bf16 the three parts' fp32 dK sum, rounded once, was an ulp off where the plain run's
      // rounding was not, at 2.04x its error, for about one seed in a hundred.
      {"p2_batch2_window_past_the_chunk_sinks", ag, 2, 0, 2, 32, 4, 2, 8, fp32, true, 11, -1, true},
      {"p2_inference_bf16", ag, 2, 0, 1, 16, 4, 2, 16, bf16, true, -1, -1, true, false},
      // Windows without causal, shorter than a chunk: backward runs the square of each call's
      // rows and the first (last) rows against the keys before (after) it; wider than a chunk
      // near the sequence's ends, the rows that see all of those keys run unmasked.
      {"p2_bf16_two_sided_short_window_sinks_b2", ag, 2, 0, 2, 32, 4, 2, 8, bf16, false, 3, 2,
       true},
      {"p2_fp32_two_sided_window_past_the_chunk_sinks_b2", ag, 2, 0, 2, 32, 2, 1, 8, fp32, false,
       11, 13, true},
      {"p4_fp32_short_window_right_only", ag, 4, 0, 1, 64, 2, 1, 8, fp32, false, -1, 3},
      // Packed sequences (thd), each padded to a multiple of 2P, padding between and after them.
      {"packed_p1_fp32_causal", ag, 1, 0, 1, 16, 2, 1, 8, fp32, true, -1, -1, false, true, {5, 9}},
      {"packed_p2_gqa_bf16_causal",
       ag,
       2,
       0,
       1,
       40,
       4,
       2,
       16,
       bf16,
       true,
       -1,
       -1,
       false,
       true,
       {5, 12, 1, 9}},
      {"packed_p4_fp32_full",
       ag,
       4,
       0,
       1,
       40,
       2,
       2,
       8,
       fp32,
       false,
       -1,
       -1,
       false,
       true,
       {7, 16, 3}},
      {"packed_p3_fp32_causal_sinks_no_tail",
       ag,
       3,
       0,
       1,
       36,
       3,
       1,
       8,
       fp32,
       true,
       -1,
       -1,
       true,
       true,
       {10, 2, 13}},
      {"packed_p8_mqa_fp32_causal",
       ag,
       8,
       0,
       1,
       96,
       2,
       1,
       8,
       fp32,
       true,
       -1,
       -1,
       false,
       true,
       {40, 3, 21}},
      {"packed_p4_bf16_causal_window",
       ag,
       4,
       0,
       1,
       64,
       4,
       2,
       8,
       bf16,
       true,
       5,
       -1,
       false,
       true,
       {13, 30, 6}},
      {"packed_p2_fp64_causal_window_sinks_empty_seq",
       ag,
       2,
       0,
       1,
       48,
       2,
       1,
       4,
       fp64,
       true,
       7,
       -1,
       true,
       true,
       {3, 25, 0, 11}},
      // Backward's windowed split on packed rows: the document crossing a chunk's start sees the
      // keys before it unmasked (rows whose window reaches its first key) and as a band (the
      // others); documents longer than the window crossing a chunk's start, one ending right
      // after it, and a window wider than a chunk.
      {"packed_p2_fp32_causal_short_window_long_docs_sinks",
       ag,
       2,
       0,
       1,
       64,
       2,
       1,
       8,
       fp32,
       true,
       5,
       -1,
       true,
       true,
       {20, 30, 3, 9}},
      {"packed_p2_bf16_causal_window_wider_than_chunk",
       ag,
       2,
       0,
       1,
       64,
       4,
       2,
       8,
       bf16,
       true,
       20,
       -1,
       false,
       true,
       {25, 30, 9}},
      // Windows without causal on packed documents: forward runs each row class as its own
      // call and merges them (row_parts()), backward the square of the chunk's rows plus the
      // keys before and after it (window_parts()). Documents crossing both ends of a chunk, one
      // spanning several chunks, an empty one, windows shorter and wider than a chunk, one side
      // only, and a window of one token.
      {"packed_p2_fp32_two_sided_short_window_sinks",
       ag,
       2,
       0,
       1,
       64,
       2,
       1,
       8,
       fp32,
       false,
       5,
       3,
       true,
       true,
       {20, 30, 3, 9}},
      {"packed_p4_bf16_two_sided_wide_window",
       ag,
       4,
       0,
       1,
       64,
       4,
       2,
       8,
       bf16,
       false,
       20,
       11,
       false,
       true,
       {25, 30, 9}},
      {"packed_p2_fp64_window_right_only_sinks_empty_seq",
       ag,
       2,
       0,
       1,
       48,
       2,
       1,
       4,
       fp64,
       false,
       -1,
       4,
       true,
       true,
       {3, 25, 0, 11}},
      {"packed_p4_fp32_window_left_only",
       ag,
       4,
       0,
       1,
       64,
       2,
       2,
       8,
       fp32,
       false,
       5,
       -1,
       false,
       true,
       {13, 30, 6}},
      {"packed_p3_fp32_two_sided_one_long_document",
       ag,
       3,
       0,
       1,
       60,
       3,
       1,
       8,
       fp32,
       false,
       4,
       7,
       false,
       true,
       {57}},
      {"packed_p2_fp32_window_of_one_token",
       ag,
       2,
       0,
       1,
       32,
       2,
       1,
       8,
       fp32,
       false,
       0,
       0,
       false,
       true,
       {10, 12, 7}},
      {"packed_p2_bf16_two_sided_inference_sinks",
       ag,
       2,
       0,
       1,
       40,
       4,
       2,
       16,
       bf16,
       false,
       6,
       2,
       true,
       false,
       {7, 19, 11}},
      {"packed_p2_inference_bf16",
       ag,
       2,
       0,
       1,
       24,
       4,
       2,
       8,
       bf16,
       true,
       -1,
       -1,
       true,
       false,
       {6, 11}},
      // head_dim_v != head_dim (MLA): kv_all's rows hold G K heads of D and G V heads of Dv, the
      // fp32 partials too; O, its staged row classes and the saved copy are Dv wide. Narrower V,
      // wider V, widths whose gcd is 1, packed with staged row classes.
      mla({"mla_p2_gqa_bf16_causal_sinks", ag, 2, 0, 2, 32, 4, 2, 24, bf16, true, -1, -1, true},
          16),
      mla({"mla_p3_mqa_fp32_two_sided_wider_v", ag, 3, 0, 1, 48, 3, 1, 8, fp32, false, 5, 3}, 24),
      mla({"mla_p4_fp64_window_coprime", ag, 4, 0, 1, 64, 2, 2, 5, fp64, true, 9}, 3),
      mla({"mla_packed_p2_fp32_two_sided_sinks",
           ag,
           2,
           0,
           1,
           48,
           4,
           2,
           12,
           fp32,
           false,
           4,
           6,
           true,
           true,
           {9, 20, 13}},
          8),
      mla({"mla_p2_inference_bf16", ag, 2, 0, 1, 32, 4, 2, 16, bf16, true, -1, -1, false, false},
          8),
  };
}

INSTANTIATE_TEST_SUITE_P(AllGather, RingVsReference, ::testing::ValuesIn(allgather_cases()),
                         [](const auto& param_info) { return param_info.param.name; });

// All-gather with one rank runs as Ulysses' one-rank plan: one kernel call on the whole sequence,
// bitwise the unsharded kernel, dK and dV included (the kernel writes them in the plan's dtype; the
// all-gather plan's fp32 sums, rounded once more, differed by an ulp for about one seed in twenty).
// The call sees every key of its rows, so the reference kernel's backward recomputes the
// statistics.
TEST(AllGather, OneRankIsTheUnshardedKernelBitwise) {
  for (const bool causal : {true, false}) {
    const Case c{"p1",   Strategy::kAllGather, 1, 0, 2, 16, 4, 2, 8, DType::kBFloat16,
                 causal, causal ? 5 : -1};
    const auto seed = testing::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + (causal ? " causal window" : " full"));
    std::mt19937_64 rng(seed);
    const Inputs in = make_inputs(c, rng);
    const Tensors plain = unsharded(c, in, c.dtype, /*given_stats=*/false, /*fp32_kv_grads=*/false);
    std::vector<HostTensor> dsinks;
    const Tensors got = distributed(c, in, dsinks);
    EXPECT_BITWISE_EQ(got.o, plain.o, "O");
    EXPECT_BITWISE_EQ(got.lse, plain.lse, "LSE");
    EXPECT_BITWISE_EQ(got.dq, plain.dq, "dQ");
    EXPECT_BITWISE_EQ(got.dk, plain.dk, "dK");
    EXPECT_BITWISE_EQ(got.dv, plain.dv, "dV");
  }
}

// Under a mask each call takes one chunk of queries, except on one rank (the whole sequence) and
// for rank P - 1's adjacent chunks while they are small (batch x c x heads up to 2^17): one call
// of both saves its fixed costs, but past that size its twice as large workspace set the step's
// peak memory. 4 heads of 8-row chunks are small; 2^15 heads of them are not (P = 2 only: the
// host reference's time).
TEST(AllGather, AdjacentChunksShareACallOnlyWhileSmall) {
  for (const int heads : {4, 1 << 15}) {
    for (const int P : heads == 4 ? std::vector<int>{1, 2, 4} : std::vector<int>{2}) {
      for (const bool causal : {true, false}) {
        const int wl = causal ? -1 : 5;  // causal, or a window on both sides
        const Case c{"p", Strategy::kAllGather, P,      0,  1, 16 * P, heads, 1,
                     8,   DType::kFloat32,      causal, wl, wl};
        SCOPED_TRACE(std::to_string(heads) + " heads, P " + std::to_string(P) +
                     (causal ? " causal" : " window 5,5"));
        std::mt19937_64 rng(testing::fresh_seed());
        const Inputs in = make_inputs(c, rng);
        RecordingKernel kernel;
        std::vector<HostTensor> dsinks;
        const Tensors got = distributed(c, in, dsinks, {.kernel = &kernel});
        EXPECT_EQ(testing::count_nan(got.dq), 0);
        const std::int64_t chunk = c.S / (2 * P);
        const bool both = P == 1 || heads == 4;  // rank P - 1 (every rank at P = 1) in one call
        std::int64_t widest = 0;
        int forward = 0;
        for (const RecordingKernel::Call& call : kernel.calls()) {
          widest = std::max(widest, call.seqlen);
          forward += call.backward ? 0 : 1;
        }
        EXPECT_EQ(widest, both ? 2 * chunk : chunk);
        // Causal: a forward call per query chunk, or per pair. (A window on both sides runs a
        // call's rows in three classes: row_parts().)
        if (causal) {
          EXPECT_EQ(forward, P == 1 ? 1 : (both ? 2 * P - 1 : 2 * P));
        }
      }
    }
  }
}

// The gathered K/V rows hold only the chunks a rank's queries see: with a window rank 0 of 4 sees
// chunks 0, 6 and 7 of 8 instead of all 8, and its saved kv_all shrinks by the other 5.
TEST(AllGather, AWindowShrinksTheGatheredRows) {
  std::size_t saved[2] = {0, 0};
  for (const int wl : {-1, 5}) {
    const Case c{"p4", Strategy::kAllGather, 4, 0, 1, 64, 4, 2, 8, DType::kFloat32, true, wl};
    std::mt19937_64 rng(testing::fresh_seed());
    const Inputs in = make_inputs(c, rng);
    std::vector<HostTensor> dsinks;
    distributed(c, in, dsinks, {.saved_bytes = &saved[wl < 0 ? 0 : 1]});
  }
  const std::size_t chunk_rows = 64 / 8, row = 1 * 2 * 2 * 8 * 4;  // B [2G] D fp32
  const std::size_t want = 5 * chunk_rows * row;
  EXPECT_GE(saved[0] - saved[1] + 256, want) << saved[0] << " vs " << saved[1];
  EXPECT_LE(saved[0] - saved[1], want + 256) << saved[0] << " vs " << saved[1];
}

// A kernel that cannot add into the fp32 dK/dV sums (its calls are staged and added by the plan)
// gives the same bits; strided caller tensors too.
TEST(AllGather, StagedGradientsAndStridedTensorsGiveTheSameBits) {
  for (const Case& c : allgather_cases()) {
    if (!c.training) continue;
    SCOPED_TRACE(c.name);
    const auto seed = testing::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const Inputs in = make_inputs(c, rng);
    std::vector<HostTensor> ds_added, ds_staged, ds_strided;
    const Tensors added = distributed(c, in, ds_added);
    const Tensors staged = distributed(c, in, ds_staged, {.staged = true});
    const Tensors strided = distributed(c, in, ds_strided, {.strided = true});
    for (const Tensors* t : {&staged, &strided}) {
      const std::string what = t == &staged ? "staged " : "strided ";
      EXPECT_BITWISE_EQ(added.o, t->o, what + "O");
      EXPECT_BITWISE_EQ(added.lse, t->lse, what + "LSE");
      EXPECT_BITWISE_EQ(added.dq, t->dq, what + "dQ");
      EXPECT_BITWISE_EQ(added.dk, t->dk, what + "dK");
      EXPECT_BITWISE_EQ(added.dv, t->dv, what + "dV");
    }
    for (int r = 0; r < c.P && c.sinks; ++r) {
      const auto i = static_cast<std::size_t>(r);
      EXPECT_BITWISE_EQ(ds_added[i], ds_staged[i], "dSinks rank " + std::to_string(r));
      EXPECT_BITWISE_EQ(ds_added[0], ds_added[i], "dSinks rank 0 vs " + std::to_string(r));
    }
  }
}

// Every token of a seqlen-S sequence is held by exactly one rank, S / cp tokens per rank.
void expect_each_token_once(const ParallelConfig& pc, std::int64_t S,
                            std::span<const std::int32_t> cu = {}) {
  std::vector<int> owner(static_cast<std::size_t>(S), -1);
  for (int r = 0; r < pc.cp; ++r) {
    auto ranges = shard_token_ranges(pc, S, r, cu);
    ASSERT_TRUE(ranges.is_ok()) << ranges.status().to_string();
    std::int64_t held = 0;
    for (const TokenRange& t : *ranges) {
      held += t.end - t.begin;
      for (std::int64_t i = t.begin; i < t.end; ++i) {
        EXPECT_EQ(owner[static_cast<std::size_t>(i)], -1) << "token " << i << " held twice";
        owner[static_cast<std::size_t>(i)] = r;
      }
    }
    EXPECT_EQ(held, S / pc.cp);
  }
  for (std::int64_t i = 0; i < S; ++i) EXPECT_NE(owner[static_cast<std::size_t>(i)], -1);
}

TEST(Sharding, ZigzagRangesCoverTheSequenceOnce) {
  for (const ParallelConfig& pc :
       {ParallelConfig{.strategy = Strategy::kRing, .cp = 4},
        ParallelConfig{.strategy = Strategy::kHybrid, .cp = 8, .ulysses_degree = 2},
        ParallelConfig{.strategy = Strategy::kUlysses, .cp = 3}}) {
    expect_each_token_once(pc, 48);
    for (int r = 0; r < pc.cp; ++r) {
      auto ids = shard_position_ids(pc, 48, r);
      ASSERT_TRUE(ids.is_ok());
      EXPECT_EQ((*ids)[0], (*shard_token_ranges(pc, 48, r))[0].begin);
    }
  }
  // Ring, cp = 2: 4 chunks of 12; rank 0 holds chunks 0 and 3, rank 1 chunks 1 and 2.
  const ParallelConfig ring{.strategy = Strategy::kRing, .cp = 2};
  EXPECT_EQ(*shard_token_ranges(ring, 48, 0), (std::vector<TokenRange>{{0, 12}, {36, 48}}));
  EXPECT_EQ(*shard_token_ranges(ring, 48, 1), (std::vector<TokenRange>{{12, 24}, {24, 36}}));
  // Hybrid 2 x 2: ring index 1, piece 1 of chunks 1 and 2 (chunks of 12, pieces of 6).
  const ParallelConfig hyb{.strategy = Strategy::kHybrid, .cp = 4, .ulysses_degree = 2};
  EXPECT_EQ(*shard_token_ranges(hyb, 48, 3), (std::vector<TokenRange>{{18, 24}, {30, 36}}));
  EXPECT_FALSE(shard_token_ranges(ring, 50, 0).is_ok());
}

TEST(Sharding, PackedSequencesZigzagPerSequence) {
  // Ring cp = 2: lengths 5, 12, 1 pad to 8, 12, 4 (multiples of 2R = 4) at offsets 0, 8, 20;
  // seqlen 28 leaves a tail of 4. Chunks per segment: 2, 3, 1, 1 tokens.
  const ParallelConfig ring{.strategy = Strategy::kRing, .cp = 2};
  const std::vector<std::int32_t> cu{0, 5, 17, 18};
  EXPECT_EQ(*packed_sequence_offsets(ring, cu), (std::vector<std::int32_t>{0, 8, 20, 24}));
  // Rank 0 (chunks 0 and 3 of every segment): H_0 = [0,2) [8,11) [20,21) [24,25), then H_3.
  EXPECT_EQ(*shard_token_ranges(ring, 28, 0, cu),
            (std::vector<TokenRange>{
                {0, 2}, {8, 11}, {20, 21}, {24, 25}, {6, 8}, {17, 20}, {23, 24}, {27, 28}}));
  // Position ids: inside each sequence, 0 for padding (sequence 0 has 5 real tokens: 6, 7 pad).
  EXPECT_EQ(*shard_position_ids(ring, 28, 0, cu),
            (std::vector<std::int32_t>{0, 1, 0, 1, 2, 0, 0, 0, 0, 9, 10, 11, 0, 0}));
  // Every strategy: each token held exactly once, S / cp per rank.
  for (const ParallelConfig& pc :
       {ring, ParallelConfig{.strategy = Strategy::kHybrid, .cp = 4, .ulysses_degree = 2},
        ParallelConfig{.strategy = Strategy::kRing, .cp = 3}}) {
    expect_each_token_once(pc, 48, cu);
  }
  // Too little room once padded, for the helpers and for a plan's call.
  expect_invalid_packed(shard_token_ranges(ring, 20, 0, cu).status());
}

TEST(Sharding, AllGatherShardsThePackedStreamLikeOneSequence) {
  // Llama 3's document masks: no padding, the stream's zigzag chunks (7 tokens at cp = 2, S = 28)
  // whatever the documents; positions restart at each document (0 past the last).
  const ParallelConfig ag{.strategy = Strategy::kAllGather, .cp = 2};
  const std::vector<std::int32_t> cu{0, 5, 17, 18};
  EXPECT_EQ(*packed_sequence_offsets(ag, cu), cu);
  for (int r = 0; r < 2; ++r)
    EXPECT_EQ(*shard_token_ranges(ag, 28, r, cu), *shard_token_ranges(ag, 28, r));
  EXPECT_EQ(*shard_position_ids(ag, 28, 1, cu),
            (std::vector<std::int32_t>{2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0, 0, 0, 0}));
  expect_each_token_once(ag, 28, cu);
}

TEST(Sharding, RingCanShardThePackedStreamLikeAllGather) {
  // PackedSharding::kStream: ring and hybrid take all-gather's layout (no padding; the stream's
  // zigzag chunks), and cut each chunk into U pieces as for one sequence.
  const std::vector<std::int32_t> cu{0, 5, 17, 18};
  const auto stream = PackedSharding::kStream;
  const ParallelConfig ring{.strategy = Strategy::kRing, .cp = 2, .packed_sharding = stream};
  const ParallelConfig ag{.strategy = Strategy::kAllGather, .cp = 2};
  EXPECT_EQ(*packed_sequence_offsets(ring, cu), cu);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(*shard_token_ranges(ring, 28, r, cu), *shard_token_ranges(ag, 28, r, cu));
    EXPECT_EQ(*shard_position_ids(ring, 28, r, cu), *shard_position_ids(ag, 28, r, cu));
  }
  const ParallelConfig hybrid{
      .strategy = Strategy::kHybrid, .cp = 4, .ulysses_degree = 2, .packed_sharding = stream};
  EXPECT_EQ(*shard_token_ranges(hybrid, 48, 1, cu), *shard_token_ranges(hybrid, 48, 1));
  expect_each_token_once(hybrid, 48, cu);
  // 18 tokens fit 20 rows as a stream; per sequence they pad to 24.
  EXPECT_TRUE(shard_token_ranges(ring, 20, 0, cu).is_ok());
  EXPECT_FALSE(
      shard_token_ranges(ParallelConfig{.strategy = Strategy::kRing, .cp = 2}, 20, 0, cu).is_ok());
}

TEST(Sharding, GatherUndoesCopyShard) {
  const ParallelConfig pc{.strategy = Strategy::kHybrid, .cp = 4, .ulysses_degree = 2};
  HostTensor global(DType::kFloat32, {2, 16, 3, 4}), back = global;
  std::mt19937_64 rng(testing::fresh_seed());
  testing::fill_uniform(global, rng);
  testing::poison(back);
  auto st = testing::run_ranks(4, [&](int r, Communicator& comm) -> Status {
    HostTensor shard(DType::kFloat32, {2, 4, 3, 4});
    ULYSSES_RETURN_IF_ERROR(copy_shard(global.view, shard.view, 1, pc, r));
    std::vector<unsigned char> scratch(4 * static_cast<std::size_t>(shard.numel()) * 4);
    HostTensor mine_back = back;  // every rank gathers into its own copy
    ULYSSES_RETURN_IF_ERROR(
        gather_sequence(comm, shard.view, mine_back.view, 1, pc, scratch.data(), nullptr));
    EXPECT_BITWISE_EQ(global, mine_back, "gathered on rank " + std::to_string(r));
    return Status::ok();
  });
  EXPECT_ALL_OK(st);
}

}  // namespace
}  // namespace ulysses

namespace ulysses {
namespace {

void expect_invalid(const Status& s, std::initializer_list<std::string_view> needles) {
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  for (std::string_view n : needles) {
    EXPECT_NE(s.message().find(n), std::string::npos) << "lacks '" << n << "': " << s.message();
  }
}

TEST(Sharding, BadArgumentsAreNamed) {
  const ParallelConfig ring{.strategy = Strategy::kRing, .cp = 2};
  expect_invalid(shard_token_ranges(ring, 48, 2).status(), {"rank", "got 2", "0..1"});
  expect_invalid(shard_token_ranges(ring, 50, 0).status(), {"seqlen", "got 50", "multiple of 4"});
  HostTensor global(DType::kFloat32, {1, 48, 2, 4}), wrong(DType::kFloat32, {1, 20, 2, 4});
  expect_invalid(copy_shard(global.view, wrong.view, 1, ring, 0), {"shard", "24 tokens"});
  expect_invalid(place_shard(wrong.view, global.view, 1, ring, 0), {"shard", "24 tokens"});
  expect_invalid(copy_shard(global.view, wrong.view, 4, ring, 0), {"seq_dim", "got 4"});
  auto st = testing::run_ranks(2, [&](int, Communicator& comm) -> Status {
    HostTensor shard(DType::kFloat32, {1, 12, 2, 4});
    std::vector<unsigned char> scratch(4096);
    return gather_sequence(comm, shard.view, global.view, 1,
                           ParallelConfig{.strategy = Strategy::kRing, .cp = 4}, scratch.data(),
                           nullptr);
  });
  for (const Status& s : st) expect_invalid(s, {"parallel.cp", "got 4", "comm.size()"});
}

TEST(LocalProblemChecks, BlockFieldsAreValidated) {
  // seqlen_kv / diagonal_offset describe blocks of a longer sequence: negative lengths, and blocks
  // of a packed batch, are refused by every kernel's shared checks.
  auto kernel = make_reference_attention();
  LocalProblem p = LocalProblem::unsharded(
      {.num_heads_q = 2, .num_heads_kv = 1, .head_dim = 8, .causal = true}, DType::kFloat32, 1, 8);
  p.seqlen_kv = -1;
  expect_invalid(kernel->check_support(p), {"seqlen_kv", "got -1"});
  p.seqlen_kv = 0;
  p.varlen = true;
  p.diagonal_offset = 4;
  expect_invalid(kernel->check_support(p), {"diagonal_offset", "varlen"});
}

TEST(LocalProblemChecks, KeyRowsFollowSeqlenKv) {
  // A block with 3 query rows against 5 key rows: views of the wrong key length are refused, the
  // right ones run, and the mask uses the diagonal offset (query i sees keys <= i + 2).
  auto kernel = make_reference_attention();
  LocalProblem p = LocalProblem::unsharded(
      {.num_heads_q = 1, .num_heads_kv = 1, .head_dim = 4, .causal = true}, DType::kFloat64, 1, 3);
  p.seqlen_kv = 5;
  p.diagonal_offset = 2;
  HostTensor q(DType::kFloat64, {1, 3, 1, 4}), k(DType::kFloat64, {1, 5, 1, 4}),
      v = k, o(DType::kFloat64, {1, 3, 1, 4}), lse(DType::kFloat32, {1, 1, 3}),
      short_k(DType::kFloat64, {1, 3, 1, 4});
  std::mt19937_64 rng(testing::fresh_seed());
  for (HostTensor* t : {&q, &k}) testing::fill_uniform(*t, rng);
  for (std::int64_t j = 0; j < 5; ++j) {
    for (int d = 0; d < 4; ++d) v.set(v.view.offset({0, j, 0, d}), static_cast<double>(j));
  }
  for (std::int64_t i = 0; i < q.numel(); ++i) q.set(i, 0.0);  // uniform weights over visible keys
  expect_invalid(
      kernel->forward(p, {.q = q.view, .k = short_k.view, .v = v.view, .o = o.view}, nullptr),
      {"k", "wrong shape"});
  ASSERT_TRUE(kernel
                  ->forward(p,
                            {.q = q.view, .k = k.view, .v = v.view, .o = o.view, .lse = lse.view},
                            nullptr)
                  .is_ok());
  for (std::int64_t i = 0; i < 3; ++i) {
    // keys 0..i+2 visible with equal weight: mean of 0..i+2 = (i + 2) / 2.
    EXPECT_DOUBLE_EQ(o.at(o.view.offset({0, i, 0, 0})), static_cast<double>(i + 2) / 2.0);
  }
}

}  // namespace
}  // namespace ulysses

namespace ulysses {
namespace {

TEST(RingPacked, CallsWithTooManyTokensOrSequencesAreRefusedOnEveryRank) {
  // Plan for 16 packed tokens on a ring of 2 (chunks of 4 per half): cu_seqlens whose padded
  // layout needs 20 tokens, or 5 non-empty sequences (more than seqlen / 2R = 4: 20 rows padded),
  // are refused before any data moves, with the same message on both ranks. (Empty sequences take
  // no rows: packed_empty_entries_past_the_room above runs with more entries than that.)
  auto kernel = make_reference_attention();
  const PlanConfig cfg{
      .attention = {.num_heads_q = 2, .num_heads_kv = 1, .head_dim = 4, .causal = true},
      .parallel = {.strategy = Strategy::kRing, .cp = 2},
      .layout = Layout::kTHD,
      .dtype = DType::kFloat32,
      .seqlen = 16,
      .training = false};
  for (const std::vector<std::int32_t>& cu :
       {std::vector<std::int32_t>{0, 5, 10, 15}, std::vector<std::int32_t>{0, 1, 2, 3, 4, 5, 5}}) {
    auto st = testing::run_ranks(2, [&](int, Communicator& comm) -> Status {
      auto plan = DistributedAttention::create(cfg, comm, *kernel);
      if (!plan.is_ok()) return plan.status();
      std::vector<unsigned char> ws((*plan)->workspace_bytes());
      HostTensor q(DType::kFloat32, {8, 2, 4}), kv(DType::kFloat32, {8, 1, 4}), o = q;
      return (*plan)->forward({.q = q.view,
                               .k = kv.view,
                               .v = kv.view,
                               .o = o.view,
                               .cu_seqlens = cu,
                               .workspace = ws.data()},
                              nullptr);
    });
    for (const Status& s : st) {
      EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
      EXPECT_NE(s.message().find("cu_seqlens"), std::string::npos) << s.message();
      EXPECT_EQ(s.message(), st[0].message());
    }
  }
}

}  // namespace
}  // namespace ulysses

namespace ulysses {
namespace {

// Passes every call on to `inner`, adding up the bytes of its point-to-point sends.
class CountingComm final : public ForwardingCommunicator {
 public:
  using ForwardingCommunicator::ForwardingCommunicator;
  std::size_t sent = 0;

  Status send(const void* data, std::size_t bytes, int peer, Stream stream) override {
    sent += bytes;
    return inner().send(data, bytes, peer, stream);
  }
};

TEST(Ring, TheLastDkvHopCarriesTheGradientsDtype) {
  // A 3-rank ring in bf16 (S = 24: 2 chunks of 4 rows per rank, 2 KV heads of D = 8): backward
  // passes K|V blocks on twice (bf16) and the fp32 dK|dV sums three times, the last hop (complete
  // sums on their way to their owner) rounded to bf16 first. fp32 sends every hop in fp32.
  auto kernel = make_reference_attention();
  for (const DType dtype : {DType::kBFloat16, DType::kFloat32}) {
    SCOPED_TRACE(std::string(dtype_name(dtype)));
    const std::size_t block = 8 * 2 * 16;  // rows x KV heads x (D + Dv) elements
    const std::size_t e = dtype_size(dtype);
    const std::size_t want = 2 * block * e + 2 * block * 4 + block * e;
    std::vector<std::size_t> sent(3);
    const PlanConfig cfg{
        .attention = {.num_heads_q = 4, .num_heads_kv = 2, .head_dim = 8, .causal = true},
        .parallel = {.strategy = Strategy::kRing, .cp = 3},
        .dtype = dtype,
        .batch = 1,
        .seqlen = 24};
    EXPECT_ALL_OK(testing::run_ranks(3, [&](int r, Communicator& comm) -> Status {
      CountingComm counting(comm);
      ULYSSES_ASSIGN_OR_RETURN(auto plan, DistributedAttention::create(cfg, counting, *kernel));
      HostTensor q(dtype, {1, 8, 4, 8}), kv(dtype, {1, 8, 2, 8}), o = q, d_o = q, dq = q, dk = kv,
                                                                  dv = kv;
      std::vector<unsigned char> ws(plan->workspace_bytes()), saved(plan->saved_bytes());
      ULYSSES_RETURN_IF_ERROR(plan->forward({.q = q.view,
                                             .k = kv.view,
                                             .v = kv.view,
                                             .o = o.view,
                                             .workspace = ws.data(),
                                             .saved = saved.data()},
                                            nullptr));
      counting.sent = 0;
      ULYSSES_RETURN_IF_ERROR(plan->backward({.d_o = d_o.view,
                                              .dq = dq.view,
                                              .dk = dk.view,
                                              .dv = dv.view,
                                              .workspace = ws.data(),
                                              .saved = saved.data()},
                                             nullptr));
      sent[static_cast<std::size_t>(r)] = counting.sent;
      return Status::ok();
    }));
    for (std::size_t r = 0; r < 3; ++r) EXPECT_EQ(sent[r], want) << "rank " << r;
  }
}

}  // namespace
}  // namespace ulysses
