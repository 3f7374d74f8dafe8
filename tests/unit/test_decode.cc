// DistributedDecode on the loopback communicator with the FP64 reference kernel, against one
// reference call over the whole cache.
//
// Each case cuts the sequence's positions into runs, deals them to random ranks, and stores each
// rank's runs in shuffled order at random rows of its cache; every other cache row is NaN, and so
// is every key no query token may see (outside every window), so a piece that reads a row it
// should not turns the output NaN. Several decode steps run on one plan, the cache growing by the
// new tokens each step. The kernel's LSE is fp32, so the merges weigh the pieces with fp32
// log-sum-exps: results are held to 1e-5 of the FP64 truth (O values are O(1)), and every rank's O
// and LSE to the same bits.
//
// Cases with split_kernel = built_in run the split-KV kernel's host implementation; paged cases
// move each rank's cache into a pool of pages in shuffled order (NaN spare pages; table entries of
// pages holding no segment row are -1) and must give the bits of the same cache unpaged.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <limits>
#include <numeric>

#include "common/check.h"
#include "common/paged_cache.h"
#include "common/test_util.h"
#include "kernels/split_kv.h"
#include "kernels/split_kv_layout.h"
#include "ulysses/decode.h"
#include "ulysses/reference.h"

namespace ulysses {
namespace {

using testing::HostTensor;

struct Case {
  std::string name;
  int P;
  std::int64_t B, T;  // sequences, query tokens per step
  int Hq, Hkv, D;
  bool causal = false;
  int wl = -1, wr = -1;
  bool sinks = false;
  std::int64_t prefill = 40;  // positions in the cache before the first step
  int steps = 3;
  std::int64_t min_split_rows = 4;
  int max_splits = 5;
  int max_run = 12;     // longest run of positions dealt to one rank
  int empty_rank = -1;  // this rank holds nothing
  int Dv = 0;           // head_dim_v (0: D)
  DecodeKernel kernel = DecodeKernel::kAuto;
  int page = 0;  // page_size: 0 unpaged
  int dv() const { return Dv > 0 ? Dv : D; }
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

// Position runs [begin, end) and the rank holding each.
struct PositionRun {
  std::int64_t begin, end;
  int rank;
};

// Deals positions [from, to) to ranks in runs of 1..max_run.
void deal(const Case& c, std::int64_t from, std::int64_t to, std::mt19937_64& rng,
          std::vector<PositionRun>& runs) {
  std::uniform_int_distribution<int> len(1, c.max_run), who(0, c.P - 1);
  for (std::int64_t p = from; p < to;) {
    const std::int64_t e = std::min<std::int64_t>(to, p + len(rng));
    int r = who(rng);
    if (r == c.empty_rank) r = (r + 1) % c.P;
    runs.push_back({p, e, r});
    p = e;
  }
}

struct RankCache {
  HostTensor k, v;
  std::vector<CacheSegment> segments;
};

// Each rank's cache: its runs in shuffled order at random rows, NaN elsewhere and on keys no
// query of the step at p0 may see.
std::vector<RankCache> build_caches(const Case& c, const std::vector<PositionRun>& runs,
                                    const HostTensor& k, const HostTensor& v, std::int64_t cap,
                                    std::int64_t p0, std::mt19937_64& rng) {
  std::vector<RankCache> out(static_cast<std::size_t>(c.P));
  for (int r = 0; r < c.P; ++r) {
    RankCache& rc = out[static_cast<std::size_t>(r)];
    rc.k = HostTensor(DType::kFloat64, {c.B, cap, c.Hkv, c.D});
    rc.v = HostTensor(DType::kFloat64, {c.B, cap, c.Hkv, c.dv()});
    testing::poison(rc.k);
    testing::poison(rc.v);
    std::vector<PositionRun> mine;
    for (const PositionRun& run : runs)
      if (run.rank == r) mine.push_back(run);
    std::shuffle(mine.begin(), mine.end(), rng);
    std::int64_t used = 0;
    for (const PositionRun& run : mine) used += run.end - run.begin;
    std::int64_t slack = cap - used, row = 0;
    for (const PositionRun& run : mine) {
      const std::int64_t gap =
          std::uniform_int_distribution<std::int64_t>(0, std::min<std::int64_t>(slack, 3))(rng);
      slack -= gap;
      row += gap;
      rc.segments.push_back({row, run.end - run.begin, run.begin});
      for (std::int64_t pos = run.begin; pos < run.end; ++pos, ++row) {
        // Keys before the window of query token 0 are never visible: leave them NaN.
        const bool visible = c.wl < 0 || pos >= p0 - c.wl;
        for (std::int64_t b = 0; b < c.B; ++b)
          for (int h = 0; h < c.Hkv; ++h) {
            for (int d = 0; d < c.D; ++d) {
              rc.k.set(rc.k.view.offset({b, row, h, d}),
                       visible ? k.at(k.view.offset({b, pos, h, d})) : std::nan(""));
            }
            for (int d = 0; d < c.dv(); ++d) {
              rc.v.set(rc.v.view.offset({b, row, h, d}),
                       visible ? v.at(v.view.offset({b, pos, h, d})) : std::nan(""));
            }
          }
      }
    }
  }
  return out;
}

// The reference kernel, refusing a call in which a query row sees no key of its sequence (device
// kernels such as cuDNN are not asked about empty softmax rows; the plan must not create them).
class NoEmptyRows final : public LocalAttention {
 public:
  std::string_view name() const override { return "reference without empty rows"; }
  Device device() const override { return Device::host(); }
  bool provides_lse() const override { return true; }
  bool supports_backward() const override { return false; }
  Status check_support(const LocalProblem& p) const override { return inner_->check_support(p); }
  Status forward(const LocalProblem& p, const LocalForwardArgs& a, Stream stream) override {
    const AttentionConfig& c = p.config;
    for (int s = 0; s < a.rows.num_seqs(); ++s) {
      const auto su = static_cast<std::size_t>(s);
      for (std::int64_t i = 0; i < a.rows.q_len[su]; ++i) {
        const std::int64_t pos = i + p.diagonal_offset;  // key rows of the sequence from 0
        std::int64_t lo = 0, hi = a.rows.kv_len[su] - 1;
        if (c.window_left >= 0) lo = std::max(lo, pos - c.window_left);
        if (c.causal) hi = std::min(hi, pos);
        if (c.window_right >= 0) hi = std::min(hi, pos + c.window_right);
        if (lo > hi) {
          return internal_error(detail::str_cat("query row ", i, " of sequence ", s,
                                                " sees no key (diagonal offset ", p.diagonal_offset,
                                                ", ", a.rows.kv_len[su], " keys)"));
        }
      }
    }
    return inner_->forward(p, a, stream);
  }
  Status backward(const LocalProblem&, const LocalBackwardArgs&, Stream) override {
    return unsupported("forward only");
  }

 private:
  std::unique_ptr<LocalAttention> inner_ = make_reference_attention();
};

// Several steps of case c on one plan (inputs, dealing and cache rows from rng), every rank's O
// and LSE against one reference call per step.
void check_decode(const Case& c, std::mt19937_64& rng) {
  const std::int64_t total = c.prefill + c.steps * c.T;
  HostTensor k(DType::kFloat64, {c.B, total, c.Hkv, c.D}),
      v(DType::kFloat64, {c.B, total, c.Hkv, c.dv()});
  testing::fill_uniform(k, rng, -1.0, 1.0);
  testing::fill_uniform(v, rng, -1.0, 1.0);
  HostTensor sinks(DType::kFloat32, {c.Hq});
  testing::fill_uniform(sinks, rng, -1.0, 2.0);
  std::vector<PositionRun> runs;
  deal(c, 0, c.prefill, rng, runs);

  // Every step's runs, dealt up front so that the plan's max_segments covers the last step.
  std::vector<std::vector<PositionRun>> step_runs;
  for (int s = 0; s < c.steps; ++s) {
    deal(c, c.prefill + s * c.T, c.prefill + (s + 1) * c.T, rng, runs);
    step_runs.push_back(runs);
  }
  std::vector<int> per_rank(static_cast<std::size_t>(c.P), 0);
  for (const PositionRun& r : runs) ++per_rank[static_cast<std::size_t>(r.rank)];
  const int max_segments = std::max(1, *std::max_element(per_rank.begin(), per_rank.end()));
  std::int64_t cap = total + 3 * max_segments;  // room for the gaps
  if (c.page > 0) cap = (cap + c.page - 1) / c.page * c.page;

  // Each step's inputs and truth: one reference call, the new tokens against every key up to the
  // last of them.
  struct Step {
    std::int64_t p0;
    HostTensor q, o_ref, lse_ref;
    std::vector<RankCache> caches;
  };
  std::vector<Step> steps;
  for (int s = 0; s < c.steps; ++s) {
    Step st{.p0 = c.prefill + s * c.T,
            .q = HostTensor(DType::kFloat64, {c.B, c.T, c.Hq, c.D}),
            .o_ref = HostTensor(DType::kFloat64, {c.B, c.T, c.Hq, c.dv()}),
            .lse_ref = HostTensor(DType::kFloat32, {c.B, c.Hq, c.T})};
    testing::fill_uniform(st.q, rng, -1.0, 1.0);
    LocalProblem p = LocalProblem::unsharded(attention(c), DType::kFloat64, c.B, c.T);
    p.seqlen_kv = st.p0 + c.T;
    p.diagonal_offset = st.p0;
    TensorView kk = k.view, vv = v.view;
    kk.shape[1] = vv.shape[1] = p.seqlen_kv;
    LocalForwardArgs f{
        .q = st.q.view, .k = kk, .v = vv, .o = st.o_ref.view, .lse = st.lse_ref.view};
    if (c.sinks) f.sinks = sinks.view;
    ASSERT_TRUE(reference_forward(p, f).is_ok());
    st.caches = build_caches(c, step_runs[static_cast<std::size_t>(s)], k, v, cap, st.p0, rng);
    steps.push_back(std::move(st));
  }

  DecodeConfig cfg{.attention = attention(c),
                   .cp = c.P,
                   .dtype = DType::kFloat64,
                   .batch = c.B,
                   .query_tokens = c.T,
                   .cache_rows = cap,
                   .max_segments = max_segments,
                   .min_split_rows = c.min_split_rows,
                   .max_splits = c.max_splits,
                   .split_kernel = c.kernel};
  // paged[step][rank]: the caches in pages.
  std::vector<std::vector<testing::PagedCache>> paged(steps.size());
  for (std::size_t s = 0; c.page > 0 && s < steps.size(); ++s) {
    for (const RankCache& rc : steps[s].caches) {
      // A page holds keys where a segment's rows reach into it.
      auto holds = [&](std::int64_t, std::int64_t p) {
        return std::any_of(rc.segments.begin(), rc.segments.end(), [&](const CacheSegment& sg) {
          return sg.rows > 0 && sg.row < (p + 1) * c.page && sg.row + sg.rows > p * c.page;
        });
      };
      paged[s].push_back(testing::page_out(rc.k, rc.v, c.page, holds, rng));
    }
  }
  auto kernel = std::make_unique<NoEmptyRows>();
  // Every step on one plan per rank; outs[step][rank]: O and LSE, poisoned before the call.
  using Outs = std::vector<std::vector<std::pair<HostTensor, HostTensor>>>;
  // config.device_layout: the layout goes in per-rank arrays at fixed addresses ("device" memory of
  // the host ranks), rewritten before each step as a serving engine does between graph replays,
  // with every unused entry holding garbage rows = 0; the workspace starts as 0xff bytes (NaN,
  // table entries -1), so a slot the plan leaves unwritten shows.
  auto run = [&](const DecodeConfig& config, Outs& outs) {
    outs.assign(steps.size(), {});
    for (auto& per_step : outs) {
      for (int r = 0; r < c.P; ++r) {
        per_step.emplace_back(HostTensor(DType::kFloat64, {c.B, c.T, c.Hq, c.dv()}),
                              HostTensor(DType::kFloat32, {c.B, c.Hq, c.T}));
        testing::poison(per_step.back().first);
        testing::poison(per_step.back().second);
      }
    }
    EXPECT_ALL_OK(testing::run_ranks(c.P, [&](int r, Communicator& comm) -> Status {
      auto plan = DistributedDecode::create(config, comm, *kernel);
      if (!plan.is_ok()) return plan.status();
      const bool device = config.device_layout;
      std::vector<unsigned char> ws((*plan)->workspace_bytes(), device ? 0xff : 0);
      const auto S = static_cast<std::size_t>(config.max_segments);
      std::vector<std::int64_t> seg_dev(static_cast<std::size_t>(c.B) * S * 3),
          pos_dev(static_cast<std::size_t>(c.B));
      std::vector<std::int32_t> pages_dev;
      for (std::size_t s = 0; s < steps.size(); ++s) {
        const auto ru = static_cast<std::size_t>(r);
        const RankCache& rc = steps[s].caches[ru];
        auto& [o, lse] = outs[s][ru];
        DecodeArgs a{.q = steps[s].q.view,
                     .k_cache = rc.k.view,
                     .v_cache = rc.v.view,
                     .segments = rc.segments,
                     .query_position = steps[s].p0,
                     .o = o.view,
                     .lse = lse.view,
                     .workspace = ws.data()};
        if (config.page_size > 0) {
          a.k_cache = paged[s][ru].k.view;
          a.v_cache = paged[s][ru].v.view;
          a.page_table = paged[s][ru].table;
        }
        if (c.sinks) a.sinks = sinks.view;
        if (device) {
          for (std::size_t b = 0; b < static_cast<std::size_t>(c.B); ++b) {
            pos_dev[b] = steps[s].p0;
            for (std::size_t i = 0; i < S; ++i) {
              std::int64_t* e = &seg_dev[(b * S + i) * 3];
              const bool used = i < rc.segments.size();
              e[0] = used ? rc.segments[i].row : 1000 + static_cast<std::int64_t>(i);
              e[1] = used ? rc.segments[i].rows : 0;
              e[2] = used ? rc.segments[i].position : -7;
            }
          }
          a.segments = {};
          a.query_position = 0;
          a.segments_device = seg_dev.data();
          a.query_positions_device = pos_dev.data();
          if (config.page_size > 0) {
            pages_dev.assign(paged[s][ru].table.begin(), paged[s][ru].table.end());
            a.page_table = {};
            a.page_table_device = pages_dev.data();
          }
          ULYSSES_RETURN_IF_ERROR((*plan)->check_device_layout(a, nullptr));
        }
        ULYSSES_RETURN_IF_ERROR((*plan)->forward(a, nullptr));
      }
      return Status::ok();
    }));
  };
  Outs outs;
  if (c.page > 0) {
    // The same steps unpaged in the same kernel: the pages change only where rows are read from.
    cfg.split_kernel = DecodeKernel::kBuiltIn;
    Outs flat;
    run(cfg, flat);
    cfg.split_kernel = c.kernel;  // auto: the built-in kernel, the only one that reads pages
    cfg.page_size = c.page;
    run(cfg, outs);
    for (std::size_t s = 0; s < steps.size(); ++s) {
      for (int r = 0; r < c.P; ++r) {
        const auto& [o, lse] = outs[s][static_cast<std::size_t>(r)];
        const auto& [fo, flse] = flat[s][static_cast<std::size_t>(r)];
        const testing::Mismatch mo = testing::compare_bits(fo, o),
                                ml = testing::compare_bits(flse, lse);
        EXPECT_EQ(mo.count, 0) << testing::describe(
            mo, detail::str_cat("step ", s, " rank ", r, ": paged O vs unpaged"));
        EXPECT_EQ(ml.count, 0) << testing::describe(
            ml, detail::str_cat("step ", s, " rank ", r, ": paged LSE vs unpaged"));
      }
    }
  } else {
    run(cfg, outs);
  }
  // Every rank's O and LSE against the truth, and the same bits on every rank.
  auto verify = [&](const Outs& got) {
    for (std::size_t s = 0; s < steps.size(); ++s) {
      SCOPED_TRACE("step " + std::to_string(s));
      for (int r = 0; r < c.P; ++r) {
        const auto& [o, lse] = got[s][static_cast<std::size_t>(r)];
        EXPECT_EQ(testing::count_nan(o), 0) << "rank " << r;
        EXPECT_LE(testing::max_abs_diff(steps[s].o_ref, o), 1e-5) << "O, rank " << r;
        EXPECT_LE(testing::max_abs_diff(steps[s].lse_ref, lse), 1e-5) << "LSE, rank " << r;
        const auto& [o0, lse0] = got[s][0];
        const testing::Mismatch mo = testing::compare_bits(o0, o),
                                ml = testing::compare_bits(lse0, lse);
        EXPECT_EQ(mo.count, 0) << testing::describe(
            mo, "O of rank " + std::to_string(r) + " vs rank 0");
        EXPECT_EQ(ml.count, 0) << testing::describe(
            ml, "LSE of rank " + std::to_string(r) + " vs rank 0");
      }
    }
  };
  verify(outs);

  // The same steps with the layout read on the "device" (DecodeConfig::device_layout). With one
  // query token the pieces and their merges are the host layout's in the built-in kernel: the
  // same bits; with more, edges merge in another order: held to the truth.
  if (cfg.split_kernel == DecodeKernel::kLocal) return;
  SCOPED_TRACE("device_layout");
  DecodeConfig on_device = cfg;
  on_device.device_layout = true;
  Outs dev;
  run(on_device, dev);
  verify(dev);
  if (c.T > 1) return;
  Outs host_builtin;
  if (cfg.page_size > 0 || cfg.split_kernel == DecodeKernel::kBuiltIn) {
    host_builtin = outs;
  } else {
    DecodeConfig builtin = cfg;
    builtin.split_kernel = DecodeKernel::kBuiltIn;
    run(builtin, host_builtin);
  }
  for (std::size_t s = 0; s < steps.size(); ++s) {
    for (int r = 0; r < c.P; ++r) {
      const auto& [o, lse] = dev[s][static_cast<std::size_t>(r)];
      const auto& [ho, hlse] = host_builtin[s][static_cast<std::size_t>(r)];
      const testing::Mismatch mo = testing::compare_bits(ho, o),
                              ml = testing::compare_bits(hlse, lse);
      EXPECT_EQ(mo.count, 0) << testing::describe(
          mo, detail::str_cat("step ", s, " rank ", r, ": device layout O vs host layout"));
      EXPECT_EQ(ml.count, 0) << testing::describe(
          ml, detail::str_cat("step ", s, " rank ", r, ": device layout LSE vs host layout"));
    }
  }
}

class Decode : public ::testing::TestWithParam<Case> {};

TEST_P(Decode, EveryRankGetsTheWholeCachesAttention) {
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  check_decode(GetParam(), rng);
}

// Random cases (as the plans' configuration sweep, tests/unit/test_sweep.cc): ranks, batch, new
// tokens, heads, masks, sinks, prefill, steps, splitting and dealing drawn together from one
// printed seed (ULYSSES_SWEEP_SEED replays it, ULYSSES_SWEEP_CASES runs more than 150).
Case draw_decode_case(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto chance = [&](double p) { return std::bernoulli_distribution(p)(rng); };
  Case c{.name = "sweep"};
  c.P = uniform(1, 6);
  c.B = uniform(1, 3);
  c.T = uniform(1, 6);
  c.Hkv = uniform(1, 4);
  c.Hq = c.Hkv * uniform(1, 3);
  c.D = uniform(1, 9);
  c.causal = chance(0.6);
  if (chance(0.4)) c.wl = uniform(0, 30);
  if (!c.causal && chance(0.3)) c.wr = uniform(0, 6);
  c.sinks = chance(0.4);
  c.prefill = uniform(0, 90);
  c.steps = uniform(1, 3);
  c.min_split_rows = uniform(1, 16);
  c.max_splits = uniform(1, 8);
  c.max_run = uniform(1, 25);
  if (c.P > 1 && chance(0.2)) c.empty_rank = uniform(0, c.P - 1);
  if (chance(0.3)) c.Dv = uniform(1, 12);  // (drawn last: earlier draws keep their seeds)
  if (chance(0.3)) c.kernel = DecodeKernel::kBuiltIn;
  if (chance(0.3)) c.page = uniform(1, 9);
  return c;
}

std::string describe(const Case& c, std::uint64_t seed) {
  return detail::str_cat(
      "cp=", c.P, " B=", c.B, " T=", c.T, " Hq=", c.Hq, " Hkv=", c.Hkv, " D=", c.D, " Dv=", c.dv(),
      c.causal ? " causal" : "", " window=(", c.wl, ",", c.wr, ")", c.sinks ? " sinks" : "",
      " prefill=", c.prefill, " steps=", c.steps, " min_split_rows=", c.min_split_rows,
      " max_splits=", c.max_splits, " max_run=", c.max_run, " empty_rank=", c.empty_rank,
      " split_kernel=", decode_kernel_name(c.kernel), " page_size=", c.page,
      "  [ULYSSES_SWEEP_SEED=", seed, "]");
}

TEST(DecodeSweep, RandomCasesGetTheWholeCachesAttention) {
  std::vector<std::uint64_t> seeds;
  if (const char* one = std::getenv("ULYSSES_SWEEP_SEED"); one != nullptr && *one != '\0') {
    seeds.push_back(std::strtoull(one, nullptr, 10));
  } else {
    const char* many = std::getenv("ULYSSES_SWEEP_CASES");
    const int n = many != nullptr && *many != '\0' ? std::max(1, std::atoi(many)) : 150;
    std::mt19937_64 fresh(testing::fresh_seed());
    for (int i = 0; i < n; ++i) seeds.push_back(fresh());
  }
  for (std::uint64_t seed : seeds) {
    const Case c = draw_decode_case(seed);
    SCOPED_TRACE(describe(c, seed));
    std::mt19937_64 rng(seed ^ 0x5eedULL);
    check_decode(c, rng);
    if (HasFailure()) break;  // one failing draw is enough to replay
  }
}

std::vector<Case> cases() {
  return {
      // name, P, B, T, Hq, Hkv, D
      {.name = "one_token_gqa", .P = 3, .B = 1, .T = 1, .Hq = 4, .Hkv = 2, .D = 8},
      {.name = "one_token_causal_mqa_batch2",
       .P = 2,
       .B = 2,
       .T = 1,
       .Hq = 3,
       .Hkv = 1,
       .D = 5,
       .causal = true},
      {.name = "one_token_window_sinks",
       .P = 4,
       .B = 1,
       .T = 1,
       .Hq = 4,
       .Hkv = 4,
       .D = 6,
       .causal = true,
       .wl = 17,
       .sinks = true,
       .prefill = 70},
      {.name = "four_tokens_causal",
       .P = 3,
       .B = 1,
       .T = 4,
       .Hq = 4,
       .Hkv = 2,
       .D = 8,
       .causal = true},
      {.name = "five_tokens_causal_window_batch2",
       .P = 2,
       .B = 2,
       .T = 5,
       .Hq = 2,
       .Hkv = 1,
       .D = 4,
       .causal = true,
       .wl = 9,
       .sinks = true,
       .prefill = 33},
      {.name = "three_tokens_window_both_sides",
       .P = 3,
       .B = 1,
       .T = 3,
       .Hq = 2,
       .Hkv = 2,
       .D = 4,
       .wl = 6,
       .wr = 2,
       .prefill = 25},
      {.name = "tokens_wider_than_window",
       .P = 2,
       .B = 1,
       .T = 6,
       .Hq = 2,
       .Hkv = 1,
       .D = 4,
       .causal = true,
       .wl = 2,
       .prefill = 20},
      {.name = "one_rank_holds_nothing",
       .P = 3,
       .B = 1,
       .T = 2,
       .Hq = 4,
       .Hkv = 2,
       .D = 8,
       .causal = true,
       .empty_rank = 1},
      {.name = "one_rank", .P = 1, .B = 2, .T = 2, .Hq = 4, .Hkv = 2, .D = 8, .causal = true},
      // One rank, no edges, no sinks: the pieces merge straight into O and LSE, one merge per
      // token (B > T) or per sequence (T >= B).
      {.name = "one_rank_one_token_batch3", .P = 1, .B = 3, .T = 1, .Hq = 6, .Hkv = 2, .D = 8},
      {.name = "one_rank_three_tokens_full_batch2",
       .P = 1,
       .B = 2,
       .T = 3,
       .Hq = 4,
       .Hkv = 2,
       .D = 8},
      {.name = "no_split",
       .P = 2,
       .B = 1,
       .T = 1,
       .Hq = 2,
       .Hkv = 1,
       .D = 4,
       .min_split_rows = 1000,
       .max_splits = 1},
      {.name = "one_run_per_rank",
       .P = 2,
       .B = 1,
       .T = 1,
       .Hq = 2,
       .Hkv = 1,
       .D = 4,
       .causal = true,
       .max_run = 1000},
      // head_dim_v != head_dim (MLA's narrower V, and a wider one).
      {.name = "mla_one_token_gqa_window_sinks_batch2",
       .P = 3,
       .B = 2,
       .T = 1,
       .Hq = 4,
       .Hkv = 2,
       .D = 12,
       .causal = true,
       .wl = 20,
       .sinks = true,
       .prefill = 50,
       .Dv = 8},
      // The split-KV kernel's host implementation, and paged caches (in it).
      {.name = "built_in_three_tokens_window_sinks_batch2",
       .P = 3,
       .B = 2,
       .T = 3,
       .Hq = 6,
       .Hkv = 2,
       .D = 8,
       .causal = true,
       .wl = 13,
       .sinks = true,
       .prefill = 45,
       .kernel = DecodeKernel::kBuiltIn},
      {.name = "paged_one_token_gqa_batch2",
       .P = 2,
       .B = 2,
       .T = 1,
       .Hq = 4,
       .Hkv = 2,
       .D = 8,
       .page = 4},
      {.name = "paged_four_tokens_causal_window_sinks",
       .P = 3,
       .B = 3,
       .T = 4,
       .Hq = 2,
       .Hkv = 1,
       .D = 6,
       .causal = true,
       .wl = 11,
       .sinks = true,
       .prefill = 50,
       .page = 3},
      {.name = "paged_one_row_pages_one_rank",
       .P = 1,
       .B = 2,
       .T = 2,
       .Hq = 4,
       .Hkv = 2,
       .D = 4,
       .causal = true,
       .Dv = 6,
       .page = 1},
      {.name = "wider_v_three_tokens_causal",
       .P = 2,
       .B = 1,
       .T = 3,
       .Hq = 2,
       .Hkv = 1,
       .D = 4,
       .causal = true,
       .Dv = 10},
  };
}
INSTANTIATE_TEST_SUITE_P(Layouts, Decode, ::testing::ValuesIn(cases()),
                         [](const auto& param_info) { return param_info.param.name; });

// Sequences of different lengths in one batch (continuous batching): each sequence has its own
// positions [0, L_b + T), dealt to random ranks in runs and stored at random rows of its own cache
// rows, NaN elsewhere; its own query position L_b. Checked against one reference call per
// sequence, every rank's bits equal; and a batch whose sequences all share one layout, given per
// sequence, must give the bits of the shared-layout call.
struct RaggedCase {
  std::string name;
  int P;
  std::int64_t B, T;
  int Hq, Hkv, D;
  bool causal = true;
  int wl = -1;
  bool sinks = false;
};
void PrintTo(const RaggedCase& c, std::ostream* os) { *os << c.name; }

class DecodeRagged : public ::testing::TestWithParam<RaggedCase> {};

TEST_P(DecodeRagged, EachSequenceItsOwnSegmentsAndPosition) {
  const RaggedCase rc = GetParam();
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Case c{.name = rc.name,
               .P = rc.P,
               .B = 1,
               .T = rc.T,
               .Hq = rc.Hq,
               .Hkv = rc.Hkv,
               .D = rc.D,
               .causal = rc.causal,
               .wl = rc.wl,
               .sinks = rc.sinks,
               .max_run = 9};
  std::vector<std::int64_t> len(static_cast<std::size_t>(rc.B));
  for (auto& l : len) l = std::uniform_int_distribution<std::int64_t>(1, 45)(rng);
  len[0] = 0;  // an empty cache before the step: only the new tokens' own keys
  const std::int64_t longest = *std::max_element(len.begin(), len.end()) + rc.T;
  HostTensor k(DType::kFloat64, {rc.B, longest, rc.Hkv, rc.D}),
      v = k, q(DType::kFloat64, {rc.B, rc.T, rc.Hq, rc.D}), sinks(DType::kFloat32, {rc.Hq});
  for (HostTensor* t : {&k, &v, &q}) testing::fill_uniform(*t, rng, -1.0, 1.0);
  testing::fill_uniform(sinks, rng, -1.0, 2.0);

  // Per sequence: its runs, each rank's segments (at random rows of that sequence's cache).
  std::vector<std::vector<PositionRun>> runs(static_cast<std::size_t>(rc.B));
  int max_segments = 1;
  for (std::int64_t b = 0; b < rc.B; ++b) {
    deal(c, 0, len[static_cast<std::size_t>(b)] + rc.T, rng, runs[static_cast<std::size_t>(b)]);
    std::vector<int> per_rank(static_cast<std::size_t>(rc.P), 0);
    for (const PositionRun& r : runs[static_cast<std::size_t>(b)]) {
      max_segments = std::max(max_segments, ++per_rank[static_cast<std::size_t>(r.rank)]);
    }
  }
  const std::int64_t cap = longest + 3 * max_segments;
  struct RankArgs {
    HostTensor k, v;
    std::vector<CacheSegment> segments;
    std::vector<std::int64_t> offsets{0};
  };
  std::vector<RankArgs> ranks(static_cast<std::size_t>(rc.P));
  for (RankArgs& ra : ranks) {
    ra.k = HostTensor(DType::kFloat64, {rc.B, cap, rc.Hkv, rc.D});
    ra.v = ra.k;
    testing::poison(ra.k);
    testing::poison(ra.v);
  }
  for (std::int64_t b = 0; b < rc.B; ++b) {
    const Case one{.name = "", .P = rc.P, .B = 1, .Hkv = rc.Hkv, .D = rc.D, .wl = rc.wl};
    HostTensor kb(DType::kFloat64, {1, longest, rc.Hkv, rc.D}), vb = kb;
    for (std::int64_t i = 0; i < kb.numel(); ++i) {
      kb.set(i, k.at(b * kb.numel() + i));
      vb.set(i, v.at(b * kb.numel() + i));
    }
    const std::vector<RankCache> caches = build_caches(
        one, runs[static_cast<std::size_t>(b)], kb, vb, cap, len[static_cast<std::size_t>(b)], rng);
    for (int r = 0; r < rc.P; ++r) {
      RankArgs& ra = ranks[static_cast<std::size_t>(r)];
      const RankCache& src = caches[static_cast<std::size_t>(r)];
      for (std::int64_t i = 0; i < src.k.numel(); ++i) {
        ra.k.set(b * src.k.numel() + i, src.k.at(i));
        ra.v.set(b * src.k.numel() + i, src.v.at(i));
      }
      std::vector<CacheSegment> segs = src.segments;
      std::sort(segs.begin(), segs.end(),
                [](const CacheSegment& x, const CacheSegment& y) { return x.row < y.row; });
      ra.segments.insert(ra.segments.end(), segs.begin(), segs.end());
      ra.offsets.push_back(static_cast<std::int64_t>(ra.segments.size()));
    }
  }

  // Truth: per sequence, its T tokens at position L_b against its keys [0, L_b + T).
  HostTensor o_ref(DType::kFloat64, {rc.B, rc.T, rc.Hq, rc.D}),
      lse_ref(DType::kFloat32, {rc.B, rc.Hq, rc.T});
  for (std::int64_t b = 0; b < rc.B; ++b) {
    LocalProblem p = LocalProblem::unsharded(attention(c), DType::kFloat64, 1, rc.T);
    p.seqlen_kv = len[static_cast<std::size_t>(b)] + rc.T;
    p.diagonal_offset = len[static_cast<std::size_t>(b)];
    TensorView kk = testing::batch_entry(k.view, b), vv = testing::batch_entry(v.view, b);
    kk.shape[1] = vv.shape[1] = p.seqlen_kv;
    LocalForwardArgs f{.q = testing::batch_entry(q.view, b),
                       .k = kk,
                       .v = vv,
                       .o = testing::batch_entry(o_ref.view, b),
                       .lse = testing::batch_entry(lse_ref.view, b)};
    if (rc.sinks) f.sinks = sinks.view;
    ASSERT_TRUE(reference_forward(p, f).is_ok());
  }

  DecodeConfig cfg{.attention = attention(c),
                   .cp = rc.P,
                   .dtype = DType::kFloat64,
                   .batch = rc.B,
                   .query_tokens = rc.T,
                   .cache_rows = cap,
                   .max_segments = max_segments,
                   .min_split_rows = 4,
                   .max_splits = 5};
  std::vector<std::int64_t> positions(len.begin(), len.end());
  auto kernel = std::make_unique<NoEmptyRows>();
  // Host layouts, then the same in "device" memory (DecodeConfig::device_layout): each sequence's
  // segments in its row of the array, unused entries rows = 0.
  for (const bool device : {false, true}) {
    SCOPED_TRACE(device ? "device_layout" : "host layout");
    cfg.device_layout = device;
    std::vector<std::pair<HostTensor, HostTensor>> outs;
    for (int r = 0; r < rc.P; ++r) {
      outs.emplace_back(HostTensor(DType::kFloat64, {rc.B, rc.T, rc.Hq, rc.D}),
                        HostTensor(DType::kFloat32, {rc.B, rc.Hq, rc.T}));
      testing::poison(outs.back().first);
      testing::poison(outs.back().second);
    }
    EXPECT_ALL_OK(testing::run_ranks(rc.P, [&](int r, Communicator& comm) -> Status {
      auto plan = DistributedDecode::create(cfg, comm, *kernel);
      if (!plan.is_ok()) return plan.status();
      std::vector<unsigned char> ws((*plan)->workspace_bytes());
      const RankArgs& ra = ranks[static_cast<std::size_t>(r)];
      auto& [o, lse] = outs[static_cast<std::size_t>(r)];
      DecodeArgs a{.q = q.view,
                   .k_cache = ra.k.view,
                   .v_cache = ra.v.view,
                   .segments = ra.segments,
                   .segment_offsets = ra.offsets,
                   .query_positions = positions,
                   .o = o.view,
                   .lse = lse.view,
                   .workspace = ws.data()};
      if (rc.sinks) a.sinks = sinks.view;
      const auto S = static_cast<std::size_t>(max_segments);
      std::vector<std::int64_t> seg_dev(static_cast<std::size_t>(rc.B) * S * 3, 0);
      if (device) {
        for (std::size_t b = 0; b < static_cast<std::size_t>(rc.B); ++b) {
          const auto first = static_cast<std::size_t>(ra.offsets[b]);
          const auto n = static_cast<std::size_t>(ra.offsets[b + 1]) - first;
          for (std::size_t i = 0; i < n; ++i) {
            const CacheSegment& sg = ra.segments[first + i];
            std::int64_t* e = &seg_dev[(b * S + i) * 3];
            e[0] = sg.row;
            e[1] = sg.rows;
            e[2] = sg.position;
          }
        }
        a.segments = {};
        a.segment_offsets = {};
        a.query_positions = {};
        a.segments_device = seg_dev.data();
        a.query_positions_device = positions.data();
        ULYSSES_RETURN_IF_ERROR((*plan)->check_device_layout(a, nullptr));
      }
      return (*plan)->forward(a, nullptr);
    }));
    for (int r = 0; r < rc.P; ++r) {
      const auto& [o, lse] = outs[static_cast<std::size_t>(r)];
      EXPECT_EQ(testing::count_nan(o), 0) << "rank " << r;
      EXPECT_LE(testing::max_abs_diff(o_ref, o), 1e-5) << "O, rank " << r;
      EXPECT_LE(testing::max_abs_diff(lse_ref, lse), 1e-5) << "LSE, rank " << r;
      const testing::Mismatch mo = testing::compare_bits(outs[0].first, o);
      EXPECT_EQ(mo.count, 0) << testing::describe(mo, "O of rank " + std::to_string(r));
    }
  }
}

std::vector<RaggedCase> ragged_cases() {
  return {
      {.name = "one_token_causal", .P = 3, .B = 4, .T = 1, .Hq = 4, .Hkv = 2, .D = 8},
      {.name = "three_tokens_causal_sinks",
       .P = 2,
       .B = 3,
       .T = 3,
       .Hq = 2,
       .Hkv = 1,
       .D = 4,
       .sinks = true},
      {.name = "four_tokens_window", .P = 3, .B = 3, .T = 4, .Hq = 4, .Hkv = 4, .D = 4, .wl = 7},
      {.name = "two_tokens_full",
       .P = 2,
       .B = 2,
       .T = 2,
       .Hq = 3,
       .Hkv = 1,
       .D = 4,
       .causal = false},
  };
}

INSTANTIATE_TEST_SUITE_P(Batches, DecodeRagged, ::testing::ValuesIn(ragged_cases()),
                         [](const auto& param_info) { return param_info.param.name; });

// Prefix caching: three sequences whose first 16 positions are one common prompt, held once in
// rank 0's pool (four 4-row pages that every sequence's table names) and each sequence's own
// tokens in its own pages on rank 1, each sequence at its own length. Every sequence's O and LSE
// must match the FP64 reference over the prompt followed by its own keys, and both ranks agree.
TEST(DecodePaged, SequencesShareThePagesOfACommonPrefix) {
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  constexpr std::int64_t B = 3, T = 2, S = 16, page = 4, cap = 48;
  constexpr int Hq = 4, Hkv = 2, D = 8;
  const std::vector<std::int64_t> own = {5, 17, 30};  // positions after the prompt, new ones too
  const AttentionConfig att{
      .num_heads_q = Hq, .num_heads_kv = Hkv, .head_dim = D, .causal = true, .sinks = true};
  HostTensor prompt_k(DType::kFloat64, {1, S, Hkv, D}),
      prompt_v = prompt_k, q(DType::kFloat64, {B, T, Hq, D}), sinks(DType::kFloat32, {Hq});
  for (HostTensor* t : {&prompt_k, &prompt_v, &q}) testing::fill_uniform(*t, rng);
  testing::fill_uniform(sinks, rng, -1.0, 2.0);
  // Each sequence's whole keys (prompt, then its own) for the reference; its own on rank 1.
  std::vector<HostTensor> k_seq, v_seq;
  HostTensor k1(DType::kFloat64, {B, cap, Hkv, D}), v1 = k1;
  testing::poison(k1);
  testing::poison(v1);
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t n = S + own[static_cast<std::size_t>(b)];
    k_seq.emplace_back(DType::kFloat64, std::initializer_list<std::int64_t>{1, n, Hkv, D});
    v_seq.emplace_back(DType::kFloat64, std::initializer_list<std::int64_t>{1, n, Hkv, D});
    testing::fill_uniform(k_seq.back(), rng);
    testing::fill_uniform(v_seq.back(), rng);
    for (std::int64_t i = 0; i < n * Hkv * D; ++i) {
      HostTensor& kb = k_seq.back();
      HostTensor& vb = v_seq.back();
      if (i < S * Hkv * D) {
        kb.set(i, prompt_k.at(i));
        vb.set(i, prompt_v.at(i));
      } else {
        k1.set(b * cap * Hkv * D + i - S * Hkv * D, kb.at(i));
        v1.set(b * cap * Hkv * D + i - S * Hkv * D, vb.at(i));
      }
    }
  }
  // Rank 0: the prompt once, in pool pages 2..5 (pages 0, 1 spare, NaN); every table names them.
  HostTensor pool0(DType::kFloat64, {6, page, Hkv, D}), vpool0 = pool0;
  testing::poison(pool0);
  testing::poison(vpool0);
  for (std::int64_t i = 0; i < S * Hkv * D; ++i) {
    pool0.set(2 * page * Hkv * D + i, prompt_k.at(i));
    vpool0.set(2 * page * Hkv * D + i, prompt_v.at(i));
  }
  std::vector<std::int32_t> table0(static_cast<std::size_t>(B * cap / page), -1);
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t p = 0; p < S / page; ++p) {
      table0[static_cast<std::size_t>(b * cap / page + p)] = static_cast<std::int32_t>(2 + p);
    }
  }
  // Rank 1: each sequence's own rows, paged out in shuffled order.
  const testing::PagedCache pool1 = testing::page_out(
      k1, v1, page, [](std::int64_t, std::int64_t) { return true; }, rng);
  std::vector<CacheSegment> segs0(B, CacheSegment{0, S, 0}), segs1;
  std::vector<std::int64_t> offsets = {0, 1, 2, 3}, positions;
  for (std::int64_t b = 0; b < B; ++b) {
    segs1.push_back({0, own[static_cast<std::size_t>(b)], S});
    positions.push_back(S + own[static_cast<std::size_t>(b)] - T);
  }

  HostTensor o_ref(DType::kFloat64, {B, T, Hq, D}), lse_ref(DType::kFloat32, {B, Hq, T});
  for (std::int64_t b = 0; b < B; ++b) {
    LocalProblem p = LocalProblem::unsharded(att, DType::kFloat64, 1, T);
    p.seqlen_kv = S + own[static_cast<std::size_t>(b)];
    p.diagonal_offset = positions[static_cast<std::size_t>(b)];
    auto row_of = [&](const HostTensor& t) { return testing::batch_entry(t.view, b); };
    LocalForwardArgs f{.q = row_of(q),
                       .k = k_seq[static_cast<std::size_t>(b)].view,
                       .v = v_seq[static_cast<std::size_t>(b)].view,
                       .o = row_of(o_ref),
                       .lse = row_of(lse_ref)};
    f.sinks = sinks.view;
    ASSERT_TRUE(reference_forward(p, f).is_ok());
  }

  const DecodeConfig cfg{.attention = att,
                         .cp = 2,
                         .dtype = DType::kFloat64,
                         .batch = B,
                         .query_tokens = T,
                         .cache_rows = cap,
                         .max_segments = 1,
                         .min_split_rows = 4,
                         .max_splits = 3,
                         .page_size = page};
  auto kernel = make_reference_attention();
  std::vector<std::pair<HostTensor, HostTensor>> outs;
  for (int r = 0; r < 2; ++r) {
    outs.emplace_back(HostTensor(DType::kFloat64, {B, T, Hq, D}),
                      HostTensor(DType::kFloat32, {B, Hq, T}));
    testing::poison(outs.back().first);
    testing::poison(outs.back().second);
  }
  EXPECT_ALL_OK(testing::run_ranks(2, [&](int r, Communicator& comm) -> Status {
    auto plan = DistributedDecode::create(cfg, comm, *kernel);
    if (!plan.is_ok()) return plan.status();
    std::vector<unsigned char> ws((*plan)->workspace_bytes());
    auto& [o, lse] = outs[static_cast<std::size_t>(r)];
    DecodeArgs a{.q = q.view,
                 .k_cache = r == 0 ? pool0.view : pool1.k.view,
                 .v_cache = r == 0 ? vpool0.view : pool1.v.view,
                 .page_table = r == 0 ? table0 : pool1.table,
                 .segments = r == 0 ? segs0 : segs1,
                 .segment_offsets = offsets,
                 .query_positions = positions,
                 .sinks = sinks.view,
                 .o = o.view,
                 .lse = lse.view,
                 .workspace = ws.data()};
    return (*plan)->forward(a, nullptr);
  }));
  for (int r = 0; r < 2; ++r) {
    const auto& [o, lse] = outs[static_cast<std::size_t>(r)];
    EXPECT_EQ(testing::count_nan(o), 0) << "rank " << r;
    EXPECT_LE(testing::max_abs_diff(o_ref, o), 1e-5) << "O, rank " << r;
    EXPECT_LE(testing::max_abs_diff(lse_ref, lse), 1e-5) << "LSE, rank " << r;
    const testing::Mismatch mo = testing::compare_bits(outs[0].first, o);
    EXPECT_EQ(mo.count, 0) << testing::describe(mo, "O of rank " + std::to_string(r));
  }
}

void expect_error(const Status& s, StatusCode code, const std::string& names) {
  EXPECT_EQ(s.code(), code) << s.to_string();
  EXPECT_NE(s.message().find(names), std::string::npos) << s.message();
}

DecodeConfig small_config() {
  return {.attention = {.num_heads_q = 4, .num_heads_kv = 2, .head_dim = 8, .causal = true},
          .cp = 1,
          .dtype = DType::kFloat64,
          .batch = 2,
          .query_tokens = 2,
          .cache_rows = 16};
}

TEST(DecodeConfig, InvalidFieldsAreNamed) {
  auto with = [](auto edit) {
    DecodeConfig c = small_config();
    edit(c);
    return c.validate();
  };
  EXPECT_TRUE(small_config().validate().is_ok());
  expect_error(with([](DecodeConfig& c) { c.query_tokens = 0; }), StatusCode::kInvalidArgument,
               "query_tokens");
  expect_error(with([](DecodeConfig& c) { c.cache_rows = 0; }), StatusCode::kInvalidArgument,
               "cache_rows");
  expect_error(with([](DecodeConfig& c) { c.batch = 0; }), StatusCode::kInvalidArgument, "batch");
  expect_error(with([](DecodeConfig& c) { c.max_splits = 0; }), StatusCode::kInvalidArgument,
               "max_splits");
  expect_error(with([](DecodeConfig& c) { c.max_segments = 0; }), StatusCode::kInvalidArgument,
               "max_segments");
  expect_error(with([](DecodeConfig& c) { c.min_split_rows = 0; }), StatusCode::kInvalidArgument,
               "min_split_rows");
  expect_error(with([](DecodeConfig& c) { c.dtype = DType::kFloat8E4M3; }),
               StatusCode::kInvalidArgument, "dtype");
  expect_error(with([](DecodeConfig& c) { c.attention.num_heads_kv = 3; }),
               StatusCode::kInvalidArgument, "num_heads");
  expect_error(with([](DecodeConfig& c) { c.cache_rows = std::int64_t{1} << 31; }),
               StatusCode::kInvalidArgument, "batch * cache_rows");
  EXPECT_TRUE(with([](DecodeConfig& c) { c.attention.head_dim_v = 16; }).is_ok());
  expect_error(with([](DecodeConfig& c) { c.attention.head_dim_v = -2; }),
               StatusCode::kInvalidArgument, "head_dim_v");
  expect_error(with([](DecodeConfig& c) { c.split_kernel = static_cast<DecodeKernel>(7); }),
               StatusCode::kInvalidArgument, "split_kernel");
  expect_error(with([](DecodeConfig& c) { c.page_size = -1; }), StatusCode::kInvalidArgument,
               "page_size");
  expect_error(with([](DecodeConfig& c) { c.page_size = 5; }), StatusCode::kInvalidArgument,
               "whole number of pages");
  expect_error(with([](DecodeConfig& c) { c.page_size = std::int64_t{1} << 31; }),
               StatusCode::kInvalidArgument, "page_size is too large");
  EXPECT_TRUE(with([](DecodeConfig& c) { c.page_size = 4; }).is_ok());
  // The pieces' query rows are addressed with int32: batch 2 * (max_splits 16 + 3 * max_segments
  // 2) * 2^26 query tokens is past int32 / 4 query heads.
  expect_error(with([](DecodeConfig& c) { c.query_tokens = std::int64_t{1} << 26; }),
               StatusCode::kInvalidArgument, "too large for int32 row offsets");
  // Sizes past the plans' int64 arithmetic are named before any of it runs (a config fuzz under
  // UBSan found these products overflowing).
  expect_error(
      with([](DecodeConfig& c) { c.query_tokens = std::numeric_limits<std::int64_t>::max(); }),
      StatusCode::kInvalidArgument,
      "batch * query_tokens * num_heads_q * max(head_dim, head_dim_v) is too large (got "
      "more than 2^63 - 1");
  expect_error(with([](DecodeConfig& c) { c.cache_rows = std::int64_t{1} << 45; }),
               StatusCode::kInvalidArgument,
               "batch * cache_rows * num_heads_kv * max(head_dim, head_dim_v) is too large");
  expect_error(with([](DecodeConfig& c) {
                 c.batch = std::int64_t{1} << 40;
                 c.cache_rows = 1;
                 c.max_splits = 1 << 30;
               }),
               StatusCode::kInvalidArgument, "too large for int32 row offsets (got more than");
}

TEST(DecodeConfig, SplitKernelNames) {
  EXPECT_EQ(decode_kernel_name(DecodeKernel::kAuto), "auto");
  EXPECT_EQ(decode_kernel_name(DecodeKernel::kLocal), "local");
  EXPECT_EQ(decode_kernel_name(DecodeKernel::kBuiltIn), "built_in");
}

class NoLse final : public LocalAttention {
 public:
  std::string_view name() const override { return "no-lse"; }
  Device device() const override { return Device::host(); }
  bool provides_lse() const override { return false; }
  bool supports_backward() const override { return false; }
  Status check_support(const LocalProblem&) const override { return Status::ok(); }
  Status forward(const LocalProblem&, const LocalForwardArgs&, Stream) override {
    return Status::ok();
  }
  Status backward(const LocalProblem&, const LocalBackwardArgs&, Stream) override {
    return Status::ok();
  }
};

TEST(DecodeCreate, KernelOnAnotherDeviceThanTheCommunicatorIsNamed) {
  auto kernel = make_reference_attention();  // host
  auto comms = create_loopback_group(1).value();
  testing::ClaimsGpu on_gpu(*comms[0]);
  expect_error(DistributedDecode::create(small_config(), on_gpu, *kernel).status(),
               StatusCode::kInvalidArgument, "kernel runs on another device");
}

TEST(DecodeCreate, RanksThatDisagreeAllFail) {
  auto kernel = make_reference_attention();
  // cache_rows differs on rank 1: every rank reports the field.
  const auto diff = testing::run_ranks(2, [&](int r, Communicator& comm) -> Status {
    DecodeConfig c = small_config();
    c.cp = 2;
    c.cache_rows = 16 + r;
    return DistributedDecode::create(c, comm, *kernel).status();
  });
  for (const Status& s : diff) expect_error(s, StatusCode::kConfigMismatch, "cache_rows");
  // Same config, but rank 0's kernel cannot run it: rank 0 says why, rank 1 that rank 0 refused.
  NoLse no_lse;
  const auto bad = testing::run_ranks(2, [&](int r, Communicator& comm) -> Status {
    DecodeConfig c = small_config();
    c.cp = 2;
    c.split_kernel = DecodeKernel::kLocal;  // (auto would fall back to the built-in kernel)
    return DistributedDecode::create(c, comm,
                                     r == 0 ? static_cast<LocalAttention&>(no_lse) : *kernel)
        .status();
  });
  expect_error(bad[0], StatusCode::kUnsupported, "LSE");
  expect_error(bad[1], StatusCode::kConfigMismatch, "rank 0 rejected");
  // cp must be the communicator's size.
  const auto cp = testing::run_ranks(2, [&](int, Communicator& comm) -> Status {
    return DistributedDecode::create(small_config(), comm, *kernel).status();
  });
  for (const Status& s : cp) expect_error(s, StatusCode::kInvalidArgument, "cp");
}

TEST(DecodeCreate, AKernelWithoutLseIsRefused) {
  NoLse kernel;
  const auto s = testing::run_ranks(1, [&](int, Communicator& comm) -> Status {
    DecodeConfig c = small_config();
    c.split_kernel = DecodeKernel::kLocal;
    return DistributedDecode::create(c, comm, kernel).status();
  });
  expect_error(s[0], StatusCode::kUnsupported, "LSE");
}

// The built-in split-KV kernel runs on host ranks too (its host implementation; the Decode cases
// with split_kernel = built_in check its results) and never asks the LocalAttention for its LSE.
// Paged caches need it: split_kernel = local is refused with them on every rank, naming page_size;
// auto takes the built-in kernel. Ranks that disagree on the choice are told which field differs.
TEST(DecodeCreate, BuiltInKernelRunsOnHostRanksAndPagedCachesNeedIt) {
  auto kernel = make_reference_attention();
  NoLse no_lse;  // never asked: the built-in kernel does not need the LocalAttention's LSE
  for (const bool paged : {false, true}) {
    for (const DecodeKernel k : {DecodeKernel::kBuiltIn, DecodeKernel::kAuto}) {
      const auto st = testing::run_ranks(2, [&](int, Communicator& comm) -> Status {
        DecodeConfig c = small_config();
        c.cp = 2;
        c.split_kernel = k;
        if (paged) c.page_size = 4;
        return DistributedDecode::create(c, comm, no_lse).status();
      });
      // Unpaged auto asks the LocalAttention first, and falls back to the built-in kernel.
      for (const Status& s : st) EXPECT_TRUE(s.is_ok()) << s.to_string();
    }
  }
  const auto local = testing::run_ranks(2, [&](int, Communicator& comm) -> Status {
    DecodeConfig c = small_config();
    c.cp = 2;
    c.split_kernel = DecodeKernel::kLocal;
    c.page_size = 8;
    return DistributedDecode::create(c, comm, *kernel).status();
  });
  for (const Status& s : local) {
    expect_error(s, StatusCode::kUnsupported, "page_size = 8");
    EXPECT_NE(s.message().find("split_kernel = auto or built_in"), std::string::npos)
        << s.message();
  }
  const auto pages = testing::run_ranks(2, [&](int r, Communicator& comm) -> Status {
    DecodeConfig c = small_config();
    c.cp = 2;
    c.page_size = r == 0 ? 4 : 8;
    return DistributedDecode::create(c, comm, *kernel).status();
  });
  for (const Status& s : pages) expect_error(s, StatusCode::kConfigMismatch, "page_size");
  for (DecodeKernel k : {DecodeKernel::kAuto, DecodeKernel::kLocal}) {
    const auto ok = testing::run_ranks(2, [&](int, Communicator& comm) -> Status {
      DecodeConfig c = small_config();
      c.cp = 2;
      c.split_kernel = k;
      return DistributedDecode::create(c, comm, *kernel).status();
    });
    for (const Status& s : ok) EXPECT_TRUE(s.is_ok()) << s.to_string();
  }
  const auto diff = testing::run_ranks(2, [&](int r, Communicator& comm) -> Status {
    DecodeConfig c = small_config();
    c.cp = 2;
    c.split_kernel = r == 0 ? DecodeKernel::kAuto : DecodeKernel::kLocal;
    return DistributedDecode::create(c, comm, *kernel).status();
  });
  for (const Status& s : diff) expect_error(s, StatusCode::kConfigMismatch, "split_kernel");
}

TEST(DecodeForward, BadArgumentsAreNamedBeforeAnythingRuns) {
  const DecodeConfig cfg = small_config();
  auto kernel = make_reference_attention();
  HostTensor q(DType::kFloat64, {2, 2, 4, 8}), k(DType::kFloat64, {2, 16, 2, 8}),
      v(DType::kFloat64, {2, 16, 2, 8}), o(DType::kFloat64, {2, 2, 4, 8}),
      sinks(DType::kFloat32, {4}), wrong_q(DType::kFloat64, {2, 3, 4, 8});
  const std::vector<CacheSegment> fine = {{0, 5, 0}, {7, 3, 5}};
  testing::poison(o);
  std::vector<std::pair<std::string, Status>> got;
  const auto st = testing::run_ranks(1, [&](int, Communicator& comm) -> Status {
    auto plan = DistributedDecode::create(cfg, comm, *kernel);
    if (!plan.is_ok()) return plan.status();
    std::vector<unsigned char> ws((*plan)->workspace_bytes());
    auto run = [&](const std::string& name, auto edit) {
      std::vector<CacheSegment> segs = fine;
      DecodeArgs a{.q = q.view,
                   .k_cache = k.view,
                   .v_cache = v.view,
                   .query_position = 10,
                   .o = o.view,
                   .workspace = ws.data()};
      edit(a, segs);
      a.segments = segs;
      got.emplace_back(name, (*plan)->forward(a, nullptr));
    };
    using Segs = std::vector<CacheSegment>;
    run("q", [&](DecodeArgs& a, Segs&) { a.q = wrong_q.view; });
    run("segments[1]", [&](DecodeArgs&, Segs& s) { s[1].row = 3; });           // overlaps
    run("segments[1]", [&](DecodeArgs&, Segs& s) { s[1].rows = 20; });         // past the end
    run("segments", [&](DecodeArgs&, Segs& s) { s.push_back({12, 1, 20}); });  // > max_segments
    run("segments[0].position", [&](DecodeArgs&, Segs& s) { s[0].position = -1; });
    run("query_position", [&](DecodeArgs& a, Segs&) { a.query_position = -2; });
    run("sinks", [&](DecodeArgs& a, Segs&) { a.sinks = sinks.view; });
    run("workspace", [&](DecodeArgs& a, Segs&) { a.workspace = nullptr; });
    // Per-sequence layouts (2 sequences, the 2 segments of `fine`).
    const std::vector<std::int64_t> short_offsets = {0, 2}, unordered = {0, 2, 1},
                                    short_of_end = {0, 1, 1}, three_in_one = {0, 3, 3},
                                    one_position = {1}, negative_position = {3, -1};
    run("segment_offsets", [&](DecodeArgs& a, Segs&) { a.segment_offsets = short_offsets; });
    run("segment_offsets[2]", [&](DecodeArgs& a, Segs&) { a.segment_offsets = unordered; });
    run("segment_offsets[2]", [&](DecodeArgs& a, Segs&) { a.segment_offsets = short_of_end; });
    run("segments of sequence 0", [&](DecodeArgs& a, Segs& s) {
      s.push_back({12, 1, 20});
      a.segment_offsets = three_in_one;
    });
    run("query_positions", [&](DecodeArgs& a, Segs&) { a.query_positions = one_position; });
    run("query_positions[1]", [&](DecodeArgs& a, Segs&) { a.query_positions = negative_position; });
    run("k_cache.strides[0]", [&](DecodeArgs& a, Segs&) { a.k_cache.strides[0] = 15 * 16; });
    run("v_cache.strides[0]", [&](DecodeArgs& a, Segs&) { a.v_cache.strides[0] = 17 * 16; });
    const std::vector<std::int32_t> table = {0, 1, 2, 3};  // unpaged plan
    run("page_table", [&](DecodeArgs& a, Segs&) { a.page_table = table; });
    run("page_table_device", [&](DecodeArgs& a, Segs&) { a.page_table_device = table.data(); });
    run("k_cache.strides[0]", [&](DecodeArgs& a, Segs&) {  // rows past int32 (never read)
      a.k_cache.strides[0] = a.v_cache.strides[0] = (std::int64_t{1} << 31) * 16;
    });
    return Status::ok();
  });
  EXPECT_ALL_OK(st);
  for (const auto& [name, s] : got) expect_error(s, StatusCode::kInvalidArgument, name);
  EXPECT_EQ(testing::count_nan(o), o.numel()) << "a refused call wrote its output";
}

// The device planner's table (DecodeConfig::device_layout), worked by hand: query tokens at 20..23,
// causal, window_left 6 (token i sees keys [14 + i, 20 + i]), 4 open pieces at most of >= 1 key.
// Sequence 0's three segments give max_segments + 1 = 4 edges, the most there can be: the middle
// one holds every key all tokens see (17..20) and an edge on each side. Sequence 1's entries are
// garbage (rows before the cache, past it, a negative position, rows <= 0) and its query position
// is negative: every one of its slots reads nothing.
TEST(DecodeDeviceLayout, SlotTableHoldsEverySlotAndReadsNothingOutsideTheCache) {
  constexpr int B = 2, S = 3, kOpen = 4 + S, kEdge = S + 1;
  constexpr std::int64_t kPitch = 100, kRows = 30;
  const std::vector<std::int64_t> segments = {
      0,  16, 0, 16, 6, 16, 22, 2, 22,  // sequence 0: (row, rows, position)
      -1, 5,  0, 25, 6, 30, 3,  4, -1,  // sequence 1: before, past the end, negative position
  };
  const std::vector<std::int64_t> positions = {20, -5};
  std::vector<std::int32_t> table(5 * B * (kOpen + kEdge), 12345);
  const kernels::DecodeSlotTableArgs a{
      .segments = segments.data(),
      .query_positions = positions.data(),
      .batch = B,
      .max_segments = S,
      .cache_rows = kRows,
      .seq_pitch = kPitch,
      .rules = {.tokens = 4, .window_left = 6, .right = 0, .min_split_rows = 1, .max_splits = 4},
      .n_open = kOpen,
      .n_edge = kEdge,
      .table = table.data()};
  ASSERT_TRUE(kernels::decode_slot_table(a, Device::host(), nullptr).is_ok());
  const int n = B * (kOpen + kEdge);
  struct Slot {
    std::int32_t row, rows, seq;
    std::int64_t delta;
  };
  auto slot = [&](int i) {
    const auto u = [&](int r) { return table[static_cast<std::size_t>(r * n + i)]; };
    return Slot{u(0), u(1), u(2),
                static_cast<std::int64_t>(static_cast<std::uint32_t>(u(3))) |
                    (static_cast<std::int64_t>(u(4)) << 32)};
  };
  auto expect = [&](int i, Slot want) {
    const Slot got = slot(i);
    EXPECT_EQ(got.row, want.row) << "slot " << i;
    EXPECT_EQ(got.rows, want.rows) << "slot " << i;
    EXPECT_EQ(got.seq, want.seq) << "slot " << i;
    EXPECT_EQ(got.delta, want.delta) << "slot " << i;
  };
  // Sequence 0's open pieces: keys 17..20 of the middle segment, one each; then 3 unused.
  for (int j = 0; j < 4; ++j) expect(j, {17 + j, 1, 0, 0});
  for (int j = 4; j < kOpen; ++j) expect(j, {0, 0, 0, 0});
  // Sequence 1: nothing.
  for (int j = 0; j < kOpen; ++j) expect(kOpen + j, {0, 0, 1, 0});
  // Sequence 0's edges, delta = position of token 0 minus that of the edge's first key: keys 14-15
  // (left of the window of tokens 2, 3), 16, 21 (right of token 0), 22-23.
  const int e0 = B * kOpen;
  expect(e0 + 0, {14, 2, 0, 6});
  expect(e0 + 1, {16, 1, 0, 4});
  expect(e0 + 2, {21, 1, 0, -1});
  expect(e0 + 3, {22, 2, 0, -2});
  for (int k = 0; k < kEdge; ++k) expect(e0 + kEdge + k, {0, 0, 1, 0});

  // The device's threads share a sequence (a warp: lane l of 32 takes the open pieces and unused
  // slots l, l + 32, ...): any number of lanes writes the same table.
  for (const int lanes : {2, 3, 32}) {
    std::vector<std::int32_t> shared(table.size(), 777);
    kernels::DecodeSlotTableArgs sa = a;
    sa.table = shared.data();
    for (int b = 0; b < B; ++b) {
      for (int lane = 0; lane < lanes; ++lane) kernels::write_decode_slots(sa, b, lane, lanes);
    }
    EXPECT_EQ(shared, table) << lanes << " lanes";
  }

  // The host planner cuts the same pieces from the same layout (sequence 0).
  const std::vector<CacheSegment> host = {{0, 16, 0}, {16, 6, 16}, {22, 2, 22}};
  std::vector<kernels::DecodePiece> open, edges;
  kernels::plan_decode_pieces(
      a.rules, S,
      [&](int i, std::int64_t& row, std::int64_t& rows, std::int64_t& position) {
        row = host[static_cast<std::size_t>(i)].row;
        rows = host[static_cast<std::size_t>(i)].rows;
        position = host[static_cast<std::size_t>(i)].position;
      },
      20, [&](std::int64_t, const kernels::DecodePiece& p) { open.push_back(p); },
      [&](const kernels::DecodePiece& p) { edges.push_back(p); });
  ASSERT_EQ(open.size(), 4u);
  ASSERT_EQ(edges.size(), 4u);
  EXPECT_EQ(edges[2].q_begin, 1);  // keys right of token 0: tokens 1..3 see key 21
  EXPECT_EQ(edges[2].q_len, 3);
  EXPECT_EQ(edges[0].q_len, 2);  // keys 14, 15: tokens 0 and 1 only
}

// Device layouts: the config, the plan and forward()'s arguments name what is wrong, and
// check_device_layout() names the device entry a host layout's check would refuse.
TEST(DecodeDeviceLayout, BadLayoutsAreNamed) {
  DecodeConfig cfg = small_config();  // batch 2, 2 query tokens, cache_rows 16, max_segments 2
  cfg.device_layout = true;
  DecodeConfig local = cfg;
  local.split_kernel = DecodeKernel::kLocal;
  expect_error(local.validate(), StatusCode::kInvalidArgument, "split_kernel");
  auto kernel = make_reference_attention();
  HostTensor q(DType::kFloat64, {2, 2, 4, 8}), k(DType::kFloat64, {2, 16, 2, 8}),
      v(DType::kFloat64, {2, 16, 2, 8}), o(DType::kFloat64, {2, 2, 4, 8});
  testing::poison(o);
  // (row, rows, position) x 2 per sequence.
  const std::vector<std::int64_t> fine = {0, 5, 0, 7, 3, 5, 0, 4, 0, 0, 0, 0}, at = {10, 4};
  const std::vector<CacheSegment> host_segments = {{0, 5, 0}};
  std::vector<std::pair<std::string, Status>> got, checked;
  EXPECT_ALL_OK(testing::run_ranks(1, [&](int, Communicator& comm) -> Status {
    auto plan = DistributedDecode::create(cfg, comm, *kernel);
    if (!plan.is_ok()) return plan.status();
    std::vector<unsigned char> ws((*plan)->workspace_bytes());
    auto args = [&](const std::vector<std::int64_t>& segs, const std::vector<std::int64_t>& pos) {
      return DecodeArgs{.q = q.view,
                        .k_cache = k.view,
                        .v_cache = v.view,
                        .segments_device = segs.data(),
                        .query_positions_device = pos.data(),
                        .o = o.view,
                        .workspace = ws.data()};
    };
    ULYSSES_RETURN_IF_ERROR((*plan)->check_device_layout(args(fine, at), nullptr));
    auto run = [&](const std::string& name, auto edit) {
      DecodeArgs a = args(fine, at);
      edit(a);
      got.emplace_back(name, (*plan)->forward(a, nullptr));
      checked.emplace_back(name, (*plan)->check_device_layout(a, nullptr));
    };
    run("segments_device", [](DecodeArgs& a) { a.segments_device = nullptr; });
    run("query_positions_device", [](DecodeArgs& a) { a.query_positions_device = nullptr; });
    run("segments", [&](DecodeArgs& a) { a.segments = host_segments; });
    run("query_positions", [&](DecodeArgs& a) { a.query_positions = at; });
    const std::vector<std::int64_t> offsets = {0, 1, 1};
    run("segment_offsets is given", [&](DecodeArgs& a) { a.segment_offsets = offsets; });
    // The contents: refused by check_device_layout() only (forward() cannot see them).
    auto contents = [&](const std::string& name, std::vector<std::int64_t> segs,
                        std::vector<std::int64_t> pos) {
      checked.emplace_back(name, (*plan)->check_device_layout(args(segs, pos), nullptr));
    };
    std::vector<std::int64_t> overlap = fine, past = fine, negative = fine;
    overlap[3] = 2;    // sequence 0's second segment starts inside its first
    past[6 + 1] = 17;  // sequence 1's first segment runs past cache_rows
    negative[6 + 2] = -3;
    contents("segments_device[0][1]", overlap, at);
    contents("segments_device[1][0]", past, at);
    contents("segments_device[1][0].position", negative, at);
    contents("query_positions_device[1]", fine, {10, -1});
    return Status::ok();
  }));
  for (const auto& [name, s] : got) expect_error(s, StatusCode::kInvalidArgument, name);
  for (const auto& [name, s] : checked) expect_error(s, StatusCode::kInvalidArgument, name);
  EXPECT_EQ(testing::count_nan(o), o.numel()) << "a refused call wrote its output";

  // A host-layout plan refuses device arrays, and has no device layout to check.
  EXPECT_ALL_OK(testing::run_ranks(1, [&](int, Communicator& comm) -> Status {
    DecodeConfig host_cfg = small_config();
    auto plan = DistributedDecode::create(host_cfg, comm, *kernel);
    if (!plan.is_ok()) return plan.status();
    std::vector<unsigned char> ws((*plan)->workspace_bytes());
    const std::vector<CacheSegment> segs = {{0, 5, 0}};
    DecodeArgs a{.q = q.view,
                 .k_cache = k.view,
                 .v_cache = v.view,
                 .segments = segs,
                 .query_position = 10,
                 .segments_device = fine.data(),
                 .o = o.view,
                 .workspace = ws.data()};
    expect_error((*plan)->forward(a, nullptr), StatusCode::kInvalidArgument, "segments_device");
    expect_error((*plan)->check_device_layout(a, nullptr), StatusCode::kInvalidArgument,
                 "device_layout");
    a.segments_device = nullptr;
    a.query_positions_device = at.data();
    expect_error((*plan)->forward(a, nullptr), StatusCode::kInvalidArgument,
                 "query_positions_device");
    return Status::ok();
  }));

  // A paged device layout reads its page table on the device: page_table_device is required,
  // a host page_table refused.
  EXPECT_ALL_OK(testing::run_ranks(1, [&](int, Communicator& comm) -> Status {
    DecodeConfig paged_cfg = cfg;
    paged_cfg.page_size = 4;
    auto plan = DistributedDecode::create(paged_cfg, comm, *kernel);
    if (!plan.is_ok()) return plan.status();
    std::vector<unsigned char> ws((*plan)->workspace_bytes());
    HostTensor pool(DType::kFloat64, {8, 4, 2, 8});
    const std::vector<std::int32_t> table = {0, 1, 2, 3, 4, 5, 6, 7};
    DecodeArgs a{.q = q.view,
                 .k_cache = pool.view,
                 .v_cache = pool.view,
                 .segments_device = fine.data(),
                 .query_positions_device = at.data(),
                 .o = o.view,
                 .workspace = ws.data()};
    expect_error((*plan)->forward(a, nullptr), StatusCode::kInvalidArgument, "page_table_device");
    a.page_table_device = table.data();
    a.page_table = table;
    expect_error((*plan)->forward(a, nullptr), StatusCode::kInvalidArgument,
                 "page_table is given but device_layout");
    a.page_table = {};
    return (*plan)->check_device_layout(a, nullptr);  // the same arguments, taken
  }));
  EXPECT_EQ(testing::count_nan(o), o.numel()) << "a refused call wrote its output";
}

// A paged cache's pool, its pages' strides and its page table are checked before anything runs:
// the table's length, and every entry of a page that holds segment rows (entries of other pages
// are never read: -1 there is fine).
TEST(DecodeForward, PagedCacheArgumentsAreNamed) {
  DecodeConfig cfg = small_config();  // batch 2, cache_rows 16
  cfg.page_size = 4;                  // 4 pages per sequence
  auto kernel = make_reference_attention();
  HostTensor q(DType::kFloat64, {2, 2, 4, 8}), k(DType::kFloat64, {5, 4, 2, 8}),
      v(DType::kFloat64, {5, 4, 2, 8}), o(DType::kFloat64, {2, 2, 4, 8}),
      rows(DType::kFloat64, {5, 3, 2, 8});
  std::mt19937_64 rng(testing::fresh_seed());
  for (HostTensor* t : {&q, &k, &v}) testing::fill_uniform(*t, rng);
  // Rows [0, 5) and [7, 10) of each sequence: pages 0, 1 and 2; page 3 unused (-1).
  const std::vector<CacheSegment> segs = {{0, 5, 0}, {7, 3, 5}};
  const std::vector<std::int32_t> fine = {4, 0, 2, -1, 1, 3, 2, -1};
  testing::poison(o);
  std::vector<std::pair<std::string, Status>> got;
  Status right;
  const auto st = testing::run_ranks(1, [&](int, Communicator& comm) -> Status {
    auto plan = DistributedDecode::create(cfg, comm, *kernel);
    if (!plan.is_ok()) return plan.status();
    std::vector<unsigned char> ws((*plan)->workspace_bytes());
    std::vector<std::int32_t> table;
    auto args = [&] {
      table = fine;
      return DecodeArgs{.q = q.view,
                        .k_cache = k.view,
                        .v_cache = v.view,
                        .page_table = table,
                        .segments = segs,
                        .query_position = 10,
                        .o = o.view,
                        .workspace = ws.data()};
    };
    auto run = [&](const std::string& name, auto edit) {
      DecodeArgs a = args();
      edit(a, table);
      got.emplace_back(name, (*plan)->forward(a, nullptr));
    };
    using Table = std::vector<std::int32_t>;
    const std::vector<std::int32_t> short_table(7, 0);
    run("page_table", [&](DecodeArgs& a, Table&) { a.page_table = short_table; });
    run("page_table[0 * 4 + 2]", [&](DecodeArgs&, Table& t) { t[2] = 5; });   // past the pool
    run("page_table[1 * 4 + 1]", [&](DecodeArgs&, Table& t) { t[5] = -1; });  // used page
    run("k_cache", [&](DecodeArgs& a, Table&) { a.k_cache = rows.view; });    // 3-row pages
    run("v_cache.strides[0]", [&](DecodeArgs& a, Table&) { a.v_cache.strides[0] = 3 * 16; });
    testing::poison(o);
    right = (*plan)->forward(args(), nullptr);
    return Status::ok();
  });
  EXPECT_ALL_OK(st);
  for (const auto& [name, s] : got) expect_error(s, StatusCode::kInvalidArgument, name);
  EXPECT_TRUE(right.is_ok()) << right.to_string();
  EXPECT_EQ(testing::count_nan(o), 0) << "the call with the right table wrote no output";
}

// With head_dim_v != head_dim, v_cache and o are checked against head_dim_v: heads of head_dim
// there are named.
TEST(DecodeForward, ValueAndOutputWidthsAreHeadDimV) {
  DecodeConfig cfg = small_config();
  cfg.attention.head_dim_v = 4;
  auto kernel = make_reference_attention();
  HostTensor q(DType::kFloat64, {2, 2, 4, 8}), k(DType::kFloat64, {2, 16, 2, 8}),
      v(DType::kFloat64, {2, 16, 2, 4}), o(DType::kFloat64, {2, 2, 4, 4}),
      v_wide(DType::kFloat64, {2, 16, 2, 8}), o_wide(DType::kFloat64, {2, 2, 4, 8});
  std::mt19937_64 rng(testing::fresh_seed());
  for (HostTensor* t : {&q, &k, &v}) testing::fill_uniform(*t, rng);
  const std::vector<CacheSegment> segs = {{0, 5, 0}, {7, 3, 5}};
  Status wrong_v, wrong_o, right;
  const auto st = testing::run_ranks(1, [&](int, Communicator& comm) -> Status {
    auto plan = DistributedDecode::create(cfg, comm, *kernel);
    if (!plan.is_ok()) return plan.status();
    std::vector<unsigned char> ws((*plan)->workspace_bytes());
    DecodeArgs a{.q = q.view,
                 .k_cache = k.view,
                 .v_cache = v_wide.view,
                 .segments = segs,
                 .query_position = 10,
                 .o = o.view,
                 .workspace = ws.data()};
    wrong_v = (*plan)->forward(a, nullptr);
    a.v_cache = v.view;
    a.o = o_wide.view;
    wrong_o = (*plan)->forward(a, nullptr);
    a.o = o.view;
    right = (*plan)->forward(a, nullptr);
    return Status::ok();
  });
  EXPECT_ALL_OK(st);
  expect_error(wrong_v, StatusCode::kInvalidArgument, "forward: v_cache has the wrong shape");
  expect_error(wrong_o, StatusCode::kInvalidArgument, "forward: o has the wrong shape");
  EXPECT_TRUE(right.is_ok()) << right.to_string();
}

// The built-in split-KV kernel's shared memory (kernels/split_kv_layout.h): every head width it
// accepts fits the opt-in limit of the GPUs it is sized for (Hopper's 227 KiB, A100's 163 KiB) in
// each layout (row or tensor copies, 16 or 8 query rows per CTA, paged or not), and on Hopper a
// warp of a CTA of 16 rows keeps at least one tile in flight while it computes another (two
// stages) for the widths decoding uses most: 64 and 128, and MLA's 192 / 128.
TEST(SplitKvLayout, SharedMemoryFitsAndHopperRingsPrefetch) {
  namespace L = kernels::split_kv_layout;
  constexpr std::size_t kHopper = 232448, kA100 = 166912;
  for (int d = 16; d <= 256; d += 16) {
    for (int dv = 16; dv <= 256; dv += 16) {
      const int nk = L::k_blocks(d), nv = L::v_blocks(dv);
      SCOPED_TRACE(::testing::Message() << "head_dim " << d << ", head_dim_v " << dv);
      EXPECT_GE(16 * nk, d);
      EXPECT_GE(16 * nv, dv);
      // A tensor-copied tile holds whole boxes of 64 columns.
      EXPECT_GE(nk * 16, (d + L::kBoxCols - 1) / L::kBoxCols * L::kBoxCols);
      EXPECT_GE(nv * 16, (dv + L::kBoxCols - 1) / L::kBoxCols * L::kBoxCols);
      EXPECT_EQ(L::tile_bytes(nk, nv, true) % L::kSwizzleAlign, 0u);
      for (const int rows : {L::kRows, 8}) {
        for (const bool paged : {false, true}) {
          EXPECT_LE(L::shared_bytes(nk, nv, L::ring_bytes(8, rows, false, paged), false), kA100);
          for (const bool tensor : {false, true}) {
            SCOPED_TRACE(::testing::Message() << (tensor ? "tensor copies, " : "row copies, ")
                                              << rows << " rows" << (paged ? ", paged" : ""));
            const int budget = L::ring_bytes(9, rows, tensor, paged);
            const std::size_t bytes = L::shared_bytes(nk, nv, budget, tensor);
            EXPECT_LE(bytes, kHopper);
            EXPECT_GE(bytes, L::merge_bytes(nv));
            EXPECT_GE(bytes, L::ring_offset_max(tensor) + static_cast<std::size_t>(L::kWarps) *
                                                              L::stages(nk, nv, budget, tensor) *
                                                              L::tile_bytes(nk, nv, tensor));
          }
        }
      }
    }
  }
  for (const auto& [d, dv] : {std::pair{64, 64}, {128, 128}, {192, 128}}) {
    for (const bool tensor : {false, true}) {
      EXPECT_GE(L::stages(L::k_blocks(d), L::v_blocks(dv),
                          L::ring_bytes(9, L::kRows, tensor, false), tensor),
                2)
          << d << " / " << dv << (tensor ? ", tensor copies" : ", row copies");
    }
  }
}

// A GPU whose opt-in shared memory per block is below what the kernel needs for the widths (a
// 99 KiB consumer part) is refused with the numbers; Hopper's and A100's limits are not.
TEST(SplitKvLayout, TooLittleSharedMemoryIsNamed) {
  EXPECT_EQ(kernels::split_kv_shared_memory_unsupported(128, 128, 9, 232448, 0), "");
  EXPECT_EQ(kernels::split_kv_shared_memory_unsupported(192, 128, 9, 232448, 0), "");
  EXPECT_EQ(kernels::split_kv_shared_memory_unsupported(256, 256, 8, 166912, 0), "");
  const std::string why = kernels::split_kv_shared_memory_unsupported(128, 128, 12, 101376, 3);
  EXPECT_NE(why.find("bytes of shared memory"), std::string::npos) << why;
  EXPECT_NE(why.find("allows 101376"), std::string::npos) << why;
  EXPECT_NE(why.find("device 3"), std::string::npos) << why;
  EXPECT_NE(why.find("compute capability 12"), std::string::npos) << why;
}

// auto's rule for the cuDNN backend (kernels::split_kv_auto_keys): every step in the built-in
// kernel on an H100's 3.35 TB/s (where it measured faster at every length), steps of at most 256k
// keys on an H200's 4.8 TB/s, and those too where the bandwidth is unknown.
TEST(SplitKvAuto, KeysFollowTheMemoryBandwidth) {
  constexpr std::int64_t kAll = std::numeric_limits<std::int64_t>::max();
  EXPECT_EQ(kernels::split_kv_auto_keys_for(2.0 * 2619e6 * 5120 / 8), kAll);  // H100 SXM
  EXPECT_EQ(kernels::split_kv_auto_keys_for(2.0 * 1593e6 * 5120 / 8), kAll);  // A100 80GB
  EXPECT_EQ(kernels::split_kv_auto_keys_for(4e12), kAll);
  EXPECT_EQ(kernels::split_kv_auto_keys_for(2.0 * 3201e6 * 6144 / 8), 262144);  // H200
  EXPECT_EQ(kernels::split_kv_auto_keys_for(4.001e12), 262144);
  EXPECT_EQ(kernels::split_kv_auto_keys_for(0), 262144);
}

}  // namespace
}  // namespace ulysses
