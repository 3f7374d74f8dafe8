// The largest rank's attention pairs over the mean, all-gather's layout, for ulysses-bench's
// --varlen 8 documents of 128k tokens (its document_offsets(), unit 16 as with --cp 2,4,8) and
// seeds 1-30, as given and after balance_packed_sequences(). Built against the library:
//   g++ -std=c++20 -O2 -Iinclude seed_scan.cc build/libulysses.a -o /tmp/seed_scan
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>

#include "ulysses/sharding.h"
using namespace ulysses;
std::vector<std::int32_t> document_offsets(int n, std::int64_t S, std::int64_t unit,
                                           std::uint64_t seed) {
  const std::int64_t units = S / unit;
  std::mt19937_64 rng(seed);
  std::vector<double> w(n);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  double total = 0;
  for (double& x : w) total += (x = u(rng));
  std::vector<std::int32_t> cu{0};
  std::int64_t left = units - n;
  for (int i = 0; i < n; ++i) {
    std::int64_t extra =
        i + 1 == n ? left : std::min(left, static_cast<std::int64_t>(w[i] / total * (units - n)));
    left -= extra;
    cu.push_back(cu.back() + (1 + extra) * unit);
  }
  return cu;
}
int main() {
  AttentionConfig a{.causal = true};
  for (std::uint64_t seed = 1; seed <= 30; ++seed) {
    auto cu = document_offsets(8, 131072, 16, seed);
    printf("seed %2llu:", (unsigned long long)seed);
    for (int cp : {2, 4, 8}) {
      ParallelConfig p{.strategy = Strategy::kAllGather, .cp = cp};
      auto r = [&](const std::vector<std::int32_t>& c) {
        auto w = *attention_pairs_by_rank(p, a, 131072, c);
        return *std::max_element(w.begin(), w.end()) /
               (std::accumulate(w.begin(), w.end(), 0.0) / cp);
      };
      printf("  cp%d %.3f->%.3f", cp, r(cu),
             r(balance_packed_sequences(p, a, 131072, cu)->cu_seqlens));
    }
    printf("\n");
  }
}
