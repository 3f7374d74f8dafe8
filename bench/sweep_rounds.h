// ulysses-bench --rounds: the cp = 1 run and every row of a sequence length measured R times in
// turn (cp = 1, the rows, cp = 1, the rows, ...), each row's efficiency taken against the cp = 1
// run of its own round. Under a power cap a GPU's clock drifts by a few percent over a sweep
// (docs/PERF.md, "Clocks under the power cap"): a ratio of two runs minutes apart carries that
// drift, a ratio of two runs of one round much less of it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>

namespace ulysses::bench {

/// The median of `values`: the middle one, the mean of the middle two for an even count, 0 for
/// none.
inline double median_of(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

/// One row of a sweep over its rounds.
struct RoundSummary {
  double ms = 0;          // the median of the row's step times
  double efficiency = 0;  // the median of the paired efficiencies below
  double efficiency_min = 0, efficiency_max = 0;
  std::vector<double> efficiencies;  // round r's: t1_ms[r] / (cp ms[r])
};

/// `t1_ms[r]` is round r's cp = 1 step, `ms[r]` the row's step in round r; rounds past the shorter
/// of the two are ignored. A row of cp ranks does cp times less work per rank than cp = 1, so its
/// per-GPU efficiency in a round is t1 / (cp ms).
inline RoundSummary summarize_rounds(std::span<const double> t1_ms, std::span<const double> ms,
                                     int cp) {
  RoundSummary out;
  const std::size_t n = std::min(t1_ms.size(), ms.size());
  if (n == 0) return out;
  for (std::size_t r = 0; r < n; ++r) out.efficiencies.push_back(t1_ms[r] / (cp * ms[r]));
  out.ms = median_of(std::vector<double>(ms.begin(), ms.begin() + static_cast<std::ptrdiff_t>(n)));
  out.efficiency = median_of(out.efficiencies);
  const auto [lo, hi] = std::minmax_element(out.efficiencies.begin(), out.efficiencies.end());
  out.efficiency_min = *lo;
  out.efficiency_max = *hi;
  return out;
}

}  // namespace ulysses::bench
