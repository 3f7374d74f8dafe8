// Ulysses forward and backward on the loopback communicator against the unsharded FP64 reference.
//
// Heads are independent and the transport is a copy, so every rank's local kernel computes exactly
// what the unsharded run computes for those heads: O, LSE, dQ and dSinks must be bitwise equal, and
// so must dK/dV whenever each KV head's query group lives on one rank. When ranks outnumber KV
// heads (P > Hkv) a KV head's dK/dV is the sum of partials from P/Hkv ranks; floating-point
// addition is not associative, so those two are held to STYLE.md's 2x rule against an FP64 truth
// instead (the partials travel in fp32 and are summed in rank order, so they are still
// deterministic).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <numeric>
#include <string>

#include "common/test_util.h"

namespace ulysses {
namespace {

using testing::HostTensor;

struct Case {
  std::string name;
  int P;
  Layout layout;
  std::int64_t B, S;  // S: global tokens (per sequence, or packed incl. padding)
  int Hq, Hkv, D;
  DType dtype;
  bool causal = false;
  int wl = -1, wr = -1;
  bool sinks = false;
  std::vector<std::int32_t> cu = {};
  bool training = true;
  int chunks = 1;           // PlanConfig::overlap_chunks
  bool keep_saved = false;  // PlanConfig::backward_keeps_saved
  int rounds = 1;           // > 1: forward + backward this often, each backward tried twice
  SavedActivations saved = SavedActivations::kHeadSharded;  // PlanConfig::saved_activations
  int in_flight = 2;                                        // PlanConfig::chunks_in_flight
  Payload payload = Payload::kNative;                       // PlanConfig::payload
  bool concurrent = false;  // the kernel says its calls may overlap (ScribblingKernel)
  int Dv = 0;               // AttentionConfig::head_dim_v (0: D)
  // LoopbackOptions::copies_own_rows: false sends each rank's own rows through the exchanges, as
  // over NCCL; true (the loopback's default) packs them where they arrive.
  bool copies_own_rows = true;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

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

// `value`: V, O, dO or dV, of head_dim_v.
HostTensor activation(const Case& c, DType dtype, int heads, bool value = false) {
  const std::int64_t d = value && c.Dv > 0 ? c.Dv : c.D;
  if (c.layout == Layout::kTHD) return HostTensor(dtype, {c.S, heads, d});
  return HostTensor(dtype, {c.B, c.S, heads, d});
}
HostTensor lse_tensor(const Case& c) {
  if (c.layout == Layout::kTHD) return HostTensor(DType::kFloat32, {c.Hq, c.S});
  return HostTensor(DType::kFloat32, {c.B, c.Hq, c.S});
}
// Any activation as [B, S, H, D] for the local kernel; any lse as [B, H, S].
TensorView as4(const HostTensor& t) {
  if (t.view.ndim == 4) return t.view;
  return TensorView::contiguous(t.view.data, t.view.dtype,
                                {1, t.view.shape[0], t.view.shape[1], t.view.shape[2]});
}
TensorView as3(const HostTensor& t) {
  if (t.view.ndim == 3) return t.view;
  return TensorView::contiguous(t.view.data, t.view.dtype, {1, t.view.shape[0], t.view.shape[1]});
}

struct Outputs {
  HostTensor o, lse, dq, dk, dv, dsinks;
};

// The reference kernel, saying that its calls may run concurrently and asking for workspace that
// it fills with garbage on every call (as a kernel running beside another may): if two chunks'
// calls shared a workspace, or one overlapped a live buffer, results would change. Its workspace
// grows with the call's query heads, as cuDNN's does. Records each call's workspace.
class ScribblingKernel final : public LocalAttention {
 public:
  // kScratch + kPerHead per query head (not a multiple of the plan's alignment).
  static constexpr std::size_t kScratch = 1000, kPerHead = 512;
  explicit ScribblingKernel(LocalAttention& inner) : inner_(inner) {}
  std::vector<unsigned char*> workspaces;  // every call's, in order
  bool overlap = true;                     // what concurrent_calls() says

  std::string_view name() const override { return "scribbling-reference"; }
  Device device() const override { return inner_.device(); }
  bool provides_lse() const override { return inner_.provides_lse(); }
  bool supports_backward() const override { return inner_.supports_backward(); }
  bool concurrent_calls(const LocalProblem&) const override { return overlap; }
  Status check_support(const LocalProblem& p) const override { return inner_.check_support(p); }
  std::size_t workspace_bytes(const LocalProblem& p) const override {
    return own_bytes(p) + inner_.workspace_bytes(p);
  }
  Status forward(const LocalProblem& p, const LocalForwardArgs& a, Stream stream) override {
    LocalForwardArgs in = a;
    in.workspace = scribble(a.workspace, own_bytes(p));
    return inner_.forward(p, in, stream);
  }
  Status backward(const LocalProblem& p, const LocalBackwardArgs& a, Stream stream) override {
    LocalBackwardArgs in = a;
    in.workspace = scribble(a.workspace, own_bytes(p));
    return inner_.backward(p, in, stream);
  }
  static std::size_t own_bytes(const LocalProblem& p) {
    return kScratch + kPerHead * static_cast<std::size_t>(p.num_heads_q_local);
  }

 private:
  void* scribble(void* workspace, std::size_t bytes) {
    auto* w = static_cast<unsigned char*>(workspace);
    workspaces.push_back(w);
    if (w == nullptr) return nullptr;
    std::fill(w, w + bytes, static_cast<unsigned char>(0xA5 + workspaces.size()));
    return w + bytes;
  }
  LocalAttention& inner_;
};

// Refuses a call whose O, dO or dQ rows are not dense rows of the call's own heads: with cp > 1
// the plan's own rows hold exactly this rank's heads, as cuDNN's packed backward needs (Q, O, dO
// and dQ in one token stride; it stages Q into rows of that stride). Rows with room for more heads
// than the rank owns (uneven heads, first layout) overran that staging on an H200.
class DenseRowsKernel final : public LocalAttention {
 public:
  explicit DenseRowsKernel(LocalAttention& inner) : inner_(inner) {}
  std::string_view name() const override { return "dense-rows-reference"; }
  Device device() const override { return inner_.device(); }
  bool provides_lse() const override { return inner_.provides_lse(); }
  bool supports_backward() const override { return inner_.supports_backward(); }
  bool concurrent_calls(const LocalProblem& p) const override { return inner_.concurrent_calls(p); }
  Status check_support(const LocalProblem& p) const override { return inner_.check_support(p); }
  std::size_t workspace_bytes(const LocalProblem& p) const override {
    return inner_.workspace_bytes(p);
  }
  Status forward(const LocalProblem& p, const LocalForwardArgs& a, Stream stream) override {
    if (Status s = dense(p, a.o, "o"); !s.is_ok()) return s;
    return inner_.forward(p, a, stream);
  }
  Status backward(const LocalProblem& p, const LocalBackwardArgs& a, Stream stream) override {
    for (auto [t, what] :
         {std::pair{&a.o, "o"}, std::pair{&a.d_o, "d_o"}, std::pair{&a.dq, "dq"}}) {
      if (Status s = dense(p, *t, what); !s.is_ok()) return s;
    }
    return inner_.backward(p, a, stream);
  }

 private:
  static Status dense(const LocalProblem& p, const TensorView& t, const char* what) {
    if (t.size(2) != p.num_heads_q_local ||
        t.stride(1) != p.batch * p.num_heads_q_local * t.size(3)) {
      return internal_error(std::string(what) + ": rows of " + std::to_string(t.stride(1)) +
                            " elements per token for " + std::to_string(p.num_heads_q_local) +
                            " heads");
    }
    return Status::ok();
  }
  LocalAttention& inner_;
};

struct Inputs {
  HostTensor q, k, v, d_o, sinks;
};

Inputs make_inputs(const Case& c, std::mt19937_64& rng) {
  Inputs in{activation(c, c.dtype, c.Hq), activation(c, c.dtype, c.Hkv),
            activation(c, c.dtype, c.Hkv, true), activation(c, c.dtype, c.Hq, true),
            HostTensor(DType::kFloat32, {c.Hq})};
  for (HostTensor* t : {&in.q, &in.k, &in.v, &in.d_o}) testing::fill_uniform(*t, rng, -2.0, 2.0);
  testing::fill_uniform(in.sinks, rng, -1.0, 1.0);
  return in;
}

// The inputs as the head owners see them: Q, K, V and dO rounded as fp8 payload (sinks unchanged).
Inputs as_delivered(const Case& c, const Inputs& in) {
  if (c.payload == Payload::kNative) return in;
  // (Two head widths: every tensor in rows of gcd(D, Dv) values.)
  const std::int64_t u = std::gcd(c.D, c.Dv > 0 ? c.Dv : c.D);
  auto r = [&](const HostTensor& t) { return testing::fp8_rounded(t, u); };
  return {r(in.q), r(in.k), r(in.v), r(in.d_o), in.sinks};
}

Outputs poisoned_outputs(const Case& c, DType dtype) {
  Outputs r{activation(c, dtype, c.Hq, true),  lse_tensor(c),
            activation(c, dtype, c.Hq),        activation(c, dtype, c.Hkv),
            activation(c, dtype, c.Hkv, true), HostTensor(DType::kFloat32, {c.Hq})};
  for (HostTensor* t : {&r.o, &r.lse, &r.dq, &r.dk, &r.dv, &r.dsinks}) testing::poison(*t);
  return r;
}

// The unsharded reference on one "device", in `dtype` (the inputs are converted if needed).
Outputs unsharded(const Case& c, const Inputs& in_any, DType dtype) {
  Inputs in{testing::convert(in_any.q, dtype), testing::convert(in_any.k, dtype),
            testing::convert(in_any.v, dtype), testing::convert(in_any.d_o, dtype), in_any.sinks};
  Outputs r = poisoned_outputs(c, dtype);
  const LocalProblem p = LocalProblem::unsharded(
      attention(c), dtype, c.layout == Layout::kTHD ? 1 : c.B, c.S, c.layout == Layout::kTHD);
  LocalForwardArgs f;
  f.q = as4(in.q);
  f.k = as4(in.k);
  f.v = as4(in.v);
  if (c.sinks) f.sinks = in.sinks.view;
  f.o = as4(r.o);
  f.lse = as3(r.lse);
  f.cu_seqlens = c.cu;
  EXPECT_TRUE(reference_forward(p, f).is_ok());
  LocalBackwardArgs b;
  b.q = f.q;
  b.k = f.k;
  b.v = f.v;
  b.o = f.o;
  b.lse = f.lse;
  b.d_o = as4(in.d_o);
  if (c.sinks) {
    b.sinks = in.sinks.view;
    b.dsinks = r.dsinks.view;
  }
  b.dq = as4(r.dq);
  b.dk = as4(r.dk);
  b.dv = as4(r.dv);
  b.cu_seqlens = c.cu;
  if (c.training) {
    EXPECT_TRUE(reference_backward(p, b).is_ok());
  }
  return r;
}

// Ulysses on P loopback ranks; each rank reads its shard of the global inputs and writes its shard
// of the global outputs (dsinks: rank r's complete copy in per_rank_dsinks[r]).
Outputs ulysses(const Case& c, const Inputs& in, std::vector<HostTensor>& per_rank_dsinks) {
  Outputs out = poisoned_outputs(c, c.dtype);
  per_rank_dsinks.assign(static_cast<std::size_t>(c.P), out.dsinks);
  auto kernel = make_reference_attention();
  const PlanConfig cfg{.attention = attention(c),
                       .parallel = {.cp = c.P},
                       .layout = c.layout,
                       .dtype = c.dtype,
                       .batch = c.layout == Layout::kTHD ? 1 : c.B,
                       .seqlen = c.S,
                       .training = c.training,
                       .overlap_chunks = c.chunks,
                       .backward_keeps_saved = c.keep_saved,
                       .saved_activations = c.saved,
                       .chunks_in_flight = c.in_flight,
                       .payload = c.payload};
  // A backward may run twice on one forward when `saved` is kept, or when it holds only the LSE.
  const bool saved_survives = c.keep_saved || c.saved == SavedActivations::kLseOnly;
  auto st = testing::run_ranks(
      c.P,
      [&](int r, Communicator& comm) -> Status {
        // (cp = 1 hands the kernel the caller's views where it may: they need not be dense.)
        DenseRowsKernel dense(*kernel);
        LocalAttention& inner = c.P > 1 ? static_cast<LocalAttention&>(dense) : *kernel;
        ScribblingKernel scribbling(inner);
        LocalAttention& k = c.concurrent ? static_cast<LocalAttention&>(scribbling) : inner;
        auto plan = DistributedAttention::create(cfg, comm, k);
        if (!plan.is_ok()) return plan.status();
        std::vector<unsigned char> ws((*plan)->workspace_bytes()), saved((*plan)->saved_bytes());
        auto shard = [&](const HostTensor& t) {
          return shard_view(t.view, c.layout, c.P, r).value();
        };
        ForwardArgs f;
        f.q = shard(in.q);
        f.k = shard(in.k);
        f.v = shard(in.v);
        if (c.sinks) f.sinks = in.sinks.view;
        f.o = shard(out.o);
        f.lse = shard_lse_view(out.lse.view, c.layout, c.P, r).value();
        f.cu_seqlens = c.cu;
        f.workspace = ws.data();
        f.saved = saved.data();
        if (!c.training) return (*plan)->forward(f, nullptr);
        BackwardArgs b;
        b.d_o = shard(in.d_o);
        if (c.sinks) {
          b.sinks = in.sinks.view;
          b.dsinks = per_rank_dsinks[static_cast<std::size_t>(r)].view;
        }
        b.dq = shard(out.dq);
        b.dk = shard(out.dk);
        b.dv = shard(out.dv);
        b.cu_seqlens = c.cu;
        b.workspace = ws.data();
        b.saved = saved.data();
        if (c.saved == SavedActivations::kLseOnly) {  // exchanged again by backward
          b.q = f.q;
          b.k = f.k;
          b.v = f.v;
          b.o = f.o;
        }
        for (int round = 0; round < c.rounds; ++round) {
          if (Status s = (*plan)->forward(f, nullptr); !s.is_ok()) return s;
          std::fill(ws.begin(), ws.end(), 0xFF);  // scratch: backward may not find forward's there
          if (Status s = (*plan)->backward(b, nullptr); !s.is_ok()) return s;
          if (c.rounds == 1) break;
          // Again on the same `saved`: kept, it gives the same gradients (the caller checks them);
          // consumed, it is refused on every rank before data moves.
          Status again = (*plan)->backward(b, nullptr);
          if (saved_survives && !again.is_ok()) return again;
          if (!saved_survives && (again.code() != StatusCode::kInvalidArgument ||
                                  again.message().find("consumed") == std::string::npos)) {
            return internal_error("a second backward() on a consumed `saved` returned " +
                                  again.to_string());
          }
        }
        return Status::ok();
      },
      LoopbackOptions{.copies_own_rows = c.copies_own_rows});
  EXPECT_ALL_OK(st);
  return out;
}

class UlyssesVsReference : public ::testing::TestWithParam<Case> {};

TEST_P(UlyssesVsReference, ExactWhereHeadsAreIndependent) {
  const Case c = GetParam();
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Inputs in = make_inputs(c, rng);
  // FP8 with two head widths scales every gcd(D, Dv) values of a head on their own: every other
  // such piece 2^-20 smaller, which one scale per head would flush to zero.
  const std::int64_t unit = std::gcd(c.D, c.Dv > 0 ? c.Dv : c.D);
  if (c.payload == Payload::kFp8 && c.Dv > 0) {
    for (HostTensor* t : {&in.q, &in.k, &in.v, &in.d_o}) {
      const std::int64_t width = t->view.shape[t->view.ndim - 1];
      for (std::int64_t i = 0; i < t->numel(); ++i) {
        if ((i % width) / unit % 2 == 1) t->set(i, std::ldexp(t->at(i), -20));
      }
    }
  }
  // fp8 payload: exact against the reference on the rounded inputs, which really differ.
  const Inputs delivered = as_delivered(c, in);
  if (c.payload == Payload::kFp8) {
    EXPECT_GT(testing::compare_bits(in.q, delivered.q).count, in.q.numel() / 2);
  }
  const Outputs ref = unsharded(c, delivered, c.dtype);
  std::vector<HostTensor> dsinks;
  const Outputs got = ulysses(c, in, dsinks);

  EXPECT_EQ(testing::count_nan(got.o), 0) << "O elements never written";
  EXPECT_BITWISE_EQ(ref.o, got.o, "O");
  EXPECT_BITWISE_EQ(ref.lse, got.lse, "LSE");
  if (!c.training) return;
  EXPECT_EQ(testing::count_nan(got.dq) + testing::count_nan(got.dk) + testing::count_nan(got.dv), 0)
      << "gradient elements never written";
  EXPECT_BITWISE_EQ(ref.dq, got.dq, "dQ");
  const bool replicated = c.P > c.Hkv;
  if (!replicated) {
    EXPECT_BITWISE_EQ(ref.dk, got.dk, "dK");
    EXPECT_BITWISE_EQ(ref.dv, got.dv, "dV");
  } else {
    const Outputs truth = unsharded(c, delivered, DType::kFloat64);
    for (auto [name, g, plain, t] : {std::tuple{"dK", &got.dk, &ref.dk, &truth.dk},
                                     std::tuple{"dV", &got.dv, &ref.dv, &truth.dv}}) {
      // floor: a few fp32 ulps of the largest value (the partials are fp32).
      EXPECT_TRUE(testing::within_2x_rule(*g, *plain, *t, 0x1p-20 * testing::max_abs(*t))) << name;
    }
  }
  if (c.sinks) {
    for (int r = 0; r < c.P; ++r) {
      EXPECT_BITWISE_EQ(ref.dsinks, dsinks[static_cast<std::size_t>(r)],
                        "dSinks on rank " + std::to_string(r));
    }
  }
}

Case fp8(Case c) {
  c.payload = Payload::kFp8;
  return c;
}

Case concurrent(Case c) {
  c.concurrent = true;
  return c;
}

// V and O heads `dv` wide (head_dim_v; MLA: narrower than Q and K).
Case mla(Case c, int dv) {
  c.Dv = dv;
  return c;
}

// Exchanges pipelined over `k` head chunks (PlanConfig::overlap_chunks).
Case chunked(Case c, int k) {
  c.chunks = k;
  return c;
}

Case lse_only(Case c, int chunks = 1, int in_flight = 2, int rounds = 1) {
  c.saved = SavedActivations::kLseOnly;
  c.chunks = chunks;
  c.in_flight = in_flight;
  c.rounds = rounds;
  return c;
}

std::vector<Case> cases() {
  const auto bf16 = DType::kBFloat16, fp32 = DType::kFloat32;
  const auto bshd = Layout::kBSHD, thd = Layout::kTHD;
  return {
      // P = 1: the plan degenerates to the kernel itself (no exchange; the kernel on the caller's
      // views where it may: UlyssesSingleRank below), through every buffer scheme; fp8 still
      // rounds what would travel.
      {"p1_mha_fp32_odd", 1, bshd, 2, 7, 3, 3, 8, fp32},
      {"p1_gqa_bf16_causal_sinks", 1, bshd, 2, 18, 4, 2, 16, bf16, true, -1, -1, true},
      {"p1_thd_bf16_causal_sinks",
       1,
       thd,
       1,
       24,
       4,
       2,
       16,
       bf16,
       true,
       -1,
       -1,
       true,
       {0, 5, 13, 21}},
      {"p1_inference_thd_bf16_window",
       1,
       thd,
       1,
       16,
       4,
       2,
       16,
       bf16,
       false,
       3,
       1,
       false,
       {0, 9, 16},
       false},
      lse_only({"p1_lse_chunks2_two_rounds_gqa_bf16_window_sinks", 1, bshd, 1, 20, 4, 2, 8, bf16,
                false, 3, 2, true},
               2, 2, 2),
      lse_only({"p1_lse_thd_fp32_causal",
                1,
                thd,
                1,
                24,
                2,
                1,
                8,
                fp32,
                true,
                -1,
                -1,
                false,
                {0, 7, 24}}),
      [&] {
        Case c{"p1_chunks2_keep_saved_backward_twice", 1, bshd, 2, 12, 4, 4, 8, fp32, true};
        c.chunks = 2;
        c.keep_saved = true;
        c.rounds = 2;
        return c;
      }(),
      fp8({"p1_fp8_gqa_bf16_causal", 1, bshd, 1, 16, 4, 2, 16, bf16, true}),
      // P = 2
      {"p2_gqa_bf16_causal_sinks", 2, bshd, 2, 18, 4, 2, 16, bf16, true, -1, -1, true},
      {"p2_mqa_fp32_window", 2, bshd, 1, 22, 4, 1, 8, fp32, false, 3, 2},
      {"p2_mha_bf16_thd_varlen",
       2,
       thd,
       1,
       24,
       2,
       2,
       16,
       bf16,
       true,
       -1,
       -1,
       false,
       {0, 5, 13, 21}},
      {"p2_inference_bf16", 2, bshd, 1, 16, 4, 2, 16, bf16, true, -1, -1, true, {}, false},
      // P = 3: odd rank count, odd head counts and lengths.
      {"p3_gqa_bf16_causal_odd", 3, bshd, 1, 21, 9, 3, 8, bf16, true},
      {"p3_mqa_bf16_thd_sinks",
       3,
       thd,
       1,
       27,
       6,
       1,
       8,
       bf16,
       false,
       -1,
       -1,
       true,
       {0, 4, 4, 19, 26}},
      {"p3_mha_fp32_causal_window_sinks", 3, bshd, 2, 15, 3, 3, 4, fp32, true, 4, 0, true},
      // P = 4
      {"p4_gqa_bf16_window", 4, bshd, 1, 28, 8, 4, 16, bf16, true, 5},
      {"p4_gqa_replicated_fp32_causal_sinks", 4, bshd, 1, 20, 8, 2, 8, fp32, true, -1, -1, true},
      {"p4_mqa_bf16_thd_window", 4, thd, 1, 32, 4, 1, 8, bf16, false, 2, 3, false, {0, 9, 10, 30}},
      // P = 8
      {"p8_mha_fp32_thd_causal", 8, thd, 1, 40, 8, 8, 8, fp32, true, -1, -1, false, {0, 7, 23, 38}},
      {"p8_gqa_replicated_bf16_causal_sinks", 8, bshd, 1, 24, 16, 4, 8, bf16, true, -1, -1, true},
      {"p8_mqa_fp32_varlen_sinks",
       8,
       thd,
       1,
       48,
       8,
       1,
       4,
       fp32,
       true,
       6,
       -1,
       true,
       {0, 11, 12, 40}},
      {"p8_inference_fp32_gqa", 8, bshd, 2, 16, 8, 8, 8, fp32, false, -1, -1, false, {}, false},
      // Pipelined exchanges (overlap_chunks > 1) must not change a single bit.
      {"p2_chunks2_gqa_bf16_causal_sinks",
       2,
       bshd,
       2,
       18,
       8,
       4,
       16,
       bf16,
       true,
       -1,
       -1,
       true,
       {},
       true,
       2},
      {"p2_chunks4_mha_fp32_window",
       2,
       bshd,
       1,
       20,
       8,
       8,
       8,
       fp32,
       false,
       3,
       2,
       false,
       {},
       true,
       4},
      {"p4_chunks2_thd_bf16_sinks",
       4,
       thd,
       1,
       32,
       8,
       8,
       8,
       bf16,
       true,
       -1,
       -1,
       true,
       {0, 9, 10, 30},
       true,
       2},
      {"p3_chunks2_inference_fp32",
       3,
       bshd,
       1,
       21,
       6,
       6,
       8,
       fp32,
       true,
       -1,
       -1,
       false,
       {},
       false,
       2},
      // `saved`: consumed by backward (gradients come back into it, with and without chunks; with
      // replicated KV heads they cannot, and a second backward is refused all the same), or kept.
      [&] {
        Case c{"p2_chunks2_two_rounds", 2, bshd, 1, 16, 4, 4, 8, bf16, true};
        c.chunks = 2;
        c.rounds = 2;
        return c;
      }(),
      [&] {
        Case c{"p4_replicated_kv_two_rounds", 4, bshd, 1, 16, 4, 2, 8, fp32, true};
        c.rounds = 2;
        return c;
      }(),
      [&] {
        Case c{"p2_keep_saved_backward_twice", 2, bshd, 2, 12, 4, 2, 8, bf16, true};
        c.keep_saved = true;
        c.rounds = 2;
        return c;
      }(),
      // saved_activations = lse: backward exchanges Q, K, V, O again; chunks share the slots of
      // chunks_in_flight (4 chunks through 2 slots, through 1 slot), KV replicas, varlen, odd P.
      lse_only(
          {"p2_lse_gqa_bf16_causal_sinks", 2, bshd, 2, 18, 4, 2, 16, bf16, true, -1, -1, true}),
      lse_only({"p2_lse_chunks4_mha_fp32_window", 2, bshd, 1, 20, 8, 8, 8, fp32, false, 3, 2}, 4),
      lse_only({"p2_lse_chunks4_one_in_flight_gqa_bf16_sinks", 2, bshd, 2, 16, 16, 8, 8, bf16, true,
                -1, -1, true},
               4, 1),
      lse_only({"p3_lse_chunks3_two_rounds_gqa_bf16", 3, bshd, 1, 21, 18, 9, 8, bf16, true}, 3, 2,
               2),
      lse_only({"p4_lse_replicated_fp32_causal_sinks", 4, bshd, 1, 20, 8, 2, 8, fp32, true, -1, -1,
                true}),
      lse_only({"p4_lse_chunks2_thd_bf16_sinks",
                4,
                thd,
                1,
                32,
                8,
                8,
                8,
                bf16,
                true,
                -1,
                -1,
                true,
                {0, 9, 10, 30}},
               2),
      [&] {  // inference: forward through slots too (4 chunks, one at a time)
        Case c{"p2_chunks4_one_in_flight_inference_bf16", 2, bshd, 2, 16, 8, 8, 8, bf16, true};
        c.training = false;
        c.chunks = 4;
        c.in_flight = 1;
        c.sinks = true;
        return c;
      }(),
      lse_only({"p8_lse_mqa_fp32_varlen_window",
                8,
                thd,
                1,
                48,
                8,
                1,
                4,
                fp32,
                true,
                6,
                -1,
                false,
                {0, 11, 12, 40}}),
      // Payload::kFp8: Q, K, V and dO travel as E4M3 rows; results are exactly those on the
      // rounded inputs, through every buffer scheme (heads, chunks, lse slots, inference) and for
      // host dtypes and head_dims the device does not take (fp64, odd D).
      fp8({"p2_fp8_gqa_bf16_causal_sinks", 2, bshd, 2, 18, 4, 2, 16, bf16, true, -1, -1, true}),
      fp8({"p4_fp8_replicated_fp32_causal", 4, bshd, 1, 20, 8, 2, 8, fp32, true}),
      fp8({"p3_fp8_fp64_odd_dim_thd_window",
           3,
           thd,
           1,
           27,
           6,
           3,
           5,
           DType::kFloat64,
           false,
           4,
           1,
           false,
           {0, 4, 4, 19, 26}}),
      [&] {
        Case c = fp8({"p2_fp8_chunks2_two_rounds_bf16", 2, bshd, 1, 16, 8, 4, 8, bf16, true});
        c.chunks = 2;
        c.rounds = 2;
        return c;
      }(),
      fp8(lse_only({"p2_fp8_lse_chunks4_one_in_flight_bf16_sinks", 2, bshd, 2, 16, 16, 8, 8, bf16,
                    true, -1, -1, true},
                   4, 1)),
      fp8(lse_only({"p4_fp8_lse_replicated_fp32_window", 4, bshd, 1, 24, 8, 2, 8, fp32, true, 5}, 1,
                   2, 2)),
      [&] {
        Case c = fp8({"p2_fp8_inference_chunks2_bf16", 2, bshd, 2, 16, 8, 8, 8, bf16, true});
        c.training = false;
        c.chunks = 2;
        return c;
      }(),
      // A kernel whose calls may overlap: chunks alternate between two kernel workspaces, and
      // garbage written over them must not reach any result (every buffer scheme).
      [&] {
        Case c = concurrent({"p2_concurrent_chunks4_gqa_bf16_causal_sinks", 2, bshd, 2, 16, 16, 8,
                             8, bf16, true, -1, -1, true});
        c.chunks = 4;
        return c;
      }(),
      [&] {
        Case c = concurrent({"p2_concurrent_chunks2_two_rounds_fp32_window", 2, bshd, 1, 16, 8, 4,
                             8, fp32, false, 3, 2});
        c.chunks = 2;
        c.rounds = 2;
        return c;
      }(),
      concurrent(lse_only({"p2_concurrent_lse_chunks4_one_in_flight_bf16_sinks", 2, bshd, 2, 16, 16,
                           8, 8, bf16, true, -1, -1, true},
                          4, 1)),
      concurrent(fp8(lse_only(
          {"p3_concurrent_fp8_lse_chunks3_gqa_bf16", 3, bshd, 1, 21, 18, 9, 8, bf16, true}, 3))),
      [&] {
        Case c = concurrent(
            {"p2_concurrent_inference_chunks4_bf16", 2, bshd, 2, 16, 8, 8, 8, bf16, true});
        c.training = false;
        c.chunks = 4;
        return c;
      }(),
      // head_dim_v != head_dim (MLA): Q|K|V message rows mix heads of two widths (channels of
      // gcd(D, Dv) elements), O and dO rows are Dv wide and dQ rows D wide, through every buffer
      // scheme. Narrower V (as MLA), wider V, and widths whose gcd is 1.
      mla({"p1_mla_gqa_bf16_causal_sinks", 1, bshd, 2, 18, 4, 2, 24, bf16, true, -1, -1, true}, 16),
      mla(lse_only({"p1_mla_lse_thd_fp32_causal",
                    1,
                    thd,
                    1,
                    24,
                    2,
                    1,
                    16,
                    fp32,
                    true,
                    -1,
                    -1,
                    false,
                    {0, 7, 24}}),
          8),
      mla({"p2_mla_gqa_bf16_causal_sinks", 2, bshd, 2, 18, 4, 2, 24, bf16, true, -1, -1, true}, 16),
      mla({"p2_mla_wider_v_fp32_window", 2, bshd, 1, 22, 4, 1, 8, fp32, false, 3, 2}, 24),
      mla({"p3_mla_coprime_fp32_thd_sinks",
           3,
           thd,
           1,
           27,
           6,
           3,
           5,
           fp32,
           false,
           -1,
           -1,
           true,
           {0, 4, 4, 19, 26}},
          3),
      mla({"p4_mla_replicated_fp32_causal_sinks", 4, bshd, 1, 20, 8, 2, 12, fp32, true, -1, -1,
           true},
          8),
      mla({"p2_mla_inference_bf16", 2, bshd, 1, 16, 4, 2, 24, bf16, true, -1, -1, true, {}, false},
          16),
      [&] {
        Case c = mla(
            {"p2_mla_chunks2_two_rounds_bf16_causal", 2, bshd, 2, 18, 8, 4, 24, bf16, true}, 16);
        c.chunks = 2;
        c.rounds = 2;
        return c;
      }(),
      [&] {
        Case c = mla({"p2_mla_chunks2_keep_saved_fp32", 2, bshd, 1, 16, 4, 4, 16, fp32, true}, 24);
        c.chunks = 2;
        c.keep_saved = true;
        c.rounds = 2;
        return c;
      }(),
      mla(lse_only({"p2_mla_lse_chunks2_one_in_flight_bf16_sinks", 2, bshd, 2, 16, 8, 4, 24, bf16,
                    true, -1, -1, true},
                   2, 1),
          16),
      mla(lse_only({"p4_mla_lse_replicated_fp32_window", 4, bshd, 1, 24, 8, 2, 16, fp32, true, 5},
                   1, 2, 2),
          8),
      [&] {
        Case c = concurrent(mla(
            {"p2_mla_concurrent_chunks4_gqa_bf16_causal", 2, bshd, 2, 16, 16, 8, 24, bf16, true},
            16));
        c.chunks = 4;
        return c;
      }(),
      // Uneven heads (P < Hkv, P not dividing Hkv): the first Hkv mod P ranks own one KV head
      // (and its query group) more; messages keep the larger rank's slots.
      {"p2_uneven_gqa_bf16_causal_sinks", 2, bshd, 2, 18, 6, 3, 16, bf16, true, -1, -1, true},
      {"p4_uneven_mha_fp32_window", 4, bshd, 1, 24, 6, 6, 8, fp32, false, 5, 2},
      {"p3_uneven_thd_bf16_causal_sinks",
       3,
       thd,
       1,
       27,
       8,
       4,
       16,
       bf16,
       true,
       -1,
       -1,
       true,
       {0, 7, 15, 26}},
      {"p2_uneven_inference_mha_bf16_sinks",
       2,
       bshd,
       2,
       16,
       3,
       3,
       16,
       bf16,
       true,
       -1,
       -1,
       true,
       {},
       false},
      lse_only({"p4_uneven_lse_one_in_flight_two_rounds_gqa_fp32_sinks", 4, bshd, 1, 16, 10, 5, 8,
                fp32, true, -1, -1, true},
               1, 1, 2),
      lse_only({"p3_uneven_lse_thd_inference_style_window_bf16",
                3,
                thd,
                1,
                24,
                5,
                5,
                16,
                bf16,
                false,
                4,
                3,
                false,
                {0, 11, 20}}),
      fp8({"p2_uneven_fp8_gqa_bf16_causal", 2, bshd, 1, 16, 6, 3, 16, bf16, true}),
      fp8(lse_only({"p3_uneven_fp8_lse_mha_fp32_sinks", 3, bshd, 1, 18, 4, 4, 8, fp32, false, -1,
                    -1, true})),
      mla({"p3_uneven_mla_bf16_causal", 3, bshd, 2, 18, 4, 4, 24, bf16, true}, 16),
      // FP8 payloads with two head widths: rows of gcd(D, Dv) values, a head spanning several.
      fp8(mla(
          {"p2_fp8_mla_gqa_bf16_causal_sinks", 2, bshd, 2, 16, 8, 4, 24, bf16, true, -1, -1, true},
          16)),
      fp8(mla(lse_only({"p3_fp8_mla_lse_thd_fp32_window",
                        3,
                        thd,
                        1,
                        24,
                        6,
                        3,
                        12,
                        fp32,
                        false,
                        4,
                        2,
                        false,
                        {0, 10, 23}}),
              8)),
      [&] {
        Case c =
            fp8(mla({"p2_fp8_mla_wider_v_chunks2_bf16", 2, bshd, 1, 16, 8, 8, 16, bf16, true}, 24));
        c.chunks = 2;
        return c;
      }(),
      fp8(mla({"p2_fp8_mla_uneven_inference_bf16",
               2,
               bshd,
               1,
               16,
               6,
               3,
               24,
               bf16,
               true,
               -1,
               -1,
               false,
               {},
               false},
              16)),
      [&] {
        Case c{"p2_uneven_keep_saved_backward_twice_fp32", 2, bshd, 1, 12, 5, 5, 8, fp32, true};
        c.keep_saved = true;
        c.rounds = 2;
        return c;
      }(),
      // Head chunks of unequal sizes (2 chunks: the first one KV head more where they are odd; 3
      // and more: the first and last the small ones), also where the heads split unevenly (each
      // rank its own chunk sizes; a chunk's messages have one region per peer as wide as its
      // widest peer's rows).
      chunked({"p2_chunks2_of_3_heads_gqa_bf16_causal_sinks", 2, bshd, 2, 16, 12, 6, 8, bf16, true,
               -1, -1, true},
              2),
      chunked({"p3_uneven_chunks2_gqa_fp32_window", 3, bshd, 1, 18, 16, 8, 8, fp32, true, 5}, 2),
      chunked({"p1_chunks2_of_3_heads_gqa_fp32_causal", 1, bshd, 2, 12, 6, 3, 8, fp32, true}, 2),
      chunked(mla({"p1_mla_chunks3_of_5_heads_bf16", 1, bshd, 1, 10, 5, 5, 24, bf16, false}, 16),
              3),
      chunked({"p3_uneven_chunks3_thd_bf16_sinks",
               3,
               thd,
               1,
               27,
               10,
               10,
               16,
               bf16,
               false,
               -1,
               -1,
               true,
               {0, 7, 15, 26}},
              3),
      lse_only({"p2_uneven_lse_chunks2_one_in_flight_mha_fp32_sinks", 2, bshd, 1, 16, 5, 5, 8, fp32,
                true, -1, -1, true},
               2, 1),
      lse_only({"p3_uneven_lse_chunks2_two_rounds_gqa_bf16", 3, bshd, 2, 18, 14, 7, 8, bf16, true},
               2, 2, 2),
      chunked({"p2_uneven_chunks2_inference_gqa_bf16",
               2,
               bshd,
               1,
               16,
               10,
               5,
               8,
               bf16,
               true,
               -1,
               -1,
               true,
               {},
               false},
              2),
      fp8(lse_only({"p3_uneven_fp8_lse_chunks2_gqa_bf16", 3, bshd, 1, 18, 14, 7, 8, bf16, true},
                   2)),
      // Two slots of different widths (chunks 0 and 2 of 1, 2, 1 heads through the first).
      mla(lse_only({"p2_uneven_mla_lse_chunks3_two_slots_bf16_causal_sinks", 2, bshd, 1, 16, 7, 7,
                    24, bf16, true, -1, -1, true},
                   3, 2, 2),
          16),
      fp8(mla(lse_only({"p2_uneven_fp8_mla_lse_chunks3_two_slots_bf16", 2, bshd, 2, 16, 7, 7, 24,
                        bf16, true},
                       3),
              16)),
      fp8(mla(
          chunked({"p3_fp8_mla_uneven_chunks2_gqa_bf16", 3, bshd, 1, 18, 14, 7, 24, bf16, true}, 2),
          16)),
      concurrent(chunked({"p2_uneven_chunks3_concurrent_fp32_sinks", 2, bshd, 1, 16, 7, 7, 8, fp32,
                          true, -1, -1, true},
                         3)),
      concurrent(mla(chunked({"p2_mla_uneven_chunks2_concurrent_bf16_causal", 2, bshd, 2, 16, 10, 5,
                              24, bf16, true},
                             2),
                     16)),
      [&] {
        Case c = chunked({"p3_uneven_chunks2_keep_saved_backward_twice_fp32", 3, bshd, 1, 12, 7, 7,
                          8, fp32, true},
                         2);
        c.keep_saved = true;
        c.rounds = 2;
        return c;
      }(),
  };
}

INSTANTIATE_TEST_SUITE_P(Loopback, UlyssesVsReference, ::testing::ValuesIn(cases()),
                         [](const auto& param_info) { return param_info.param.name; });

// The same cases with each rank's own rows sent through the exchanges (the path NCCL takes).
std::vector<Case> own_rows_exchanged() {
  std::vector<Case> v = cases();
  for (Case& c : v) c.copies_own_rows = false;
  return v;
}
INSTANTIATE_TEST_SUITE_P(OwnRowsExchanged, UlyssesVsReference,
                         ::testing::ValuesIn(own_rows_exchanged()),
                         [](const auto& param_info) { return param_info.param.name; });

TEST(Ulysses, LseOnlySavesOnlyTheLseAndChunksShareSlots) {
  // P = 2, B = 2, S = 64 (32 per rank), Hq = 16, Hkv = 8, D = 8, fp32: 8 query heads per rank.
  auto kernel = make_reference_attention();
  auto plan_bytes = [&](SavedActivations saved, int chunks, int in_flight, bool training = true) {
    std::vector<std::pair<std::size_t, std::size_t>> bytes(2);
    const PlanConfig cfg{.attention = {.num_heads_q = 16, .num_heads_kv = 8, .head_dim = 8},
                         .parallel = {.cp = 2},
                         .dtype = DType::kFloat32,
                         .batch = 2,
                         .seqlen = 64,
                         .training = training,
                         .overlap_chunks = chunks,
                         .saved_activations = saved,
                         .chunks_in_flight = in_flight};
    EXPECT_ALL_OK(testing::run_ranks(2, [&](int r, Communicator& comm) -> Status {
      auto plan = DistributedAttention::create(cfg, comm, *kernel);
      if (!plan.is_ok()) return plan.status();
      bytes[static_cast<std::size_t>(r)] = {(*plan)->saved_bytes(), (*plan)->workspace_bytes()};
      return Status::ok();
    }));
    EXPECT_EQ(bytes[0], bytes[1]);
    return bytes[0];
  };
  // LSE of 8 heads x 64 positions x 2 sequences in fp32, nothing else.
  EXPECT_EQ(plan_bytes(SavedActivations::kLseOnly, 1, 2).first, 8u * 64 * 2 * 4);
  // Head-sharded: Q, K, V (8 + 4 + 4 heads) and O (8) for all 128 rows, plus the LSE.
  EXPECT_EQ(plan_bytes(SavedActivations::kHeadSharded, 1, 2).first,
            (8u + 4 + 4 + 8) * 128 * 8 * 4 + 8u * 128 * 4);
  // 4 chunks through 2 slots need about half the exchange buffers of 4 chunks through 4 (= 1
  // chunk of all heads); through 1 slot about a quarter.
  const std::size_t all = plan_bytes(SavedActivations::kLseOnly, 1, 2).second;
  const std::size_t two = plan_bytes(SavedActivations::kLseOnly, 4, 2).second;
  const std::size_t one = plan_bytes(SavedActivations::kLseOnly, 4, 1).second;
  EXPECT_LT(two, all * 6 / 10);
  EXPECT_LT(one, all * 3 / 10);
  EXPECT_LT(one, two);
  // Inference runs its forward through the same slots: nothing saved, and 4 chunks in 2 slots
  // take about half the workspace of 1 chunk.
  const auto inference_all = plan_bytes(SavedActivations::kHeadSharded, 1, 2, false);
  const auto inference_two = plan_bytes(SavedActivations::kHeadSharded, 4, 2, false);
  EXPECT_EQ(inference_all.first, 0u);
  EXPECT_LT(inference_two.second, inference_all.second * 6 / 10);
}

TEST(Ulysses, UnequalChunksSaveWhatOneChunkSaves) {
  // 7 KV heads (and query heads) over P = 2: rank 0 owns 4, rank 1 owns 3. In 2 chunks: rank 0's
  // are 2 and 2, rank 1's 2 and 1; in 3 chunks 1, 2, 1 and 1, 1, 1. Each chunk's blocks are as
  // wide as its widest rank's rows (rank 0's), so rank 0 saves exactly what it saves in one chunk
  // (its Q, K, V, O rows and LSE), whatever the split.
  auto kernel = make_reference_attention();
  auto saved_bytes = [&](int chunks) {
    std::vector<std::size_t> bytes(2);
    const PlanConfig cfg{.attention = {.num_heads_q = 7, .num_heads_kv = 7, .head_dim = 8},
                         .parallel = {.cp = 2},
                         .dtype = DType::kFloat32,
                         .batch = 1,
                         .seqlen = 32,
                         .overlap_chunks = chunks};
    EXPECT_ALL_OK(testing::run_ranks(2, [&](int r, Communicator& comm) -> Status {
      auto plan = DistributedAttention::create(cfg, comm, *kernel);
      if (!plan.is_ok()) return plan.status();
      bytes[static_cast<std::size_t>(r)] = (*plan)->saved_bytes();
      return Status::ok();
    }));
    return bytes;
  };
  const std::size_t rank0 = (4u + 4 + 4 + 4) * 32 * 8 * 4 + 4u * 32 * 4;  // Q K V O rows, LSE
  for (int chunks : {1, 2, 3}) {
    const std::vector<std::size_t> got = saved_bytes(chunks);
    EXPECT_EQ(got[0], rank0) << chunks << " chunks";
    EXPECT_LE(got[1], rank0) << chunks << " chunks";
  }
}

TEST(Ulysses, EachSlotIsAsWideAsItsWidestChunk) {
  // 7 heads over P = 2: rank 0 owns 4. In 2 chunks both are 2 heads wide; in 3 chunks 1, 2, 1,
  // so with 2 in flight the first slot takes chunks 0 and 2 (1 head wide), the second chunk 1
  // (2 heads). The two slots cost 3 heads' buffers, against 4 with 2 equal chunks.
  auto kernel = make_reference_attention();
  auto workspace = [&](int chunks, int in_flight) {
    std::size_t bytes = 0;
    const PlanConfig cfg{.attention = {.num_heads_q = 7, .num_heads_kv = 7, .head_dim = 32},
                         .parallel = {.cp = 2},
                         .dtype = DType::kFloat32,
                         .batch = 1,
                         .seqlen = 256,
                         .overlap_chunks = chunks,
                         .saved_activations = SavedActivations::kLseOnly,
                         .chunks_in_flight = in_flight};
    EXPECT_ALL_OK(testing::run_ranks(2, [&](int r, Communicator& comm) -> Status {
      auto plan = DistributedAttention::create(cfg, comm, *kernel);
      if (!plan.is_ok()) return plan.status();
      if (r == 0) bytes = (*plan)->workspace_bytes();
      return Status::ok();
    }));
    return static_cast<double>(bytes);
  };
  const double wide_slot = workspace(2, 2) - workspace(2, 1);
  const double narrow_slot = workspace(3, 2) - workspace(3, 1);
  EXPECT_GT(wide_slot, 0);
  EXPECT_NEAR(narrow_slot / wide_slot, 0.5, 0.02);
  // One slot is as wide whether it takes 2 equal chunks or the widest of 3.
  EXPECT_EQ(workspace(2, 1), workspace(3, 1));
}

TEST(Ulysses, OverlappingChunkKernelsAlternateBetweenTwoWorkspaces) {
  // P = 2, 16 query / 8 KV heads: 4 KV heads per rank, in 4 chunks. Chunk c's call runs beside
  // chunk c + 1's (on GPUs), so their workspaces must be disjoint; chunk c + 2 follows chunk c on
  // its stream and reuses its workspace. A kernel that cannot overlap its calls costs no memory,
  // nor do chunks that go through one slot of exchange buffers (one at a time anyway).
  auto ref = make_reference_attention();
  const auto heads = SavedActivations::kHeadSharded, lse = SavedActivations::kLseOnly;
  for (const int chunks : {1, 4}) {
    for (const auto& [training, saved, in_flight] :
         {std::tuple{true, heads, 2}, std::tuple{true, lse, 2}, std::tuple{true, lse, 1},
          std::tuple{false, heads, 2}, std::tuple{false, heads, 1}}) {
      const bool slotted = !training || saved == lse;
      const bool two = chunks > 1 && !(slotted && in_flight == 1);
      SCOPED_TRACE("chunks " + std::to_string(chunks) + (training ? " training " : " inference ") +
                   std::string(saved_activations_name(saved)) + " in flight " +
                   std::to_string(in_flight));
      std::vector<std::size_t> bytes[2];  // [overlap][rank]
      for (const bool overlap : {false, true}) {
        const PlanConfig cfg{
            .attention = {.num_heads_q = 16, .num_heads_kv = 8, .head_dim = 8, .causal = true},
            .parallel = {.cp = 2},
            .dtype = DType::kFloat32,
            .batch = 1,
            .seqlen = 16,
            .training = training,
            .overlap_chunks = chunks,
            .saved_activations = saved,
            .chunks_in_flight = in_flight};
        bytes[overlap].assign(2, 0);
        EXPECT_ALL_OK(testing::run_ranks(2, [&](int r, Communicator& comm) -> Status {
          ScribblingKernel kernel(*ref);
          kernel.overlap = overlap;
          auto plan = DistributedAttention::create(cfg, comm, kernel);
          if (!plan.is_ok()) return plan.status();
          const std::size_t ws_bytes = (*plan)->workspace_bytes();
          bytes[overlap][static_cast<std::size_t>(r)] = ws_bytes;
          std::vector<unsigned char> ws(ws_bytes), saved_buf((*plan)->saved_bytes());
          std::vector<float> zeros(16 * 16 * 8, 0.0f), out(16 * 16 * 8), lse_out(16 * 8);
          auto act = [&](std::vector<float>& v, int h) {
            return TensorView::contiguous(v.data(), DType::kFloat32, {1, 8, h, 8});
          };
          std::vector<float> dk(8 * 8 * 8), dv(8 * 8 * 8), dq(16 * 16 * 8);
          ForwardArgs f;
          f.q = act(zeros, 16);
          f.k = f.v = act(zeros, 8);
          f.o = act(out, 16);
          f.lse = TensorView::contiguous(lse_out.data(), DType::kFloat32, {1, 16, 8});
          f.workspace = ws.data();
          f.saved = saved_buf.data();
          if (Status s = (*plan)->forward(f, nullptr); !s.is_ok()) return s;
          if (training) {
            BackwardArgs b;
            b.d_o = f.q;
            b.dq = act(dq, 16);
            b.dk = act(dk, 8);
            b.dv = act(dv, 8);
            b.workspace = ws.data();
            b.saved = saved_buf.data();
            if (saved == lse) {
              b.q = f.q;
              b.k = f.k;
              b.v = f.v;
              b.o = f.o;
            }
            if (Status s = (*plan)->backward(b, nullptr); !s.is_ok()) return s;
          }
          const std::vector<unsigned char*>& w = kernel.workspaces;
          const std::size_t calls = static_cast<std::size_t>(chunks * (training ? 2 : 1));
          if (w.size() != calls) return internal_error("calls: " + std::to_string(w.size()));
          for (std::size_t i = 0; i < calls; ++i) {
            SCOPED_TRACE("call " + std::to_string(i));
            EXPECT_GE(w[i], ws.data());
            EXPECT_LE(w[i] + ScribblingKernel::kScratch, ws.data() + ws_bytes);
            const std::size_t c = i % static_cast<std::size_t>(chunks);  // chunk in its pass
            if (c + 1 < static_cast<std::size_t>(chunks)) {
              const auto gap = std::abs(w[i + 1] - w[i]);
              if (overlap && two) {
                EXPECT_GE(gap, static_cast<std::ptrdiff_t>(ScribblingKernel::kScratch));
              } else {
                EXPECT_EQ(gap, 0);
              }
            }
            if (c + 2 < static_cast<std::size_t>(chunks)) {
              EXPECT_EQ(w[i + 2], w[i]);
            }
          }
          return Status::ok();
        }));
      }
      EXPECT_EQ(bytes[0][0], bytes[0][1]);
      EXPECT_EQ(bytes[1][0], bytes[1][1]);
      // One more kernel workspace (aligned) with chunks whose calls may overlap; none without.
      // Each chunk's call: 2 of the rank's 8 query heads.
      const std::size_t extra = bytes[1][0] - bytes[0][0];
      const std::size_t call = ScribblingKernel::kScratch + 2 * ScribblingKernel::kPerHead;
      if (!two) {
        EXPECT_EQ(extra, 0u);
      } else {
        EXPECT_GE(extra, call);
        EXPECT_LT(extra, call + 1024);
      }
    }
  }
}

TEST(Ulysses, EachKernelWorkspaceIsAsLargeAsItsChunksNeed) {
  // 7 heads over P = 2: rank 0 owns 4, in chunks of 1, 2, 1. Calls that may overlap alternate
  // between two kernel workspaces: the first serves chunks 0 and 2 (1 head's bytes), the second
  // chunk 1 (2 heads'), so overlapping costs one head's workspace, not the widest chunk's.
  auto ref = make_reference_attention();
  auto workspace = [&](bool overlap) {
    std::size_t bytes = 0;
    const PlanConfig cfg{.attention = {.num_heads_q = 7, .num_heads_kv = 7, .head_dim = 8},
                         .parallel = {.cp = 2},
                         .dtype = DType::kFloat32,
                         .batch = 1,
                         .seqlen = 16,
                         .overlap_chunks = 3};
    EXPECT_ALL_OK(testing::run_ranks(2, [&](int r, Communicator& comm) -> Status {
      ScribblingKernel kernel(*ref);
      kernel.overlap = overlap;
      auto plan = DistributedAttention::create(cfg, comm, kernel);
      if (!plan.is_ok()) return plan.status();
      if (r == 0) bytes = (*plan)->workspace_bytes();
      return Status::ok();
    }));
    return bytes;
  };
  const std::size_t extra = workspace(true) - workspace(false);
  EXPECT_GE(extra, ScribblingKernel::kScratch + ScribblingKernel::kPerHead);
  EXPECT_LT(extra, ScribblingKernel::kScratch + 2 * ScribblingKernel::kPerHead);
}

// Bytes each exchange sends to the other ranks, in the order they are issued (an all_to_all_v, or
// the sends of one group).
class ExchangeLog final : public ForwardingCommunicator {
 public:
  using ForwardingCommunicator::ForwardingCommunicator;
  std::vector<std::size_t> sent;
  std::size_t to_itself = 0;  // bytes of every exchange to this rank itself

  Status all_to_all_v(const void* send, std::span<const std::size_t> send_counts,
                      std::span<const std::size_t> send_offsets, void* recv,
                      std::span<const std::size_t> recv_counts,
                      std::span<const std::size_t> recv_offsets, Stream stream) override {
    std::size_t bytes = 0;
    for (int p = 0; p < size(); ++p) {
      (p != rank() ? bytes : to_itself) += send_counts[static_cast<std::size_t>(p)];
    }
    sent.push_back(bytes);
    return ForwardingCommunicator::all_to_all_v(send, send_counts, send_offsets, recv, recv_counts,
                                                recv_offsets, stream);
  }
  Status send(const void* data, std::size_t bytes, int peer, Stream stream) override {
    (peer != rank() ? grouped_ : to_itself) += bytes;
    if (depth_ == 0) close();
    return ForwardingCommunicator::send(data, bytes, peer, stream);
  }
  Status group_start() override {
    ++depth_;
    return ForwardingCommunicator::group_start();
  }
  Status group_end() override {
    if (--depth_ == 0) close();
    return ForwardingCommunicator::group_end();
  }

 private:
  void close() {
    sent.push_back(grouped_);
    grouped_ = 0;
  }
  int depth_ = 0;
  std::size_t grouped_ = 0;
};

// Rank 0's exchanges in one step of `cfg` (fp32, cp = 2, batch 1) on two loopback ranks, the
// inputs constant: forward, and backward too when `backward`. (What create() exchanges is left
// out.)
struct LoggedStep {
  std::vector<std::size_t> sent;  // ExchangeLog::sent
  std::size_t to_itself = 0;
};
LoggedStep logged_step(const PlanConfig& cfg, bool backward, LoopbackOptions options = {}) {
  auto kernel = make_reference_attention();
  const std::int64_t Sl = cfg.seqlen / 2, D = cfg.attention.head_dim;
  const int hq = cfg.attention.num_heads_q, hkv = cfg.attention.num_heads_kv;
  LoggedStep out;
  EXPECT_ALL_OK(testing::run_ranks(
      2,
      [&](int r, Communicator& comm) -> Status {
        ExchangeLog log(comm);
        auto plan = DistributedAttention::create(cfg, log, *kernel);
        if (!plan.is_ok()) return plan.status();
        const auto qn = static_cast<std::size_t>(Sl * hq * D),
                   kn = static_cast<std::size_t>(Sl * hkv * D);
        std::vector<float> q(qn, 0.5f), kv(kn, 0.25f), o(qn), d_o(qn, 1.0f), dq(qn), dk(kn), dv(kn);
        std::vector<unsigned char> ws((*plan)->workspace_bytes()), saved((*plan)->saved_bytes());
        auto view = [&](std::vector<float>& v, int heads) {
          return TensorView::contiguous(v.data(), DType::kFloat32, {1, Sl, heads, D});
        };
        log.sent.clear();
        log.to_itself = 0;
        ForwardArgs f{.q = view(q, hq),
                      .k = view(kv, hkv),
                      .v = view(kv, hkv),
                      .o = view(o, hq),
                      .workspace = ws.data(),
                      .saved = saved.data()};
        if (Status st = (*plan)->forward(f, nullptr); !st.is_ok()) return st;
        if (backward) {
          BackwardArgs b{.d_o = view(d_o, hq),
                         .dq = view(dq, hq),
                         .dk = view(dk, hkv),
                         .dv = view(dv, hkv),
                         .workspace = ws.data(),
                         .saved = saved.data()};
          if (cfg.saved_activations == SavedActivations::kLseOnly) {
            b.q = f.q;
            b.k = f.k;
            b.v = f.v;
            b.o = f.o;
          }
          if (Status st = (*plan)->backward(b, nullptr); !st.is_ok()) return st;
        }
        if (r == 0) out = {log.sent, log.to_itself};
        return Status::ok();
      },
      options));
  return out;
}

TEST(Ulysses, ChunksAtTheEndsOfThePipelineAreTheSmallOnes) {
  // P = 2, 16 query / 8 KV heads: 4 KV heads per rank. The first chunk's inbound exchange and the
  // last chunk's returning one have no kernel call to hide behind; in 3 chunks the heads split
  // 1, 2, 1, so each of those carries a quarter of its exchange's bytes (2, 1, 1 carried half at
  // the start), and in 2 chunks each half.
  auto forward_exchanges = [](int chunks) {
    const PlanConfig cfg{.attention = {.num_heads_q = 16, .num_heads_kv = 8, .head_dim = 8},
                         .parallel = {.cp = 2},
                         .dtype = DType::kFloat32,
                         .batch = 1,
                         .seqlen = 32,
                         .overlap_chunks = chunks};
    return logged_step(cfg, false).sent;
  };
  const std::vector<std::size_t> one = forward_exchanges(1);
  ASSERT_EQ(one.size(), 2u);  // Q|K|V in, O back
  const std::size_t in = one.front(), back = one.back();
  ASSERT_GT(in, back);
  for (const auto& [chunks, first, last] :
       {std::tuple{2, in / 2, back / 2}, std::tuple{3, in / 4, back / 4},
        std::tuple{4, in / 4, back / 4}}) {
    const std::vector<std::size_t> sent = forward_exchanges(chunks);
    ASSERT_EQ(sent.size(), 2u * static_cast<std::size_t>(chunks)) << chunks << " chunks";
    EXPECT_EQ(sent.front(), first) << chunks << " chunks";
    EXPECT_EQ(sent.back(), last) << chunks << " chunks";
    EXPECT_EQ(std::accumulate(sent.begin(), sent.end(), std::size_t{0}), in + back)
        << chunks << " chunks";
  }
}

// One rank's exchanges ('x': an all_to_all_v, or a group of sends and receives) and kernel calls
// ('f', 'b') in the order the plan issues them.
class IssueLog final : public ForwardingCommunicator, public LocalAttention {
 public:
  IssueLog(Communicator& comm, LocalAttention& kernel)
      : ForwardingCommunicator(comm), kernel_(kernel) {}
  std::string order;

  Status all_to_all_v(const void* send, std::span<const std::size_t> send_counts,
                      std::span<const std::size_t> send_offsets, void* recv,
                      std::span<const std::size_t> recv_counts,
                      std::span<const std::size_t> recv_offsets, Stream stream) override {
    order += 'x';
    return ForwardingCommunicator::all_to_all_v(send, send_counts, send_offsets, recv, recv_counts,
                                                recv_offsets, stream);
  }
  Status group_start() override {
    if (depth_++ == 0) order += 'x';
    return ForwardingCommunicator::group_start();
  }
  Status group_end() override {
    --depth_;
    return ForwardingCommunicator::group_end();
  }
  Device device() const override { return ForwardingCommunicator::device(); }

  std::string_view name() const override { return "issue-log"; }
  bool provides_lse() const override { return kernel_.provides_lse(); }
  bool supports_backward() const override { return kernel_.supports_backward(); }
  Status check_support(const LocalProblem& p) const override { return kernel_.check_support(p); }
  std::size_t workspace_bytes(const LocalProblem& p) const override {
    return kernel_.workspace_bytes(p);
  }
  Status forward(const LocalProblem& p, const LocalForwardArgs& a, Stream stream) override {
    order += 'f';
    return kernel_.forward(p, a, stream);
  }
  Status backward(const LocalProblem& p, const LocalBackwardArgs& a, Stream stream) override {
    order += 'b';
    return kernel_.backward(p, a, stream);
  }

 private:
  LocalAttention& kernel_;
  int depth_ = 0;
};

TEST(Ulysses, TheFirstChunksKernelIsIssuedBeforeTheLaterChunksExchanges) {
  // With head chunks, chunk 0's inbound exchange goes out right after its packs and its kernel
  // right after that; only then the later chunks' inbound exchanges (on a GPU each costs host
  // time, ~25 us over peer copies and ~150 us over a non-blocking NCCL communicator, which the
  // first kernel would otherwise wait for). Then each chunk's results go back after its kernel.
  // The same for backward, and over either kind of communicator (own rows apart or exchanged).
  // Saving only the LSE, the chunks in the other slots go out after chunk 0's kernel, and a
  // chunk waiting for a slot once that slot's results have gone back (as before).
  struct Order {
    SavedActivations saved;
    int chunks, in_flight;
    std::string expected;
  };
  const SavedActivations kHeads = SavedActivations::kHeadSharded, kLse = SavedActivations::kLseOnly;
  for (const bool copies_own_rows : {true, false}) {
    for (const Order& t : {Order{kHeads, 1, 2, "xk x"}, Order{kHeads, 2, 2, "xkx x kx"},
                           Order{kHeads, 3, 2, "xkxx x kx kx"}, Order{kLse, 2, 2, "xkx x kx"},
                           Order{kLse, 3, 2, "xkx xx kx kx"}, Order{kLse, 3, 1, "xk xx kxx kx"}}) {
      const std::string& expected = t.expected;
      SCOPED_TRACE(std::string(saved_activations_name(t.saved)) + ", " + std::to_string(t.chunks) +
                   " chunks, " + std::to_string(t.in_flight) + " in flight, copies_own_rows " +
                   std::to_string(copies_own_rows));
      const PlanConfig cfg{.attention = {.num_heads_q = 24, .num_heads_kv = 6, .head_dim = 8},
                           .parallel = {.cp = 2},
                           .dtype = DType::kFloat32,
                           .batch = 1,
                           .seqlen = 16,
                           .overlap_chunks = t.chunks,
                           .saved_activations = t.saved,
                           .chunks_in_flight = t.in_flight};
      std::array<std::string, 2> order;
      EXPECT_ALL_OK(testing::run_ranks(
          2,
          [&](int r, Communicator& comm) -> Status {
            auto reference = make_reference_attention();
            IssueLog log(comm, *reference);
            auto plan = DistributedAttention::create(cfg, log, log);
            if (!plan.is_ok()) return plan.status();
            const std::int64_t Sl = cfg.seqlen / 2, D = cfg.attention.head_dim;
            const auto qn = static_cast<std::size_t>(Sl * 24 * D),
                       kn = static_cast<std::size_t>(Sl * 6 * D);
            std::vector<float> q(qn, 0.5f), kv(kn, 0.25f), o(qn), d_o(qn, 1.0f), dq(qn), dk(kn),
                dv(kn);
            std::vector<unsigned char> ws((*plan)->workspace_bytes()),
                saved((*plan)->saved_bytes());
            auto view = [&](std::vector<float>& v, int heads) {
              return TensorView::contiguous(v.data(), DType::kFloat32, {1, Sl, heads, D});
            };
            log.order.clear();
            const ForwardArgs f{.q = view(q, 24),
                                .k = view(kv, 6),
                                .v = view(kv, 6),
                                .o = view(o, 24),
                                .workspace = ws.data(),
                                .saved = saved.data()};
            if (Status st = (*plan)->forward(f, nullptr); !st.is_ok()) return st;
            log.order += '|';
            const BackwardArgs b{.d_o = view(d_o, 24),
                                 .dq = view(dq, 24),
                                 .dk = view(dk, 6),
                                 .dv = view(dv, 6),
                                 .workspace = ws.data(),
                                 .saved = saved.data(),
                                 .q = f.q,
                                 .k = f.k,
                                 .v = f.v,
                                 .o = f.o};
            if (Status st = (*plan)->backward(b, nullptr); !st.is_ok()) return st;
            order[static_cast<std::size_t>(r)] = log.order;
            return Status::ok();
          },
          {.copies_own_rows = copies_own_rows}));
      // `expected` with k for the kernel and spaces dropped, forward with f and backward with b.
      std::string pattern;
      for (char ch : expected) {
        if (ch != ' ') pattern += ch;
      }
      std::string fwd = pattern, bwd = pattern;
      std::replace(fwd.begin(), fwd.end(), 'k', 'f');
      std::replace(bwd.begin(), bwd.end(), 'k', 'b');
      for (const std::string& o : order) EXPECT_EQ(o, fwd + "|" + bwd);
    }
  }
}

TEST(Ulysses, OwnRowsSkipTheExchangesWhereTheyWouldCostACopy) {
  // A communicator whose copy of a rank's rows to itself is a separate copy (the loopback groups:
  // on a GPU it waits for the SMs) gets none of them: they are packed where they arrive and
  // unpacked from where the kernel wrote them. Others (NCCL) get them in every exchange. The
  // bytes to the other ranks are the same either way, and so are the results (the
  // OwnRowsExchanged cases).
  for (const auto& [chunks, saved] :
       {std::pair{1, SavedActivations::kHeadSharded}, std::pair{2, SavedActivations::kHeadSharded},
        std::pair{2, SavedActivations::kLseOnly}}) {
    SCOPED_TRACE("chunks " + std::to_string(chunks) + " " +
                 std::string(saved_activations_name(saved)));
    const PlanConfig cfg{.attention = {.num_heads_q = 8, .num_heads_kv = 4, .head_dim = 8},
                         .parallel = {.cp = 2},
                         .dtype = DType::kFloat32,
                         .batch = 1,
                         .seqlen = 32,
                         .overlap_chunks = chunks,
                         .saved_activations = saved};
    const LoggedStep exchanged = logged_step(cfg, true, {.copies_own_rows = false});
    const LoggedStep in_place = logged_step(cfg, true, {.copies_own_rows = true});
    auto total = [](const LoggedStep& s) {
      return std::accumulate(s.sent.begin(), s.sent.end(), std::size_t{0});
    };
    EXPECT_GT(exchanged.to_itself, 0u);
    EXPECT_EQ(in_place.to_itself, 0u);
    EXPECT_GT(total(in_place), 0u);
    EXPECT_EQ(total(in_place), total(exchanged));
  }
}

TEST(Ulysses, Fp8PayloadNeedsAboutTheNativeWorkspace) {
  // bf16, head_dim 128: a row travels as 129 bytes instead of 256. The codes as sent and as
  // received share the regions native rows use, so the workspace grows only by the exponent
  // bytes, except for head-sharded saves with chunks (received dO codes get a region of their own).
  auto kernel = make_reference_attention();
  auto workspace = [&](Payload payload, SavedActivations saved, int chunks, bool training) {
    std::vector<std::size_t> bytes(2);
    const PlanConfig cfg{.attention = {.num_heads_q = 8, .num_heads_kv = 4, .head_dim = 128},
                         .parallel = {.cp = 2},
                         .dtype = DType::kBFloat16,
                         .batch = 1,
                         .seqlen = 256,
                         .training = training,
                         .overlap_chunks = chunks,
                         .saved_activations = saved,
                         .payload = payload};
    EXPECT_ALL_OK(testing::run_ranks(2, [&](int r, Communicator& comm) -> Status {
      auto plan = DistributedAttention::create(cfg, comm, *kernel);
      if (!plan.is_ok()) return plan.status();
      bytes[static_cast<std::size_t>(r)] = (*plan)->workspace_bytes();
      return Status::ok();
    }));
    return static_cast<double>(bytes[0]);
  };
  const auto heads = SavedActivations::kHeadSharded, lse = SavedActivations::kLseOnly;
  for (auto [saved, chunks, training, limit] :
       {std::tuple{heads, 1, true, 1.02}, std::tuple{lse, 1, true, 1.02},
        std::tuple{lse, 2, true, 1.02}, std::tuple{heads, 2, false, 1.02},
        std::tuple{heads, 2, true, 1.5}}) {
    const double native = workspace(Payload::kNative, saved, chunks, training);
    const double fp8 = workspace(Payload::kFp8, saved, chunks, training);
    EXPECT_LE(fp8, native * limit)
        << saved_activations_name(saved) << " chunks " << chunks << (training ? "" : " inference");
  }
}

TEST(Ulysses, ShardsOfAPackedSequenceSpanningRanksSeeEachOther) {
  // One 24-token sequence over 4 ranks with a causal mask: the last rank's queries must attend to
  // keys held by rank 0, i.e. masks use global positions. With Q = 0 the softmax is uniform over
  // the visible keys, so a large value planted in V at position 0 shows in O at every position.
  const Case c{"span",          4,    Layout::kTHD, 1,  24,    4,      4, 8,
               DType::kFloat32, true, -1,           -1, false, {0, 24}};
  std::mt19937_64 rng(testing::fresh_seed());
  Inputs in = make_inputs(c, rng);
  for (std::int64_t i = 0; i < in.q.numel(); ++i) in.q.set(i, 0.0);
  for (int h = 0; h < 4; ++h) {
    for (int d = 0; d < 8; ++d) in.v.set(in.v.view.offset({0, h, d}), 1000.0);
  }
  std::vector<HostTensor> dsinks;
  const Outputs got = ulysses(c, in, dsinks);
  for (std::int64_t t = 0; t < 24; ++t) {
    // mean of V[0..t]: >= (1000 - 2 t) / (t + 1) >= 39.75 for t <= 23; without position 0, <= 2.
    EXPECT_GT(got.o.at(got.o.view.offset({t, 0, 0})), 30.0) << "position " << t;
  }
}

// cp = 1: nothing travels. Where the caller's views are as aligned as the plan's own buffers, the
// kernel reads and writes them in place (kLseOnly and inference: q, k, v and o too; head-sharded
// saves: dO, dQ, dK and dV, Q|K|V and O coming from `saved`); elsewhere the rows go through the
// plan's buffers as with cp > 1, which the plan keeps itself: the caller's workspace holds only
// what the in-place calls need. Either way every result is bitwise the unsharded reference's. Q, K,
// V (and in some scenarios dQ, dK, dV) are slices of one fused buffer, as a framework's QKV
// projection hands them over.
class RecordingKernel final : public LocalAttention {
 public:
  explicit RecordingKernel(LocalAttention& inner) : inner_(inner) {}
  std::vector<LocalForwardArgs> forwards;
  std::vector<LocalBackwardArgs> backwards;

  std::string_view name() const override { return "recording-reference"; }
  Device device() const override { return inner_.device(); }
  bool provides_lse() const override { return inner_.provides_lse(); }
  bool supports_backward() const override { return inner_.supports_backward(); }
  Status check_support(const LocalProblem& p) const override { return inner_.check_support(p); }
  std::size_t workspace_bytes(const LocalProblem& p) const override {
    return inner_.workspace_bytes(p);
  }
  Status forward(const LocalProblem& p, const LocalForwardArgs& a, Stream stream) override {
    forwards.push_back(a);
    return inner_.forward(p, a, stream);
  }
  Status backward(const LocalProblem& p, const LocalBackwardArgs& a, Stream stream) override {
    backwards.push_back(a);
    return inner_.backward(p, a, stream);
  }

 private:
  LocalAttention& inner_;
};

TEST(UlyssesSingleRank, KernelUsesTheCallersViewsWhereAligned) {
  struct Scenario {
    std::string name;
    Layout layout;
    SavedActivations saved;
    bool training;
    std::int64_t shift;  // elements: 1 puts every view off 16 bytes
    bool fused_grads;    // dQ, dK, dV slices of one buffer (else contiguous tensors)
    bool direct_forward, direct_backward;
    int Dv = 0;  // head_dim_v (0: head_dim)
  };
  const auto bshd = Layout::kBSHD, thd = Layout::kTHD;
  const auto lse = SavedActivations::kLseOnly, heads = SavedActivations::kHeadSharded;
  const std::vector<Scenario> scenarios = {
      {"lse", bshd, lse, true, 0, true, true, true},
      {"heads", bshd, heads, true, 0, true, false, true},
      {"inference", bshd, heads, false, 0, false, true, false},
      {"lse_misaligned", bshd, lse, true, 1, true, false, false},
      {"heads_misaligned", bshd, heads, true, 1, true, false, false},
      // Packed: the kernel needs O, dO and dQ with one token stride; a fused dQ has another.
      {"thd_lse_fused_grads", thd, lse, true, 0, true, true, false},
      {"thd_lse", thd, lse, true, 0, false, true, true},
      {"thd_heads", thd, heads, true, 0, false, false, true},
      {"thd_heads_fused_grads", thd, heads, true, 0, true, false, false},
      // Rows of two widths (head_dim_v != head_dim) have no one token stride: the kernel brings
      // them into one itself (CudnnAttention stages them), so any aligned views serve.
      {"thd_heads_mla", thd, heads, true, 0, false, false, true, 4},
      {"thd_lse_mla_fused_grads", thd, lse, true, 0, true, true, true, 4},
      {"thd_heads_mla_fused_grads", thd, heads, true, 0, true, false, true, 12},
      {"heads_mla", bshd, heads, true, 0, true, false, true, 4},
  };
  for (const Scenario& sc : scenarios) {
    SCOPED_TRACE(sc.name);
    Case c{sc.name, 1,  sc.layout, sc.layout == thd ? 1 : 2, 12, 4, 2, 8, DType::kFloat32, true,
           -1,      -1, true};
    if (sc.layout == thd) c.cu = {0, 6, 12};  // (even lengths: ring pads to 2 cp)
    c.training = sc.training;
    c.Dv = sc.Dv;
    const auto seed = testing::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const Inputs in = make_inputs(c, rng);
    const Outputs ref = unsharded(c, in, c.dtype);

    // Q|K|V rows (Q and K heads of D, V heads of Dv) and O rows per token.
    const int Dv = sc.Dv > 0 ? sc.Dv : c.D;
    const std::int64_t qkv_row = (c.Hq + c.Hkv) * c.D + c.Hkv * Dv, o_row = c.Hq * Dv;
    HostTensor qkv(DType::kFloat32, {c.B * c.S * qkv_row + 1}),
        dqkv(DType::kFloat32, {c.B * c.S * qkv_row + 1}),
        o_buf(DType::kFloat32, {c.B * c.S * o_row + 1}),
        do_buf(DType::kFloat32, {c.B * c.S * o_row + 1});
    for (HostTensor* t : {&dqkv, &o_buf}) testing::poison(*t);
    // n heads of width d, `offset` elements into rows of `row`.
    auto rows_of = [&](HostTensor& buf, std::int64_t row, std::int64_t offset, int n, int d) {
      return testing::row_slice(buf.storage.data(), c.dtype, c.layout, c.B, c.S, row, offset, n, d,
                                sc.shift);
    };
    const std::int64_t k_at = c.Hq * c.D, v_at = (c.Hq + c.Hkv) * c.D;
    const TensorView q = rows_of(qkv, qkv_row, 0, c.Hq, c.D),
                     k = rows_of(qkv, qkv_row, k_at, c.Hkv, c.D),
                     v = rows_of(qkv, qkv_row, v_at, c.Hkv, Dv),
                     o = rows_of(o_buf, o_row, 0, c.Hq, Dv),
                     d_o = rows_of(do_buf, o_row, 0, c.Hq, Dv);
    testing::copy_into(q, in.q);
    testing::copy_into(k, in.k);
    testing::copy_into(v, in.v);
    testing::copy_into(d_o, in.d_o);
    Outputs got = poisoned_outputs(c, c.dtype);
    TensorView dq = got.dq.view, dk = got.dk.view, dv = got.dv.view;
    if (sc.fused_grads) {
      dq = rows_of(dqkv, qkv_row, 0, c.Hq, c.D);
      dk = rows_of(dqkv, qkv_row, k_at, c.Hkv, c.D);
      dv = rows_of(dqkv, qkv_row, v_at, c.Hkv, Dv);
    } else if (sc.shift != 0) {
      GTEST_FAIL() << "misaligned scenarios use fused gradients";
    }

    auto ref_kernel = make_reference_attention();
    RecordingKernel kernel(*ref_kernel);
    const PlanConfig cfg{.attention = attention(c),
                         .parallel = {.cp = 1},
                         .layout = c.layout,
                         .dtype = c.dtype,
                         .batch = c.B,
                         .seqlen = c.S,
                         .training = c.training,
                         .overlap_chunks = 2,  // nothing to overlap: one call for every head
                         .saved_activations = sc.saved};
    // The caller's workspace holds what the in-place calls need: the kernel's workspace (none
    // for the reference kernel), dSinks and inference's LSE, each 256-byte aligned; not the
    // copying buffers (>= 3 KiB each here), which the plan keeps for the calls that need them.
    // Bytes past it stay as they were.
    const std::size_t in_place_bound =
        3 * 256 + static_cast<std::size_t>(c.B * c.S * c.Hq) * sizeof(float);
    constexpr std::size_t kGuard = 4096;
    std::size_t ws_bytes = 0;
    std::vector<unsigned char> ws;
    auto step = [&](DistributedAttention& plan, void* saved) -> Status {
      ForwardArgs f;
      f.q = q;
      f.k = k;
      f.v = v;
      f.sinks = in.sinks.view;
      f.o = o;
      f.lse = got.lse.view;
      f.cu_seqlens = c.cu;
      f.workspace = ws.data();
      f.saved = saved;
      if (Status st = plan.forward(f, nullptr); !st.is_ok() || !c.training) return st;
      BackwardArgs b;
      b.d_o = d_o;
      b.sinks = in.sinks.view;
      b.dsinks = got.dsinks.view;
      b.dq = dq;
      b.dk = dk;
      b.dv = dv;
      b.cu_seqlens = c.cu;
      b.workspace = ws.data();
      b.saved = saved;
      b.q = q;
      b.k = k;
      b.v = v;
      b.o = o;
      return plan.backward(b, nullptr);
    };
    std::size_t held_new = 1, held_after_step = 0, held_released = 1, held_again = 0;
    EXPECT_ALL_OK(testing::run_ranks(1, [&](int, Communicator& comm) -> Status {
      auto plan = DistributedAttention::create(cfg, comm, kernel);
      if (!plan.is_ok()) return plan.status();
      ws_bytes = (*plan)->workspace_bytes();
      ws.assign(ws_bytes + kGuard, 0xFF);
      std::vector<unsigned char> saved((*plan)->saved_bytes());
      held_new = (*plan)->held_bytes();
      if (Status st = step(**plan, saved.data()); !st.is_ok()) return st;
      held_after_step = (*plan)->held_bytes();
      if (Status st = (*plan)->release_held(nullptr); !st.is_ok()) return st;
      held_released = (*plan)->held_bytes();
      // Poisoned again: the checks below see the second step's results.
      for (HostTensor* t : {&dqkv, &o_buf, &got.lse, &got.dq, &got.dk, &got.dv, &got.dsinks}) {
        testing::poison(*t);
      }
      if (Status st = step(**plan, saved.data()); !st.is_ok()) return st;
      held_again = (*plan)->held_bytes();
      return Status::ok();
    }));
    // The copying buffers, only where a call copied rows (a head-sharded forward copies into
    // `saved` and needs none), freed by release_held() and allocated again by the next step.
    const bool forward_copies = (sc.saved == lse || !sc.training) && !sc.direct_forward;
    const bool copies = forward_copies || (sc.training && !sc.direct_backward);
    EXPECT_EQ(held_new, 0u);
    EXPECT_EQ(held_after_step > 0, copies) << held_after_step;
    EXPECT_EQ(held_released, 0u);
    EXPECT_EQ(held_again, held_after_step);
    EXPECT_LE(ws_bytes, in_place_bound);
    EXPECT_TRUE(std::all_of(ws.begin() + static_cast<std::ptrdiff_t>(ws_bytes), ws.end(),
                            [](unsigned char b) { return b == 0xFF; }))
        << "written past workspace_bytes()";
    ASSERT_EQ(kernel.forwards.size(), 2u);  // two steps: the second one's
    const LocalForwardArgs& kf = kernel.forwards.back();
    EXPECT_EQ(
        kf.q.data == q.data && kf.k.data == k.data && kf.v.data == v.data && kf.o.data == o.data,
        sc.direct_forward);
    EXPECT_EQ(kf.q.shape[2], c.Hq) << "one call for every head";
    EXPECT_BITWISE_EQ(ref.o, testing::copy_of(o, ref.o), "O");
    EXPECT_BITWISE_EQ(ref.lse, got.lse, "LSE");
    if (!c.training) continue;
    ASSERT_EQ(kernel.backwards.size(), 2u);
    const LocalBackwardArgs& kb = kernel.backwards.back();
    const bool grads_in_place = kb.d_o.data == d_o.data && kb.dq.data == dq.data &&
                                kb.dk.data == dk.data && kb.dv.data == dv.data;
    EXPECT_EQ(grads_in_place, sc.direct_backward);
    // Head-sharded saves: Q|K|V and O come from `saved` whatever the caller's views.
    EXPECT_EQ(kb.q.data == q.data && kb.o.data == o.data, sc.direct_backward && sc.saved == lse);
    // Saved Q rows have O's token stride (cuDNN's packed backward needs one for both) where their
    // heads are as wide.
    if (sc.saved == heads && Dv == c.D) {
      EXPECT_EQ(kb.q.stride(1), kb.o.stride(1));
    }
    EXPECT_BITWISE_EQ(ref.dq, testing::copy_of(dq, ref.dq), "dQ");
    EXPECT_BITWISE_EQ(ref.dk, testing::copy_of(dk, ref.dk), "dK");
    EXPECT_BITWISE_EQ(ref.dv, testing::copy_of(dv, ref.dv), "dV");
    EXPECT_BITWISE_EQ(ref.dsinks, got.dsinks, "dSinks");
  }
}

// cp = 1 under ring, hybrid and all-gather: the same attention with nothing to send, so where their
// arguments mean what Ulysses' mean (native payload; ring and hybrid unpacked) the plan is Ulysses'
// one-rank plan: the kernel reads the caller's K in place (ring and all-gather copy it into their
// own rows), config() still names the strategy, and `saved` survives backward as those strategies
// promise; bitwise the reference. Elsewhere (ring packed, fp8) the strategy's own plan runs.
TEST(UlyssesSingleRank, OtherStrategiesRunTheOneRankPlanWhereArgumentsAgree) {
  struct Scenario {
    std::string name;
    Strategy strategy;
    Layout layout;
    Payload payload;
    bool routed;
  };
  const auto bshd = Layout::kBSHD, thd = Layout::kTHD;
  const auto native = Payload::kNative, fp8 = Payload::kFp8;
  const std::vector<Scenario> scenarios = {
      {"ring", Strategy::kRing, bshd, native, true},
      {"hybrid", Strategy::kHybrid, bshd, native, true},
      {"allgather", Strategy::kAllGather, bshd, native, true},
      {"allgather_packed", Strategy::kAllGather, thd, native, true},
      {"ring_packed", Strategy::kRing, thd, native, false},
      {"ring_fp8", Strategy::kRing, bshd, fp8, false},
  };
  for (const Scenario& sc : scenarios) {
    SCOPED_TRACE(sc.name);
    Case c{sc.name, 1,  sc.layout, sc.layout == thd ? 1 : 2, 12, 4, 2, 8, DType::kFloat32, true,
           -1,      -1, true};
    if (sc.layout == thd) c.cu = {0, 6, 12};  // (even lengths: ring pads to 2 cp)
    c.payload = sc.payload;
    const auto seed = testing::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    Inputs in = make_inputs(c, rng);
    const Outputs ref = unsharded(c, as_delivered(c, in), c.dtype);
    Outputs got = poisoned_outputs(c, c.dtype);

    auto ref_kernel = make_reference_attention();
    RecordingKernel kernel(*ref_kernel);
    const PlanConfig cfg{.attention = attention(c),
                         .parallel = {.strategy = sc.strategy,
                                      .cp = 1,
                                      .ulysses_degree = sc.strategy == Strategy::kHybrid ? 1 : 0},
                         .layout = c.layout,
                         .dtype = c.dtype,
                         .batch = c.B,
                         .seqlen = c.S,
                         .saved_activations = SavedActivations::kLseOnly,
                         .payload = c.payload};
    EXPECT_ALL_OK(testing::run_ranks(1, [&](int, Communicator& comm) -> Status {
      auto plan = DistributedAttention::create(cfg, comm, kernel);
      if (!plan.is_ok()) return plan.status();
      if ((*plan)->config().parallel.strategy != sc.strategy) {
        return internal_error("config() names another strategy");
      }
      std::vector<unsigned char> ws((*plan)->workspace_bytes(), 0xFF),
          saved((*plan)->saved_bytes());
      ForwardArgs f;
      f.q = in.q.view;
      f.k = in.k.view;
      f.v = in.v.view;
      f.sinks = in.sinks.view;
      f.o = got.o.view;
      f.lse = got.lse.view;
      f.cu_seqlens = c.cu;
      f.workspace = ws.data();
      f.saved = saved.data();
      if (Status st = (*plan)->forward(f, nullptr); !st.is_ok()) return st;
      BackwardArgs b;
      b.d_o = in.d_o.view;
      b.sinks = in.sinks.view;
      b.dsinks = got.dsinks.view;
      b.dq = got.dq.view;
      b.dk = got.dk.view;
      b.dv = got.dv.view;
      b.cu_seqlens = c.cu;
      b.workspace = ws.data();
      b.saved = saved.data();
      b.q = f.q;
      b.k = f.k;
      b.v = f.v;
      b.o = f.o;
      if (Status st = (*plan)->backward(b, nullptr); !st.is_ok()) return st;
      return (*plan)->backward(b, nullptr);  // `saved` kept: the same gradients again
    }));
    ASSERT_FALSE(kernel.forwards.empty());
    EXPECT_EQ(kernel.forwards[0].k.data == in.k.view.data, sc.routed);
    if (sc.routed) {
      EXPECT_EQ(kernel.forwards.size(), 1u);
      EXPECT_EQ(kernel.backwards.size(), 2u);
    }
    // The strategies' own plans have their own suites (ring's packed shard holds each sequence's
    // first halves, then its second halves; fp8 rounds K and V).
    if (!sc.routed) continue;
    EXPECT_BITWISE_EQ(ref.o, got.o, "O");
    EXPECT_BITWISE_EQ(ref.lse, got.lse, "LSE");
    EXPECT_BITWISE_EQ(ref.dq, got.dq, "dQ");
    EXPECT_BITWISE_EQ(ref.dk, got.dk, "dK");
    EXPECT_BITWISE_EQ(ref.dv, got.dv, "dV");
    EXPECT_BITWISE_EQ(ref.dsinks, got.dsinks, "dSinks");
  }
}

}  // namespace
}  // namespace ulysses
