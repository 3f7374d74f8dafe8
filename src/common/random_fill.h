// ulysses: random inputs for benchmarks and tests, large ones fast: element i is a function of
// (seed, stream, i) alone (SplitMix64), so every core fills a part and the values do not depend on
// the thread count. One std::mt19937 took ~15 ns per element: ~20 s for 128k tokens' Q, K, V and
// dO, held device time.
#pragma once

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

#include "common/dtype_convert.h"

namespace ulysses::detail {

/// bf16 bits of n values uniform in [-1, 1); `stream` tells tensors of one seed apart.
inline std::vector<std::uint16_t> random_bf16_bits(std::size_t n, std::uint64_t seed,
                                                   std::uint64_t stream) {
  auto mix = [](std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  constexpr std::uint64_t kGolden = 0x9E3779B97F4A7C15ull;
  const std::uint64_t key = mix(seed * kGolden + mix(stream + 1));
  std::vector<std::uint16_t> x(n);
  const std::size_t threads = std::clamp<std::size_t>(std::thread::hardware_concurrency(), 1,
                                                      std::max<std::size_t>(1, n >> 20));
  std::vector<std::thread> pool;
  for (std::size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (std::size_t i = n * t / threads, end = n * (t + 1) / threads; i < end; ++i) {
        const double u = static_cast<double>(mix(key + i * kGolden) >> 11) * 0x1.0p-53;
        x[i] = double_to_bf16_bits(2.0 * u - 1.0);
      }
    });
  }
  for (auto& t : pool) t.join();
  return x;
}

}  // namespace ulysses::detail
