// ulysses-bench --trace-calls counts the (query, key) pairs a call's masks leave visible; its
// TFLOP/s column is only as right as that count. Checked against the FP64 reference's own masks:
// with all queries zero every visible key scores the same, so exp(LSE) of a row is the number of
// keys it sees.
#include <gtest/gtest.h>

#include <cmath>

#include "bench/call_trace.h"
#include "common/test_util.h"

namespace ulysses {
namespace {

using testing::HostTensor;

struct TraceCase {
  std::string name;
  AttentionConfig cfg;
  std::int64_t batch = 1, sq = 8, skv = 0, offset = 0;
  std::vector<std::int32_t> cu;              // varlen (cu_seqlens)
  std::vector<std::int32_t> qb, ql, kb, kl;  // varlen_rows
  bool bottom_right = false;
  double closed_form = -1;  // the count worked out by hand, where there is one
};

void PrintTo(const TraceCase& c, std::ostream* os) { *os << c.name; }

AttentionConfig att(bool causal, int left = -1, int right = -1) {
  return {.num_heads_q = 2,
          .num_heads_kv = 1,
          .head_dim = 4,
          .causal = causal,
          .window_left = left,
          .window_right = right};
}

class VisiblePairs : public ::testing::TestWithParam<TraceCase> {};

INSTANTIATE_TEST_SUITE_P(
    Trace, VisiblePairs,
    ::testing::Values(
        // B * S (S + 1) / 2
        TraceCase{
            .name = "dense_causal", .cfg = att(true), .batch = 2, .sq = 7, .closed_form = 2 * 28},
        TraceCase{.name = "dense_full", .cfg = att(false), .sq = 5, .skv = 9, .closed_form = 45},
        // rows at positions 3..8 of 10 keys: 4 + 5 + ... + 9
        TraceCase{.name = "dense_causal_offset",
                  .cfg = att(true),
                  .sq = 6,
                  .skv = 10,
                  .offset = 3,
                  .closed_form = 39},
        TraceCase{.name = "dense_causal_offset_window",
                  .cfg = att(true, 2),
                  .sq = 6,
                  .skv = 10,
                  .offset = 3},
        TraceCase{.name = "dense_two_sided_window", .cfg = att(false, 2, 1), .sq = 9},
        // 3 * 4 / 2 + 5 * 6 / 2 + 4 * 5 / 2, rows 12 and 13 padding
        TraceCase{.name = "varlen_causal",
                  .cfg = att(true),
                  .sq = 14,
                  .cu = {0, 3, 8, 12},
                  .closed_form = 6 + 15 + 10},
        TraceCase{.name = "varlen_window", .cfg = att(true, 1), .sq = 12, .cu = {0, 5, 12}},
        // per sequence q (kv - q) + q (q + 1) / 2: 4 * 2 + 10 = 18 and 5 * 1 + 15 = 20
        TraceCase{.name = "rows_bottom_right",
                  .cfg = att(true),
                  .sq = 14,
                  .skv = 12,
                  .qb = {0, 6},
                  .ql = {4, 5},
                  .kb = {0, 6},
                  .kl = {6, 6},
                  .bottom_right = true,
                  .closed_form = 38},
        TraceCase{.name = "rows_bottom_right_window",
                  .cfg = att(true, 2),
                  .sq = 14,
                  .skv = 12,
                  .qb = {1, 6},
                  .ql = {3, 5},
                  .kb = {0, 5},
                  .kl = {5, 7},
                  .bottom_right = true},
        TraceCase{.name = "rows_top_left_offset",
                  .cfg = att(true),
                  .sq = 14,
                  .skv = 12,
                  .offset = 2,
                  .qb = {0, 6},
                  .ql = {4, 5},
                  .kb = {1, 7},
                  .kl = {4, 5}}),
    [](const auto& param_info) { return param_info.param.name; });

TEST_P(VisiblePairs, MatchTheReferenceMasks) {
  const TraceCase c = GetParam();
  const bool varlen = !c.cu.empty() || !c.qb.empty();
  const std::int64_t skv = c.skv > 0 ? c.skv : c.sq;
  const DType f64 = DType::kFloat64;
  HostTensor q(f64, {c.batch, c.sq, 2, 4}), o = q, k(f64, {c.batch, skv, 1, 4}), v = k;
  HostTensor lse(DType::kFloat32, {c.batch, 2, c.sq});
  std::mt19937_64 rng(testing::fresh_seed());
  for (std::int64_t i = 0; i < q.numel(); ++i) q.set(i, 0.0);
  for (HostTensor* t : {&k, &v}) testing::fill_uniform(*t, rng);
  for (HostTensor* t : {&o, &lse}) testing::poison(*t);
  LocalProblem p = LocalProblem::unsharded(c.cfg, f64, c.batch, c.sq, varlen);
  p.seqlen_kv = c.skv;
  p.diagonal_offset = c.offset;
  p.varlen_rows = !c.qb.empty();
  p.bottom_right = c.bottom_right;
  const VarlenRows rows{.q_begin = c.qb, .q_len = c.ql, .kv_begin = c.kb, .kv_len = c.kl};
  ASSERT_TRUE(reference_forward(p, {.q = q.view,
                                    .k = k.view,
                                    .v = v.view,
                                    .o = o.view,
                                    .lse = lse.view,
                                    .cu_seqlens = c.cu,
                                    .rows = rows})
                  .is_ok());
  double seen = 0;  // keys seen, summed over rows of head 0 (head 1 sees the same)
  for (std::int64_t b = 0; b < c.batch; ++b) {
    for (std::int64_t i = 0; i < c.sq; ++i) {
      seen += std::round(std::exp(lse.at((b * 2 + 0) * c.sq + i)));
    }
  }
  const double counted = bench::visible_pairs(p, c.cu, rows);
  EXPECT_EQ(counted, seen);
  if (c.closed_form >= 0) {
    EXPECT_EQ(counted, c.closed_form);
  }
  const bench::CallRecord r = bench::describe_call(p, c.cu, rows, true, 3);
  EXPECT_EQ(r.rank, 3);
  EXPECT_EQ(r.flops, 2.5 * 4 * counted * 4 * 2);  // 2.5 (backward) x 4 pairs D H
  EXPECT_EQ(r.pieces, p.varlen_rows ? static_cast<int>(c.qb.size())
                                    : (varlen ? static_cast<int>(c.cu.size()) - 1
                                              : static_cast<int>(c.batch)));
}

// Three steps of the same two calls: each call once, in order, with its shortest time.
TEST(Trace, FastestOfStepsKeepsEachCallsMinimum) {
  std::vector<bench::CallRecord> r(6);
  const double ms[] = {3.0, 9.0, 2.5, 11.0, 4.0, 8.5};
  for (std::size_t i = 0; i < r.size(); ++i) {
    r[i].backward = i % 2 == 1;
    r[i].q_rows = static_cast<std::int64_t>(i % 2);
    r[i].ms = ms[i];
  }
  const std::vector<bench::CallRecord> f = bench::fastest_of_steps(r, 3);
  ASSERT_EQ(f.size(), 2u);
  EXPECT_FALSE(f[0].backward);
  EXPECT_TRUE(f[1].backward);
  EXPECT_EQ(f[0].ms, 2.5);
  EXPECT_EQ(f[1].ms, 8.5);
}

}  // namespace
}  // namespace ulysses
