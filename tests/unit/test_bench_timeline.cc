// ulysses-bench --timeline reduces a step's marked spans to kernel, exchange and idle time; its
// "exposed exchange" number is what decides whether head chunks hide the exchanges, so the interval
// arithmetic is checked against counting unit cells on random intervals.
#include <gtest/gtest.h>

#include <random>

#include "bench/step_timeline.h"

namespace ulysses::bench {
namespace {

// Unit cells [c, c + 1) of [0, n) that some interval of `in` covers (integer endpoints).
std::vector<bool> cells(const Intervals& in, int n) {
  std::vector<bool> out(static_cast<std::size_t>(n), false);
  for (const auto& [b, e] : in) {
    for (int c = static_cast<int>(b); c < static_cast<int>(e); ++c) {
      out[static_cast<std::size_t>(c)] = true;
    }
  }
  return out;
}

Intervals random_intervals(std::mt19937& rng, int count, int n) {
  std::uniform_int_distribution<int> at(0, n);
  Intervals out;
  for (int i = 0; i < count; ++i) {
    int b = at(rng), e = at(rng);
    if (i % 5 == 4) {
      e = b;  // empty ones too
    }
    out.emplace_back(std::min(b, e), std::max(b, e));
  }
  return out;
}

TEST(Timeline, CoveredAndOverlapCountWhatCellsSay) {
  std::mt19937 rng(20261204);
  constexpr int kN = 60;
  for (int trial = 0; trial < 300; ++trial) {
    const Intervals a = random_intervals(rng, 1 + trial % 7, kN);
    const Intervals b = random_intervals(rng, 1 + trial % 4, kN);
    const std::vector<bool> ca = cells(a, kN), cb = cells(b, kN);
    double want_a = 0, want_both = 0;
    for (int c = 0; c < kN; ++c) {
      want_a += ca[static_cast<std::size_t>(c)] ? 1 : 0;
      want_both += ca[static_cast<std::size_t>(c)] && cb[static_cast<std::size_t>(c)] ? 1 : 0;
    }
    ASSERT_EQ(covered_ms(a), want_a) << "trial " << trial;
    ASSERT_EQ(overlap_ms(a, b), want_both) << "trial " << trial;
    ASSERT_EQ(overlap_ms(b, a), want_both) << "trial " << trial;
    // Merged: sorted, disjoint, not touching, covering the same cells.
    const Intervals m = merge_intervals(a);
    for (std::size_t i = 0; i < m.size(); ++i) {
      ASSERT_LT(m[i].first, m[i].second);
      if (i > 0) {
        ASSERT_LT(m[i - 1].second, m[i].first);
      }
    }
    ASSERT_EQ(cells(m, kN), ca) << "trial " << trial;
  }
}

TEST(Timeline, SummaryTellsHiddenFromExposedExchanges) {
  // Kernels on two streams overlap in [4, 5]; exchanges at both ends, each 1 ms under a kernel;
  // nothing in [10, 12]. One span runs past the step's end and is clipped.
  const std::vector<TimelineSpan> spans = {
      {.stream = 0, .kernel = true, .what = "fwd", .begin_ms = 1, .end_ms = 5},
      {.stream = 1, .kernel = true, .what = "fwd", .begin_ms = 4, .end_ms = 8},
      {.stream = 2, .kernel = false, .what = "exchange", .begin_ms = 0, .end_ms = 2},
      {.stream = 2, .kernel = false, .what = "exchange", .begin_ms = 7, .end_ms = 10},
      {.stream = 2, .kernel = false, .what = "exchange", .begin_ms = 11.5, .end_ms = 13},
  };
  const TimelineSummary s = summarize_step(spans, 12);
  EXPECT_EQ(s.step_ms, 12);
  EXPECT_EQ(s.kernel_sum_ms, 8);
  EXPECT_EQ(s.kernel_busy_ms, 7);
  EXPECT_EQ(s.exchange_busy_ms, 5.5);     // 2 + 3 + 0.5 (clipped at 12)
  EXPECT_EQ(s.exchange_exposed_ms, 3.5);  // [0, 1], [8, 10], [11.5, 12]
  EXPECT_EQ(s.idle_ms, 1.5);              // [10, 11.5]
}

TEST(Timeline, EmptyStepIsAllIdle) {
  const TimelineSummary s = summarize_step({}, 3);
  EXPECT_EQ(s.kernel_busy_ms, 0);
  EXPECT_EQ(s.exchange_exposed_ms, 0);
  EXPECT_EQ(s.idle_ms, 3);
}

TEST(Warmup, ExtraStepsFillTheRequestedTime) {
  EXPECT_EQ(extra_warmup_steps(0, 7, 3.5), 0);      // --warmup-ms 0: the two fixed steps only
  EXPECT_EQ(extra_warmup_steps(500, 600, 300), 0);  // already long enough
  EXPECT_EQ(extra_warmup_steps(500, 7, 3.5), 141);  // ceil(493 / 3.5)
  EXPECT_EQ(extra_warmup_steps(500, 100, 50), 8);   // exactly 400 more
  EXPECT_EQ(extra_warmup_steps(500, 0, 0), 0);      // no step time measured: none
  EXPECT_EQ(extra_warmup_steps(1e9, 0, 1e-3), kMaxWarmupSteps);
  for (double step :
       {0.2, 1.9, 28.0, 460.0}) {  // the steps added reach the time, one fewer would not
    const int n = extra_warmup_steps(500, 2 * step, step);
    EXPECT_GE(2 * step + n * step, 500 - 1e-9) << step;
    if (n > 0) {
      EXPECT_LT(2 * step + (n - 1) * step, 500) << step;
    }
  }
}

}  // namespace
}  // namespace ulysses::bench
