// ulysses-bench --rounds: a row's efficiency is the median of its efficiencies paired with the
// cp = 1 run of the same round, so that a clock drifting over the sweep cancels in each pair.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "bench/sweep_rounds.h"

namespace ulysses::bench {
namespace {

TEST(BenchRounds, MedianIsTheMiddleValueOrTheMeanOfTheMiddleTwo) {
  EXPECT_EQ(median_of({}), 0.0);
  EXPECT_EQ(median_of({4.0}), 4.0);
  EXPECT_EQ(median_of({9.0, 1.0, 5.0}), 5.0);
  EXPECT_EQ(median_of({9.0, 1.0, 5.0, 2.0}), 3.5);
  EXPECT_EQ(median_of({2.0, 2.0, 7.0, 7.0, 7.0}), 7.0);
}

// A GPU that slows by 10% per round: cp = 1 and the row slow together, and every pair reads the
// same efficiency, while the first round's cp = 1 against the rows' median would read 0.91.
TEST(BenchRounds, ADriftingClockCancelsInEachRoundsPair) {
  const std::vector<double> t1 = {100, 110, 120};
  const std::vector<double> ms = {50, 55, 60};
  const RoundSummary sum = summarize_rounds(t1, ms, 2);
  EXPECT_DOUBLE_EQ(sum.ms, 55);
  ASSERT_EQ(sum.efficiencies.size(), 3u);
  for (double e : sum.efficiencies) EXPECT_DOUBLE_EQ(e, 1.0);
  EXPECT_DOUBLE_EQ(sum.efficiency, 1.0);
  EXPECT_DOUBLE_EQ(sum.efficiency_min, 1.0);
  EXPECT_DOUBLE_EQ(sum.efficiency_max, 1.0);
  EXPECT_LT(t1[0] / (2 * sum.ms), 0.92);  // what an unpaired ratio would have said
}

TEST(BenchRounds, EachRoundsEfficiencyIsItsT1OverCpTimesItsStep) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> t(1.0, 100.0);
  for (int cp : {1, 2, 4, 8}) {
    for (int rounds : {1, 2, 3, 5}) {
      std::vector<double> t1, ms, want;
      for (int r = 0; r < rounds; ++r) {
        t1.push_back(t(rng));
        ms.push_back(t(rng));
        want.push_back(t1.back() / (cp * ms.back()));
      }
      const RoundSummary sum = summarize_rounds(t1, ms, cp);
      ASSERT_EQ(sum.efficiencies.size(), want.size());
      for (std::size_t r = 0; r < want.size(); ++r) EXPECT_DOUBLE_EQ(sum.efficiencies[r], want[r]);
      EXPECT_DOUBLE_EQ(sum.efficiency, median_of(want));
      EXPECT_DOUBLE_EQ(sum.ms, median_of(ms));
      EXPECT_DOUBLE_EQ(sum.efficiency_min, *std::min_element(want.begin(), want.end()));
      EXPECT_DOUBLE_EQ(sum.efficiency_max, *std::max_element(want.begin(), want.end()));
      EXPECT_LE(sum.efficiency_min, sum.efficiency);
      EXPECT_LE(sum.efficiency, sum.efficiency_max);
    }
  }
}

TEST(BenchRounds, RoundsPastTheShorterListAreIgnoredAndNoneGiveZeros) {
  const std::vector<double> t1 = {10, 20, 30};
  const std::vector<double> ms = {5, 10};
  const RoundSummary sum = summarize_rounds(t1, ms, 1);
  ASSERT_EQ(sum.efficiencies.size(), 2u);
  EXPECT_DOUBLE_EQ(sum.efficiency, 2.0);
  EXPECT_DOUBLE_EQ(sum.ms, 7.5);
  const RoundSummary none = summarize_rounds({}, ms, 1);
  EXPECT_TRUE(none.efficiencies.empty());
  EXPECT_EQ(none.ms, 0.0);
  EXPECT_EQ(none.efficiency, 0.0);
}

}  // namespace
}  // namespace ulysses::bench
