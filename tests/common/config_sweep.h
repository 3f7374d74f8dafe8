// Random plan configurations for the sweep tests (tests/unit/test_sweep.cc on the host reference,
// tests/gpu/test_gpu_sweep.cc on cuDNN): every strategy, rank count, head grouping, mask, packed
// batch, saved-activation mode, chunking and payload drawn together, so that combinations no
// hand-written case names are computed too. A draw is a plain value made from one 64-bit seed,
// printed with every check, so a failure replays exactly (ULYSSES_SWEEP_SEED).
//
// Draws are not filtered by the library's rules: the test asks the library whether it takes each
// one (DistributedAttention::check_support) and requires a clear refusal where it does not.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ulysses/ulysses.h"

namespace ulysses::testing {

/// What the sweep may draw from. The host and the GPU sweeps differ in dtypes, head_dims and sizes.
struct SweepSpace {
  std::vector<int> cps;
  std::vector<DType> dtypes;
  std::vector<int> head_dims;
  std::vector<int> kv_heads;     // num_heads_kv
  std::vector<int> group_sizes;  // num_heads_q / num_heads_kv
  std::int64_t max_tokens =
      48;                     // S (bshd): a multiple of the strategy's sequence multiple, <= this
  std::int32_t max_doc = 24;  // longest packed document
  int max_docs = 4;
  bool deterministic = false;  // the GPU sweep may ask cuDNN for its deterministic backward
};

/// One drawn configuration (field names as in PlanConfig; lens: packed documents' real lengths).
struct SweepCase {
  std::uint64_t seed = 0;
  Strategy strategy = Strategy::kUlysses;
  int P = 1;
  int U = 0;  // hybrid: ulysses_degree
  Layout layout = Layout::kBSHD;
  std::int64_t B = 1, S = 0;
  int Hq = 1, Hkv = 1, D = 8;
  DType dtype = DType::kFloat32;
  bool causal = false;
  int wl = -1, wr = -1;
  bool sinks = false;
  std::vector<std::int32_t> cu;  // kTHD: cu_seqlens (offsets for ulysses/allgather, or real
                                 // lengths' prefix sums under ring/hybrid), else empty
  bool training = true;
  int chunks = 1;
  int in_flight = 2;
  bool keep_saved = false;
  SavedActivations saved = SavedActivations::kHeadSharded;
  Payload payload = Payload::kNative;
  bool deterministic = false;
  PackedSharding sharding = PackedSharding::kDefault;
  int Dv = 0;  // head_dim_v (0: D)

  ParallelConfig parallel() const {
    return {.strategy = strategy,
            .cp = P,
            .ulysses_degree = strategy == Strategy::kHybrid ? U : 0,
            .packed_sharding = sharding};
  }
  AttentionConfig attention() const {
    return {.num_heads_q = Hq,
            .num_heads_kv = Hkv,
            .head_dim = D,
            .head_dim_v = Dv,
            .causal = causal,
            .window_left = wl,
            .window_right = wr,
            .sinks = sinks};
  }
  PlanConfig plan() const {
    return {.attention = attention(),
            .parallel = parallel(),
            .layout = layout,
            .dtype = dtype,
            .batch = layout == Layout::kTHD ? 1 : B,
            .seqlen = S,
            .training = training,
            .overlap_chunks = chunks,
            .backward_keeps_saved = keep_saved,
            .saved_activations = saved,
            .chunks_in_flight = in_flight,
            .payload = payload};
  }

  /// One line that says everything drawn (and how to replay it).
  std::string describe() const {
    std::ostringstream os;
    os << strategy_name(strategy) << " cp=" << P;
    if (strategy == Strategy::kHybrid) os << " U=" << U;
    os << " " << (layout == Layout::kTHD ? "thd" : "bshd")
       << (sharding == PackedSharding::kStream ? " sharding=stream" : "") << " B=" << B
       << " S=" << S << " Hq=" << Hq << " Hkv=" << Hkv << " D=" << D
       << (Dv > 0 ? " Dv=" + std::to_string(Dv) : std::string()) << " " << dtype_name(dtype)
       << (causal ? " causal" : "") << " window=(" << wl << "," << wr << ")"
       << (sinks ? " sinks" : "");
    // Ulysses' (a hybrid's groups') ranks owning different head counts (head_routing.h).
    const int group = strategy == Strategy::kUlysses ? P : strategy == Strategy::kHybrid ? U : 1;
    if (group > 1 && group < Hkv && Hkv % group != 0) os << " heads=uneven";
    if (!cu.empty()) {
      os << " cu_seqlens={";
      for (std::size_t i = 0; i < cu.size(); ++i) os << (i ? "," : "") << cu[i];
      os << "}";
    }
    os << (training ? " training" : " inference") << " chunks=" << chunks
       << " in_flight=" << in_flight << (keep_saved ? " keep_saved" : "")
       << (saved == SavedActivations::kLseOnly ? " saved=lse" : "")
       << (payload == Payload::kFp8 ? " payload=fp8" : "")
       << (deterministic ? " deterministic" : "") << "  [ULYSSES_SWEEP_SEED=" << seed << "]";
    return os.str();
  }
};

/// A draw from `space`, made from `seed` alone.
inline SweepCase draw_case(std::uint64_t seed, const SweepSpace& space) {
  std::mt19937_64 rng(seed);
  auto pick = [&](const auto& options) {
    return options[std::uniform_int_distribution<std::size_t>(0, options.size() - 1)(rng)];
  };
  auto uniform = [&](std::int64_t lo, std::int64_t hi) {  // [lo, hi]
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };
  auto chance = [&](double p) { return std::bernoulli_distribution(p)(rng); };

  SweepCase c;
  c.seed = seed;
  c.strategy = pick(std::vector<Strategy>{Strategy::kUlysses, Strategy::kRing, Strategy::kHybrid,
                                          Strategy::kAllGather});
  c.P = pick(space.cps);
  if (c.strategy == Strategy::kHybrid) {
    std::vector<int> divisors;
    for (int u = 1; u <= c.P; ++u) {
      if (c.P % u == 0) divisors.push_back(u);
    }
    c.U = pick(divisors);
  }
  c.Hkv = pick(space.kv_heads);
  c.Hq = c.Hkv * pick(space.group_sizes);
  c.D = pick(space.head_dims);
  c.dtype = pick(space.dtypes);
  c.causal = chance(0.6);
  c.sinks = chance(0.3);
  c.training = chance(0.85);
  const int multiple = c.parallel().sequence_multiple();
  if (chance(0.35)) {  // packed documents, some empty, padding between (ring) and after them
    c.layout = Layout::kTHD;
    const int docs = static_cast<int>(uniform(1, space.max_docs));
    c.cu = {0};
    for (int d = 0; d < docs; ++d) {
      const std::int32_t len =
          chance(0.1) ? 0 : static_cast<std::int32_t>(uniform(1, space.max_doc));
      c.cu.push_back(c.cu.back() + len);
    }
    auto offsets = packed_sequence_offsets(c.parallel(), c.cu);
    const std::int64_t used = offsets.is_ok() ? offsets->back() : c.cu.back();
    const std::int64_t tail = chance(0.5) ? uniform(0, multiple) : 0;
    c.S = std::max<std::int64_t>(1, (used + tail + multiple - 1) / multiple) * multiple;
  } else {
    c.B = uniform(1, 2);
    c.S = multiple * uniform(1, std::max<std::int64_t>(1, space.max_tokens / multiple));
  }
  if (chance(0.35)) {  // a window in global positions (or inside each packed document)
    c.wl = static_cast<int>(uniform(0, std::max<std::int64_t>(1, c.S / 2)));
    if (!c.causal && chance(0.5)) c.wr = static_cast<int>(uniform(0, c.S / 3));
    if (c.causal && chance(0.3)) c.wr = 0;
  }
  if (c.training && chance(0.35)) c.saved = SavedActivations::kLseOnly;
  if (c.training && chance(0.2)) c.keep_saved = true;
  if (c.strategy == Strategy::kUlysses && chance(0.4)) c.chunks = static_cast<int>(uniform(2, 4));
  c.in_flight = chance(0.5) ? 1 : 2;
  if (chance(0.2)) c.payload = Payload::kFp8;
  c.deterministic = space.deterministic && chance(0.3);
  // Drawn last, so that the other fields of a seed stay what they were before it existed (S was
  // sized for per-sequence padding: the stream needs no more).
  const bool zigzag_ring = c.strategy == Strategy::kRing || c.strategy == Strategy::kHybrid;
  if (c.layout == Layout::kTHD && zigzag_ring && chance(0.5)) c.sharding = PackedSharding::kStream;
  // V and O of another head_dim (MLA): every strategy takes it, FP8 payloads as rows of
  // gcd(head_dim, head_dim_v) values.
  if (chance(0.15)) {
    const int dv = pick(space.head_dims);
    if (dv != c.D) c.Dv = dv;
  }
  return c;
}

/// `message` with every run of digits as N (a refusal's rule, whatever values it names).
inline std::string without_numbers(const std::string& message) {
  std::string out;
  for (char ch : message) {
    const bool digit = ch >= '0' && ch <= '9';
    if (!digit) out += ch;
    if (digit && (out.empty() || out.back() != 'N')) out += 'N';
  }
  return out;
}

/// Whether the library takes `c` with `kernel` on `comms` (rank r's communicator at r; a rank's
/// kernel calls may differ from another's). A refusal must be InvalidArgument or Unsupported with
/// a message, and create() must return it on every rank that refuses and ConfigMismatch naming a
/// refusing rank on the others, none left waiting; `refusals` counts it by rule (the message's
/// start, numbers as N).
inline bool plan_takes(const SweepCase& c, std::vector<std::unique_ptr<Communicator>>& comms,
                       LocalAttention& kernel, std::map<std::string, int>& refusals,
                       Status* refusal = nullptr) {
  std::vector<Status> own;
  Status s = Status::ok();
  for (auto& comm : comms) {
    own.push_back(DistributedAttention::check_support(c.plan(), *comm, kernel));
    if (s.is_ok() && !own.back().is_ok()) s = own.back();
  }
  if (s.is_ok()) return true;
  if (refusal != nullptr) *refusal = s;
  EXPECT_TRUE(s.code() == StatusCode::kInvalidArgument || s.code() == StatusCode::kUnsupported)
      << s.to_string();
  EXPECT_FALSE(s.message().empty());
  std::vector<Status> st(comms.size());
  std::vector<std::thread> threads;
  for (std::size_t r = 0; r < comms.size(); ++r) {
    threads.emplace_back([&, r] {
      auto plan = DistributedAttention::create(c.plan(), *comms[r], kernel);
      st[r] = plan.is_ok() ? internal_error("create() took what check_support() refused")
                           : plan.status();
    });
  }
  for (auto& t : threads) t.join();
  for (std::size_t r = 0; r < st.size(); ++r) {
    if (!own[r].is_ok()) {
      EXPECT_EQ(st[r].code(), own[r].code()) << st[r].to_string();
      EXPECT_EQ(st[r].message(), own[r].message());
    } else {
      EXPECT_EQ(st[r].code(), StatusCode::kConfigMismatch) << st[r].to_string();
      EXPECT_NE(st[r].message().find("rejected"), std::string::npos) << st[r].message();
    }
  }
  ++refusals[without_numbers(s.message()).substr(0, 64)];
  return false;
}

/// Whether the kernel's refusal of `c` is one no plan can avoid, so that a GPU sweep may meet it:
/// cuDNN's packed backward with head_dim_v != head_dim and head_dim past 192.
/// (Every other kernel refusal means a plan asked its kernel for a call it could have shaped
/// otherwise.)
inline bool kernel_refusal_expected(const SweepCase& c, const Status& refused) {
  return c.Dv > 0 && c.layout == Layout::kTHD && c.training &&
         refused.message().find("past 192 and head_dim_v") != std::string::npos;
}

/// What a sweep ran and what the library refused, for the log.
inline void print_sweep(const std::map<Strategy, int>& ran, int draws,
                        const std::map<std::string, int>& refusals) {
  int runs = 0;
  for (auto [s, n] : ran) runs += n;
  std::printf("sweep: %d configurations run (%d drawn):", runs, draws);
  for (auto [s, n] : ran) std::printf(" %s %d", std::string(strategy_name(s)).c_str(), n);
  std::printf("\nrefused by rule:\n");
  for (const auto& [rule, n] : refusals) std::printf("  %4d  %s\n", n, rule.c_str());
}

/// ULYSSES_SWEEP_MATCH="w1 w2 !w3": a sweep runs only draws whose describe() holds every word and
/// none of the !words (e.g. "ring thd !window=(-1,-1)": ring plans on packed documents under a
/// window; "heads=uneven": Ulysses and hybrid plans whose ranks own different head counts); unset,
/// every draw. `draw(seed)` makes a case; one that does not match is replaced by
/// the next draw of its own chain (so a printed seed replays as it is).
template <class Draw>
SweepCase wanted_draw(std::uint64_t seed, Draw draw) {
  std::vector<std::string> words;
  if (const char* m = std::getenv("ULYSSES_SWEEP_MATCH"); m != nullptr) {
    std::istringstream in(m);
    for (std::string w; in >> w;) words.push_back(w);
  }
  auto wanted = [&](const SweepCase& c) {
    const std::string text = c.describe();
    for (const std::string& w : words) {
      const bool negated = w.size() > 1 && w[0] == '!';
      const bool found = text.find(negated ? w.substr(1) : w) != std::string::npos;
      if (found == negated) return false;
    }
    return true;
  };
  SweepCase c = draw(seed);
  for (int tries = 0; !wanted(c); ++tries) {
    if (tries == 1000000) {
      ADD_FAILURE() << "ULYSSES_SWEEP_MATCH: no draw in 10^6 matches";
      break;
    }
    c = draw(std::mt19937_64(c.seed)());
  }
  return c;
}

/// How many configurations a sweep runs, and from which seeds: ULYSSES_SWEEP_SEED=<n> replays the
/// one draw printed with a failure; ULYSSES_SWEEP_CASES=<n> runs n fresh draws instead of
/// `default_cases`.
struct SweepSeeds {
  std::vector<std::uint64_t> seeds;
  bool replay = false;
};
inline SweepSeeds sweep_seeds(int default_cases, std::uint64_t fresh) {
  SweepSeeds out;
  if (const char* one = std::getenv("ULYSSES_SWEEP_SEED"); one != nullptr && *one != '\0') {
    out.seeds.push_back(std::strtoull(one, nullptr, 10));
    out.replay = true;
    return out;
  }
  int n = default_cases;
  if (const char* many = std::getenv("ULYSSES_SWEEP_CASES"); many != nullptr && *many != '\0') {
    n = std::max(1, std::atoi(many));
  }
  std::mt19937_64 rng(fresh);
  for (int i = 0; i < n; ++i) out.seeds.push_back(rng());
  return out;
}

}  // namespace ulysses::testing
