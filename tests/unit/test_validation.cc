// Every validation rule: the code, the argument named in the message, and (for plan-level rules)
// the same verdict on every rank, before any data moves.
#include <gtest/gtest.h>

#include <limits>
#include <mutex>

#include "common/call_fixture.h"
#include "common/test_util.h"

namespace ulysses {
namespace {

using testing::HostTensor;

PlanConfig good_config(int cp = 2) {
  return PlanConfig{
      .attention = {.num_heads_q = 8, .num_heads_kv = 4, .head_dim = 16, .causal = true},
      .parallel = {.cp = cp},
      .layout = Layout::kBSHD,
      .dtype = DType::kBFloat16,
      .batch = 2,
      .seqlen = 16};
}

// create() on every rank of a loopback group with per-rank configs; returns each rank's status.
std::vector<Status> create_everywhere(int cp, const std::function<PlanConfig(int)>& config_of) {
  auto kernel = make_reference_attention();
  return testing::run_ranks(cp, [&](int r, Communicator& comm) -> Status {
    return DistributedAttention::create(config_of(r), comm, *kernel).status();
  });
}

// Expects `code` on every rank, the same message everywhere, and every `needle` in it.
void expect_everywhere(const std::vector<Status>& st, StatusCode code,
                       std::initializer_list<std::string_view> needles) {
  ASSERT_FALSE(st.empty());
  for (std::size_t r = 0; r < st.size(); ++r) {
    EXPECT_EQ(st[r].code(), code) << "rank " << r << ": " << st[r].to_string();
    EXPECT_EQ(st[r].message(), st[0].message()) << "rank " << r << " reports differently";
    for (std::string_view n : needles) {
      EXPECT_NE(st[r].message().find(n), std::string::npos)
          << "message of rank " << r << " lacks '" << n << "': " << st[r].message();
    }
  }
}

struct PlanRule {
  std::string name;
  std::function<void(PlanConfig&)> mutate;
  StatusCode code;
  std::vector<std::string> needles;
};

void PrintTo(const PlanRule& r, std::ostream* os) { *os << r.name; }

class PlanRules : public ::testing::TestWithParam<PlanRule> {};

TEST_P(PlanRules, RejectedOnEveryRankWithTheArgumentNamed) {
  const PlanRule rule = GetParam();
  const auto st = create_everywhere(2, [&](int) {
    PlanConfig c = good_config();
    rule.mutate(c);
    return c;
  });
  ASSERT_FALSE(st.empty());
  for (std::size_t r = 0; r < st.size(); ++r) {
    EXPECT_EQ(st[r].code(), rule.code) << st[r].to_string();
    EXPECT_EQ(st[r].message(), st[0].message());
    for (const std::string& n : rule.needles) {
      EXPECT_NE(st[r].message().find(n), std::string::npos)
          << "'" << n << "' not in: " << st[r].message();
    }
  }
}

std::vector<PlanRule> plan_rules() {
  using SC = StatusCode;
  return {
      {"heads_not_divisible_by_cp",
       [](PlanConfig& c) {
         // (One KV head shared by both ranks: each needs half the query heads.)
         c.attention.num_heads_q = 3;
         c.attention.num_heads_kv = 1;
       },
       SC::kInvalidArgument,
       {"num_heads_q", "got 3", "divisible by cp 2", "allgather or ring takes any head count"}},
      {"seqlen_not_divisible_by_cp",
       [](PlanConfig& c) { c.seqlen = 15; },
       SC::kInvalidArgument,
       {"seqlen", "got 15", "multiple of 2"}},
      {"thd_seqlen_not_divisible_mentions_padding",
       [](PlanConfig& c) {
         c.layout = Layout::kTHD;
         c.batch = 1;
         c.seqlen = 17;
       },
       SC::kInvalidArgument,
       {"seqlen", "padded_token_count"}},
      {"head_dim_zero",
       [](PlanConfig& c) { c.attention.head_dim = 0; },
       SC::kInvalidArgument,
       {"head_dim", "got 0", "1..256"}},
      {"too_many_heads",
       [](PlanConfig& c) {
         c.attention.num_heads_q = 65537 * 4;
         c.attention.num_heads_kv = 4;
       },
       SC::kInvalidArgument,
       {"num_heads_q", "got 262148", "1..65536"}},
      // Sizes past what the plans' int64 arithmetic holds, named before any of it runs (a config
      // fuzz over create() under UBSan found the products overflowing; one that overflows int64
      // itself too).
      {"tensor_past_2_to_48_elements",
       [](PlanConfig& c) {
         c.batch = std::int64_t{1} << 30;
         c.seqlen = std::int64_t{1} << 20;  // x 8 heads x 16 = 2^57
       },
       SC::kInvalidArgument,
       {"batch * seqlen * num_heads_q * max(head_dim, head_dim_v)", "got 144115188075855872",
        "at most 2^48 = 281474976710656"}},
      {"tensor_size_past_int64",
       [](PlanConfig& c) {
         c.batch = std::numeric_limits<std::int64_t>::max();
         c.seqlen = 16;
       },
       SC::kInvalidArgument,
       {"batch * seqlen", "got more than 2^63 - 1"}},
      {"head_dim_too_large",
       [](PlanConfig& c) { c.attention.head_dim = 300; },
       SC::kInvalidArgument,
       {"head_dim", "got 300"}},
      {"head_dim_v_negative",
       [](PlanConfig& c) { c.attention.head_dim_v = -1; },
       SC::kInvalidArgument,
       {"head_dim_v", "got -1", "0 (head_dim) or 1..256"}},
      {"head_dim_v_too_large",
       [](PlanConfig& c) { c.attention.head_dim_v = 257; },
       SC::kInvalidArgument,
       {"head_dim_v", "got 257"}},
      {"window_left_below_minus_one",
       [](PlanConfig& c) { c.attention.window_left = -2; },
       SC::kInvalidArgument,
       {"window_left", "got -2"}},
      {"window_right_below_minus_one",
       [](PlanConfig& c) {
         c.attention.causal = false;
         c.attention.window_right = -5;
       },
       SC::kInvalidArgument,
       {"window_right", "got -5"}},
      {"window_right_with_causal",
       [](PlanConfig& c) { c.attention.window_right = 3; },
       SC::kInvalidArgument,
       {"window_right", "causal"}},
      {"gqa_heads_not_multiple",
       [](PlanConfig& c) {
         c.attention.num_heads_q = 8;
         c.attention.num_heads_kv = 3;
       },
       SC::kInvalidArgument,
       {"num_heads_q", "num_heads_kv 3"}},
      {"uneven_heads_with_overlap_chunks",
       [](PlanConfig& c) {
         // 3 KV heads over 2 ranks: 2 and 1, whose chunks could not match.
         c.attention.num_heads_q = 6;
         c.attention.num_heads_kv = 3;
         c.overlap_chunks = 2;
       },
       SC::kInvalidArgument,
       {"overlap_chunks", "got 2", "the fewest, 1", "num_heads_kv 3 over cp 2", "1 to 1"}},
      {"thd_with_batch",
       [](PlanConfig& c) {
         c.layout = Layout::kTHD;
         c.batch = 2;
       },
       SC::kInvalidArgument,
       {"batch", "thd", "got 2"}},
      {"batch_zero", [](PlanConfig& c) { c.batch = 0; }, SC::kInvalidArgument, {"batch", "got 0"}},
      {"num_heads_kv_zero",
       [](PlanConfig& c) { c.attention.num_heads_kv = 0; },
       SC::kInvalidArgument,
       {"num_heads_kv", "got 0"}},
      {"bad_scale",
       [](PlanConfig& c) { c.attention.softmax_scale = -1.0f; },
       SC::kInvalidArgument,
       {"softmax_scale"}},
      {"cp_differs_from_comm",
       [](PlanConfig& c) {
         c.parallel.cp = 4;
         c.seqlen = 16;
       },
       SC::kInvalidArgument,
       {"parallel.cp", "got 4", "comm.size()"}},
      {"ring_seqlen_not_multiple_of_2cp",
       [](PlanConfig& c) {
         c.parallel.strategy = Strategy::kRing;
         c.seqlen = 18;
       },
       SC::kInvalidArgument,
       {"seqlen", "got 18", "a multiple of 4"}},
      {"ring_with_ulysses_degree",
       [](PlanConfig& c) {
         c.parallel.strategy = Strategy::kRing;
         c.parallel.ulysses_degree = 2;
       },
       SC::kInvalidArgument,
       {"ulysses_degree", "got 2", "hybrid"}},
      {"hybrid_degree_not_dividing_cp",
       [](PlanConfig& c) {
         c.parallel.strategy = Strategy::kHybrid;
         c.parallel.ulysses_degree = 3;
       },
       SC::kInvalidArgument,
       {"ulysses_degree", "got 3", "divisor of 2"}},
      {"hybrid_without_degree",
       [](PlanConfig& c) { c.parallel.strategy = Strategy::kHybrid; },
       SC::kInvalidArgument,
       {"ulysses_degree", "got 0"}},
      {"hybrid_heads_unroutable",
       [](PlanConfig& c) {
         // Groups of 2 share the one KV head, but cannot split 3 query heads.
         c.parallel.strategy = Strategy::kHybrid;
         c.parallel.ulysses_degree = 2;
         c.attention.num_heads_q = 3;
         c.attention.num_heads_kv = 1;
       },
       SC::kInvalidArgument,
       {"num_heads_q", "got 3", "divisible by ulysses_degree 2", "allgather or ring"}},
      {"ulysses_per_sequence_packing",
       [](PlanConfig& c) { c.parallel.packed_sharding = PackedSharding::kPerSequence; },
       SC::kInvalidArgument,
       {"packed_sharding", "per_sequence", "ring and hybrid", "ulysses", "default or stream"}},
      {"allgather_per_sequence_packing",
       [](PlanConfig& c) {
         c.parallel.strategy = Strategy::kAllGather;
         c.parallel.packed_sharding = PackedSharding::kPerSequence;
       },
       SC::kInvalidArgument,
       {"packed_sharding", "per_sequence", "allgather"}},
      {"unknown_packed_sharding",
       [](PlanConfig& c) {
         c.parallel.strategy = Strategy::kRing;
         c.parallel.packed_sharding = static_cast<PackedSharding>(7);
       },
       SC::kInvalidArgument,
       {"packed_sharding", "got 7", "default, per_sequence or stream"}},
      {"allgather_seqlen_not_multiple_of_2cp",
       [](PlanConfig& c) {
         c.parallel.strategy = Strategy::kAllGather;
         c.seqlen = 18;
       },
       SC::kInvalidArgument,
       {"seqlen", "got 18", "a multiple of 4"}},
      {"allgather_with_overlap_chunks",
       [](PlanConfig& c) {
         c.parallel.strategy = Strategy::kAllGather;
         c.overlap_chunks = 2;
       },
       SC::kInvalidArgument,
       {"overlap_chunks", "got 2", "allgather"}},
      {"ring_with_overlap_chunks",
       [](PlanConfig& c) {
         c.parallel.strategy = Strategy::kRing;
         c.overlap_chunks = 2;
       },
       SC::kInvalidArgument,
       {"overlap_chunks", "got 2", "ring"}},
      {"overlap_chunks_zero",
       [](PlanConfig& c) { c.overlap_chunks = 0; },
       SC::kInvalidArgument,
       {"overlap_chunks", "got 0"}},
      {"overlap_chunks_above_the_kv_heads_per_rank",
       [](PlanConfig& c) { c.overlap_chunks = 3; },
       SC::kInvalidArgument,
       {"overlap_chunks", "got 3", "cannot exceed the key/value heads per rank (2", "1 to 2"}},
      {"overlap_chunks_with_replicated_kv",
       [](PlanConfig& c) {
         c.attention.num_heads_kv = 1;
         c.overlap_chunks = 2;
       },
       SC::kInvalidArgument,
       {"overlap_chunks", "got 2", "share key/value heads", "cp 2 > num_heads_kv 1"}},
      {"saved_activations_out_of_range",
       [](PlanConfig& c) { c.saved_activations = static_cast<SavedActivations>(5); },
       SC::kInvalidArgument,
       {"saved_activations", "got 5"}},
      {"chunks_in_flight_zero",
       [](PlanConfig& c) { c.chunks_in_flight = 0; },
       SC::kInvalidArgument,
       {"chunks_in_flight", "got 0"}},
      {"chunks_in_flight_three",
       [](PlanConfig& c) { c.chunks_in_flight = 3; },
       SC::kInvalidArgument,
       {"chunks_in_flight", "got 3", "1 ", "2 "}},
      {"payload_out_of_range",
       [](PlanConfig& c) { c.payload = static_cast<Payload>(7); },
       SC::kInvalidArgument,
       {"payload", "got 7"}},
      {"fp8_payload_of_fp8_activations",
       [](PlanConfig& c) {
         c.dtype = DType::kFloat8E4M3;
         c.payload = Payload::kFp8;
       },
       SC::kInvalidArgument,
       {"payload", "got fp8e4m3", "bf16"}},
  };
}

INSTANTIATE_TEST_SUITE_P(Validation, PlanRules, ::testing::ValuesIn(plan_rules()),
                         [](const auto& param_info) { return param_info.param.name; });

TEST(Validation, GqaUnroutableNamesBothNumbers) {
  // P = 4 with 3 KV heads: neither divides the other, and too few to split unevenly.
  const auto st = create_everywhere(4, [](int) {
    PlanConfig c = good_config(4);
    c.attention.num_heads_q = 12;
    c.attention.num_heads_kv = 3;
    return c;
  });
  expect_everywhere(st, StatusCode::kInvalidArgument,
                    {"num_heads_kv", "got 3", "cp 4", "num_heads_q 12", "below it", "or above 4"});
}

TEST(Validation, ConfigsThatDifferBetweenRanksFailEverywhere) {
  const auto st = create_everywhere(3, [](int r) {
    PlanConfig c = good_config(3);
    c.attention.num_heads_q = 12;
    c.attention.num_heads_kv = 3;
    c.seqlen = 24;
    if (r == 2) c.attention.causal = false;
    return c;
  });
  for (const Status& s : st) {
    EXPECT_EQ(s.code(), StatusCode::kConfigMismatch) << s.to_string();
    EXPECT_NE(s.message().find("causal"), std::string::npos) << s.message();
  }
}

TEST(Validation, PipelineChunksThatDifferBetweenRanksFailEverywhere) {
  // Different chunk counts would exchange different message sizes: caught at create().
  const auto st = create_everywhere(2, [](int r) {
    PlanConfig c = good_config(2);
    c.overlap_chunks = r == 0 ? 1 : 2;
    return c;
  });
  for (const Status& s : st) {
    EXPECT_EQ(s.code(), StatusCode::kConfigMismatch) << s.to_string();
    EXPECT_NE(s.message().find("overlap_chunks"), std::string::npos) << s.message();
  }
}

TEST(Validation, SavedActivationsThatDifferBetweenRanksFailEverywhere) {
  // One rank would exchange Q, K, V, O again in backward, the other not: caught at create().
  const auto st = create_everywhere(2, [](int r) {
    PlanConfig c = good_config(2);
    if (r == 1) c.saved_activations = SavedActivations::kLseOnly;
    return c;
  });
  for (const Status& s : st) {
    EXPECT_EQ(s.code(), StatusCode::kConfigMismatch) << s.to_string();
    EXPECT_NE(s.message().find("saved_activations"), std::string::npos) << s.message();
  }
}

TEST(Validation, PayloadsThatDifferBetweenRanksFailEverywhere) {
  // One rank would send fp8 rows, the other native ones of another size: caught at create().
  const auto st = create_everywhere(2, [](int r) {
    PlanConfig c = good_config(2);
    if (r == 0) c.payload = Payload::kFp8;
    return c;
  });
  for (const Status& s : st) {
    EXPECT_EQ(s.code(), StatusCode::kConfigMismatch) << s.to_string();
    EXPECT_NE(s.message().find("payload"), std::string::npos) << s.message();
  }
}

// A loopback rank and a kernel that say their buffers live on GPU 0: enough for create()'s
// device-dependent checks, which run before any buffer or stream is touched.
class OnDeviceComm final : public Communicator {
 public:
  explicit OnDeviceComm(Communicator& inner) : inner_(inner) {}
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  Device device() const override { return Device::cuda(0); }
  std::string_view backend_name() const override { return "on-device label"; }
  Status all_to_all_v(const void*, std::span<const std::size_t>, std::span<const std::size_t>,
                      void*, std::span<const std::size_t>, std::span<const std::size_t>,
                      Stream) override {
    return internal_error("not for data");
  }
  Status send(const void*, std::size_t, int, Stream) override { return internal_error("no"); }
  Status recv(void*, std::size_t, int, Stream) override { return internal_error("no"); }
  Status all_gather(const void*, void*, std::size_t, Stream) override {
    return internal_error("no");
  }
  Status all_reduce_sum(const void*, void*, std::size_t, DType, Stream) override {
    return internal_error("no");
  }
  Status barrier(Stream) override { return internal_error("no"); }
  Status host_all_gather(const void* send, void* recv, std::size_t bytes) override {
    return inner_.host_all_gather(send, recv, bytes);  // create()'s agreement is real
  }
  Status group_start() override { return internal_error("no"); }
  Status group_end() override { return internal_error("no"); }

 private:
  Communicator& inner_;
};

class OnDeviceKernel final : public LocalAttention {
 public:
  std::string_view name() const override { return "on-device label"; }
  Device device() const override { return Device::cuda(0); }
  bool provides_lse() const override { return true; }
  bool supports_backward() const override { return true; }
  Status check_support(const LocalProblem&) const override { return Status::ok(); }
  Status forward(const LocalProblem&, const LocalForwardArgs&, Stream) override {
    return internal_error("not run");
  }
  Status backward(const LocalProblem&, const LocalBackwardArgs&, Stream) override {
    return internal_error("not run");
  }
};

TEST(Validation, Fp8PayloadOnADeviceNeedsADtypeItsKernelsTake) {
  OnDeviceKernel kernel;
  for (Strategy strategy : {Strategy::kUlysses, Strategy::kRing}) {
    const auto st = testing::run_ranks(2, [&](int, Communicator& comm) -> Status {
      OnDeviceComm on_device(comm);
      PlanConfig c = good_config(2);
      c.parallel.strategy = strategy;
      c.dtype = DType::kFloat64;
      c.payload = Payload::kFp8;
      return DistributedAttention::create(c, on_device, kernel).status();
    });
    SCOPED_TRACE(strategy_name(strategy));
    expect_everywhere(st, StatusCode::kUnsupported, {"payload fp8", "device", "fp64", "fp32"});
  }
}

// A kernel that records whether the problems it is asked about will run backward.
class BackwardRecordingKernel final : public LocalAttention {
 public:
  std::string_view name() const override { return "backward-recording"; }
  Device device() const override { return Device::host(); }
  bool provides_lse() const override { return true; }
  bool supports_backward() const override { return true; }
  Status check_support(const LocalProblem& p) const override {
    std::lock_guard<std::mutex> lock(mu_);
    seen_.push_back(p.backward);
    return Status::ok();
  }
  Status forward(const LocalProblem&, const LocalForwardArgs&, Stream) override {
    return internal_error("not run");
  }
  Status backward(const LocalProblem&, const LocalBackwardArgs&, Stream) override {
    return internal_error("not run");
  }
  std::vector<bool> seen() const {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }

 private:
  mutable std::mutex mu_;
  mutable std::vector<bool> seen_;
};

TEST(Validation, KernelsAreAskedForBackwardOnlyWhenTraining) {
  // A training plan must be refused at create() for what only backward lacks (e.g. cuDNN < 9.19
  // with packed batches past head_dim 128), so its problems say backward = true; inference ones
  // false.
  for (Strategy strategy : {Strategy::kUlysses, Strategy::kRing}) {
    for (bool training : {true, false}) {
      BackwardRecordingKernel kernel;
      const auto st = testing::run_ranks(2, [&](int, Communicator& comm) -> Status {
        PlanConfig c = good_config(2);
        c.parallel.strategy = strategy;
        c.training = training;
        return DistributedAttention::create(c, comm, kernel).status();
      });
      for (const Status& s : st) EXPECT_TRUE(s.is_ok()) << s.to_string();
      const std::vector<bool> seen = kernel.seen();
      ASSERT_FALSE(seen.empty());
      for (bool b : seen) {
        EXPECT_EQ(b, training) << strategy_name(strategy) << " training " << training;
      }
    }
  }
}

TEST(Validation, PayloadNamesRoundTrip) {
  for (Payload p : {Payload::kNative, Payload::kFp8}) {
    auto parsed = parse_payload(payload_name(p));
    ASSERT_TRUE(parsed.is_ok());
    EXPECT_EQ(*parsed, p);
  }
  const auto bad = parse_payload("fp4");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("fp4"), std::string::npos);
  EXPECT_NE(bad.status().message().find("native or fp8"), std::string::npos);
}

TEST(Validation, StrategyNamesRoundTrip) {
  for (Strategy st :
       {Strategy::kUlysses, Strategy::kRing, Strategy::kHybrid, Strategy::kAllGather}) {
    auto parsed = parse_strategy(strategy_name(st));
    ASSERT_TRUE(parsed.is_ok()) << strategy_name(st);
    EXPECT_EQ(*parsed, st);
  }
  const auto bad = parse_strategy("all_gather");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("all_gather"), std::string::npos);
  EXPECT_NE(bad.status().message().find("hybrid or allgather"), std::string::npos);
}

TEST(Validation, HeadsUlyssesCannotRouteNameTheHybridThatCan) {
  // cp 4: 6 query heads over 2 KV heads route over groups of 2, not 4 (nor KV heads 2 over 4
  // ranks' 6 query heads); the error names the hybrid degree that does, on every rank.
  auto with = [](int hq, int hkv, Strategy strategy, int degree) {
    return create_everywhere(4, [=](int) {
      PlanConfig c = good_config(4);
      c.attention.num_heads_q = hq;
      c.attention.num_heads_kv = hkv;
      c.parallel.strategy = strategy;
      c.parallel.ulysses_degree = degree;
      return c;
    });
  };
  expect_everywhere(with(6, 2, Strategy::kUlysses, 0), StatusCode::kInvalidArgument,
                    {"num_heads_q", "got 6", "divisible by cp 4", "allgather or ring",
                     "hybrid with ulysses_degree 2 (2-rank rings)"});
  // 12 query heads divide 4 ranks, but 3 KV heads neither divide nor are divided by 4; groups of
  // 2 split them unevenly (2 and 1).
  expect_everywhere(with(12, 3, Strategy::kUlysses, 0), StatusCode::kInvalidArgument,
                    {"num_heads_kv", "got 3", "over cp 4 ranks", "allgather or ring",
                     "hybrid with ulysses_degree 2"});
  // One KV head, 3 query heads: no group of 2 or 4 splits them, so no hybrid is named.
  expect_everywhere(with(3, 1, Strategy::kUlysses, 0), StatusCode::kInvalidArgument,
                    {"num_heads_q", "got 3", "divisible by cp 4", "allgather or ring"});
  const auto st = with(3, 1, Strategy::kUlysses, 0);
  EXPECT_EQ(st[0].message().find("hybrid with"), std::string::npos) << st[0].message();
  // A hybrid group of 4 that cannot route them points to the group of 2 that can.
  expect_everywhere(with(6, 2, Strategy::kHybrid, 4), StatusCode::kInvalidArgument,
                    {"divisible by ulysses_degree 4", "hybrid with ulysses_degree 2"});
}

TEST(Validation, AConfigBadOnOneRankOnlyFailsEverywhere) {
  // Rank 1 asks for a KV head count that cannot be routed; ranks 0 and 2 would be fine on their
  // own.
  const auto st = create_everywhere(3, [](int r) {
    PlanConfig c = good_config(3);
    c.attention.num_heads_q = 12;
    c.attention.num_heads_kv = r == 1 ? 2 : 3;
    c.seqlen = 24;
    return c;
  });
  for (const Status& s : st) EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(st[1].code(), StatusCode::kConfigMismatch);
}

// --- per-call view checks
// --------------------------------------------------------------------------

using Fixture = testing::CallFixture;

// Spoils rank 0's arguments with `mutate` and returns what rank 0's call reported. The check must
// happen before any data moves, so the peers do not take part in the rejected call:
//  - forward: only rank 0 calls it;
//  - backward: every rank runs a valid forward first, then only rank 0 calls backward.
enum class Call { kForward, kBackward };
Status call_with(PlanConfig cfg, Call call,
                 const std::function<void(ForwardArgs&, BackwardArgs&, Fixture&)>& mutate) {
  auto kernel = make_reference_attention();
  Status rank0;
  auto st = testing::run_ranks(
      cfg.parallel.cp,
      [&](int r, Communicator& comm) -> Status {
        Fixture fx(cfg);
        auto plan = DistributedAttention::create(cfg, comm, *kernel);
        if (!plan.is_ok()) return plan.status();
        std::vector<unsigned char> ws((*plan)->workspace_bytes()), saved((*plan)->saved_bytes());
        fx.cu = {0, static_cast<std::int32_t>(cfg.seqlen)};  // (layout thd only)
        ForwardArgs f = fx.forward_args(ws.data(), saved.data());
        BackwardArgs b = fx.backward_args(ws.data(), saved.data());
        if (call == Call::kBackward) {
          if (Status s = (*plan)->forward(f, nullptr); !s.is_ok()) return s;
        }
        if (r != 0) return Status::ok();
        mutate(f, b, fx);
        rank0 =
            call == Call::kForward ? (*plan)->forward(f, nullptr) : (*plan)->backward(b, nullptr);
        return Status::ok();
      },
      LoopbackOptions{std::chrono::milliseconds(5000)});
  EXPECT_ALL_OK(st);
  return rank0;
}

void expect_rejected(const Status& s, StatusCode code,
                     std::initializer_list<std::string_view> needles) {
  EXPECT_EQ(s.code(), code) << s.to_string();
  for (std::string_view n : needles) {
    EXPECT_NE(s.message().find(n), std::string::npos) << "'" << n << "' not in: " << s.message();
  }
}

TEST(CallValidation, ShapesOfQkvMustAgree) {
  Status r =
      call_with(good_config(), Call::kForward, [](ForwardArgs& f, BackwardArgs&, Fixture& fx) {
        fx.k = HostTensor(DType::kBFloat16, {2, 8, 2, 16});  // 2 KV heads, the plan says 4
        f.k = fx.k.view;
      });
  expect_rejected(r, StatusCode::kInvalidArgument,
                  {"forward", " k ", "[2, 8, 2, 16]", "[2, 8, 4, 16]"});
}

TEST(CallValidation, LseOnlyBackwardNeedsTheForwardsInputsAndOutput) {
  PlanConfig cfg = good_config();
  cfg.saved_activations = SavedActivations::kLseOnly;
  // q not given again.
  Status r = call_with(cfg, Call::kBackward, [](ForwardArgs& f, BackwardArgs& b, Fixture&) {
    b.k = f.k;
    b.v = f.v;
    b.o = f.o;
  });
  expect_rejected(r, StatusCode::kInvalidArgument,
                  {"backward", "q (saved_activations = lse)", "wrong shape"});
  // o given with the heads of k.
  r = call_with(cfg, Call::kBackward, [](ForwardArgs& f, BackwardArgs& b, Fixture&) {
    b.q = f.q;
    b.k = f.k;
    b.v = f.v;
    b.o = f.k;
  });
  expect_rejected(r, StatusCode::kInvalidArgument,
                  {"backward", "o (saved_activations = lse)", "[2, 8, 4, 16]", "[2, 8, 8, 16]"});
  // (All four given: the Ulysses tests run it.)
}

// head_dim_v != head_dim: V, O, dO and dV are head_dim_v wide, Q, K, dQ and dK head_dim wide.
TEST(CallValidation, ValueHeadDimIsChecked) {
  PlanConfig cfg = good_config();
  cfg.attention.head_dim_v = 8;
  // v as wide as q.
  Status r = call_with(cfg, Call::kForward, [](ForwardArgs& f, BackwardArgs&, Fixture& fx) {
    fx.v = HostTensor(DType::kBFloat16, {2, 8, 4, 16});
    f.v = fx.v.view;
  });
  expect_rejected(r, StatusCode::kInvalidArgument,
                  {"forward", " v ", "[2, 8, 4, 16]", "[2, 8, 4, 8]"});
  // o as wide as q.
  r = call_with(cfg, Call::kForward, [](ForwardArgs& f, BackwardArgs&, Fixture& fx) {
    fx.o = HostTensor(DType::kBFloat16, {2, 8, 8, 16});
    f.o = fx.o.view;
  });
  expect_rejected(r, StatusCode::kInvalidArgument, {"forward", " o ", "[2, 8, 8, 8]"});
  // dq as narrow as dO.
  r = call_with(cfg, Call::kBackward, [](ForwardArgs&, BackwardArgs& b, Fixture& fx) {
    fx.dq = HostTensor(DType::kBFloat16, {2, 8, 8, 8});
    b.dq = fx.dq.view;
  });
  expect_rejected(r, StatusCode::kInvalidArgument, {"backward", "dq", "[2, 8, 8, 16]"});
  // dv as wide as dk.
  r = call_with(cfg, Call::kBackward, [](ForwardArgs&, BackwardArgs& b, Fixture& fx) {
    fx.dv = HostTensor(DType::kBFloat16, {2, 8, 4, 16});
    b.dv = fx.dv.view;
  });
  expect_rejected(r, StatusCode::kInvalidArgument, {"backward", "dv", "[2, 8, 4, 8]"});
  // (The right widths: the Ulysses tests run them.)
}

TEST(CallValidation, DtypesMustAgree) {
  Status r =
      call_with(good_config(), Call::kForward, [](ForwardArgs& f, BackwardArgs&, Fixture& fx) {
        fx.v = HostTensor(DType::kFloat32, {2, 8, 4, 16});
        f.v = fx.v.view;
      });
  expect_rejected(r, StatusCode::kInvalidArgument, {" v ", "dtype", "got fp32", "bf16"});
}

TEST(CallValidation, HeadDimMustBeContiguous) {
  Status r = call_with(good_config(), Call::kForward,
                       [](ForwardArgs& f, BackwardArgs&, Fixture&) { f.q.strides[3] = 2; });
  expect_rejected(r, StatusCode::kInvalidArgument, {"q.strides[3]", "got 2"});
}

TEST(CallValidation, NegativeStridesAreRejected) {
  Status r = call_with(good_config(), Call::kForward,
                       [](ForwardArgs& f, BackwardArgs&, Fixture&) { f.o.strides[1] = -64; });
  expect_rejected(r, StatusCode::kInvalidArgument, {"o.strides[1]", "negative"});
}

TEST(CallValidation, ShapeAndStridesOfDifferentRank) {
  Status r =
      call_with(good_config(), Call::kForward, [](ForwardArgs& f, BackwardArgs&, Fixture& fx) {
        f.q = TensorView::strided(fx.q.view.data, DType::kBFloat16, {2, 8, 8, 16}, {1024, 128, 16});
      });
  expect_rejected(r, StatusCode::kInvalidArgument, {" q ", "shape"});
}

TEST(CallValidation, SequenceMajorTensorsPassedAsIsAreToldHowToGoIn) {
  // One rank: q is [batch 2, seq 16, heads 8, dim 16]. Given [seq, batch, heads, dim] memory with
  // that shape instead of as a transposed view, the refusal says how it goes in.
  Status r =
      call_with(good_config(1), Call::kForward, [](ForwardArgs& f, BackwardArgs&, Fixture& fx) {
        f.q = TensorView::contiguous(fx.q.view.data, DType::kBFloat16, {16, 2, 8, 16});
      });
  expect_rejected(r, StatusCode::kInvalidArgument,
                  {" q ", "first two dimensions swapped", "transpose(0, 1)", "[2, 16, 8, 16]"});
  // The same memory as a [batch, seq, heads, dim] view with the sequence stride outermost runs.
  Status ok =
      call_with(good_config(1), Call::kForward, [](ForwardArgs& f, BackwardArgs&, Fixture& fx) {
        f.q = TensorView::strided(fx.q.view.data, DType::kBFloat16, {2, 16, 8, 16},
                                  {128, 256, 16, 1});
      });
  EXPECT_TRUE(ok.is_ok()) << ok.to_string();
  // Another wrong shape keeps the plain message.
  Status k =
      call_with(good_config(1), Call::kForward, [](ForwardArgs& f, BackwardArgs&, Fixture& fx) {
        f.k = TensorView::contiguous(fx.k.view.data, DType::kBFloat16, {16, 2, 2, 16});
      });
  expect_rejected(k, StatusCode::kInvalidArgument,
                  {" k ", "has the wrong shape", "[2, 16, 4, 16]"});
}

TEST(CallValidation, LseShapeMustMatch) {
  Status r =
      call_with(good_config(), Call::kForward, [](ForwardArgs& f, BackwardArgs&, Fixture& fx) {
        fx.lse = HostTensor(DType::kFloat32, {2, 8, 16});
        f.lse = fx.lse.view;
      });
  expect_rejected(r, StatusCode::kInvalidArgument, {"lse", "[2, 8, 8]"});
}

TEST(CallValidation, MissingWorkspaceAndSaved) {
  Status fwd = call_with(good_config(), Call::kForward,
                         [](ForwardArgs& f, BackwardArgs&, Fixture&) { f.workspace = nullptr; });
  expect_rejected(fwd, StatusCode::kInvalidArgument, {"workspace", "workspace_bytes()"});
  Status fwd_saved = call_with(good_config(), Call::kForward,
                               [](ForwardArgs& f, BackwardArgs&, Fixture&) { f.saved = nullptr; });
  expect_rejected(fwd_saved, StatusCode::kInvalidArgument, {"saved", "saved_bytes()"});
  Status bwd = call_with(good_config(), Call::kBackward,
                         [](ForwardArgs&, BackwardArgs& b, Fixture&) { b.saved = nullptr; });
  expect_rejected(bwd, StatusCode::kInvalidArgument, {"saved", "matching forward()"});
}

TEST(CallValidation, SinksMissingOrUnexpected) {
  PlanConfig c = good_config();
  c.attention.sinks = true;
  Status missing = call_with(
      c, Call::kForward, [](ForwardArgs& f, BackwardArgs&, Fixture&) { f.sinks = TensorView{}; });
  expect_rejected(missing, StatusCode::kInvalidArgument, {"sinks", "shape"});
  Status missing_grad = call_with(
      c, Call::kBackward, [](ForwardArgs&, BackwardArgs& b, Fixture&) { b.dsinks = TensorView{}; });
  expect_rejected(missing_grad, StatusCode::kInvalidArgument, {"dsinks"});
  Status unexpected =
      call_with(good_config(), Call::kForward,
                [](ForwardArgs& f, BackwardArgs&, Fixture& fx) { f.sinks = fx.sinks.view; });
  expect_rejected(unexpected, StatusCode::kInvalidArgument, {"sinks", "attention.sinks is false"});
}

PlanConfig thd_config() {
  PlanConfig c = good_config();
  c.layout = Layout::kTHD;
  c.batch = 1;
  c.seqlen = 16;
  return c;
}

TEST(CallValidation, CuSeqlensMustStartAtZero) {
  Status r =
      call_with(thd_config(), Call::kForward, [](ForwardArgs& f, BackwardArgs&, Fixture& fx) {
        fx.cu = {1, 5, 16};
        f.cu_seqlens = fx.cu;
      });
  expect_rejected(r, StatusCode::kInvalidArgument, {"cu_seqlens[0]", "got 1"});
}

TEST(CallValidation, CuSeqlensMustNotDecrease) {
  Status r =
      call_with(thd_config(), Call::kForward, [](ForwardArgs& f, BackwardArgs&, Fixture& fx) {
        fx.cu = {0, 9, 4, 16};
        f.cu_seqlens = fx.cu;
      });
  expect_rejected(r, StatusCode::kInvalidArgument, {"cu_seqlens[2]", "decreases", "got 4"});
}

TEST(CallValidation, CuSeqlensMustFitTheTokens) {
  Status r =
      call_with(thd_config(), Call::kForward, [](ForwardArgs& f, BackwardArgs&, Fixture& fx) {
        fx.cu = {0, 9, 17};
        f.cu_seqlens = fx.cu;
      });
  expect_rejected(r, StatusCode::kInvalidArgument, {"cu_seqlens[2]", "got 17", "<= 16"});
}

TEST(CallValidation, CuSeqlensOnlyForThd) {
  Status r =
      call_with(good_config(), Call::kForward, [](ForwardArgs& f, BackwardArgs&, Fixture& fx) {
        fx.cu = {0, 16};
        f.cu_seqlens = fx.cu;
      });
  expect_rejected(r, StatusCode::kInvalidArgument, {"cu_seqlens", "bshd"});
}

TEST(CallValidation, BackwardNeedsTrainingPlan) {
  PlanConfig c = good_config();
  c.training = false;
  Status r = call_with(c, Call::kBackward, [](ForwardArgs&, BackwardArgs&, Fixture&) {});
  expect_rejected(r, StatusCode::kInvalidArgument, {"training"});
}

TEST(CallValidation, GradientShapesChecked) {
  Status r =
      call_with(good_config(), Call::kBackward, [](ForwardArgs&, BackwardArgs& b, Fixture& fx) {
        fx.dk = HostTensor(DType::kBFloat16, {2, 8, 8, 16});
        b.dk = fx.dk.view;
      });
  expect_rejected(r, StatusCode::kInvalidArgument, {"dk", "[2, 8, 4, 16]"});
}

}  // namespace
}  // namespace ulysses
