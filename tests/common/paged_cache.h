// Test helper: a decode cache moved into pages (DecodeConfig::page_size), as a serving engine's
// pool would hold it, for checks that a paged step gives the unpaged step's bits.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <numeric>
#include <random>
#include <vector>

#include "common/test_util.h"

namespace ulysses::testing {

/// A pool of pages and its page table [batch, pages per sequence], row-major.
struct PagedCache {
  HostTensor k, v;
  std::vector<std::int32_t> table;
};

/// Cache k, v [B, cap, Hkv, *] in pages of `page` rows: every sequence's pages at shuffled places
/// of a pool with two spare pages, NaN like every row past cap (cap rounded up to whole pages).
/// Table entries of the pages for which holds(b, p) is false are -1 (the plan must not read them).
inline PagedCache page_out(const HostTensor& k, const HostTensor& v, std::int64_t page,
                           const std::function<bool(std::int64_t, std::int64_t)>& holds,
                           std::mt19937_64& rng) {
  const std::int64_t B = k.view.size(0), cap = k.view.size(1), H = k.view.size(2);
  const std::int64_t n = (cap + page - 1) / page, pool = B * n + 2;
  std::vector<std::int32_t> where(static_cast<std::size_t>(pool));
  std::iota(where.begin(), where.end(), 0);
  std::shuffle(where.begin(), where.end(), rng);
  PagedCache out{.k = HostTensor(k.view.dtype, {pool, page, H, k.view.size(3)}),
                 .v = HostTensor(v.view.dtype, {pool, page, H, v.view.size(3)}),
                 .table = std::vector<std::int32_t>(static_cast<std::size_t>(B * n), -1)};
  poison(out.k);
  poison(out.v);
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t p = 0; p < n; ++p) {
      const std::int32_t dst = where[static_cast<std::size_t>(b * n + p)];
      for (std::int64_t r = 0; r < page && p * page + r < cap; ++r) {
        for (std::int64_t h = 0; h < H; ++h) {
          for (const auto& [from, to] : {std::pair{&k, &out.k}, {&v, &out.v}}) {
            for (std::int64_t d = 0; d < from->view.size(3); ++d) {
              to->set(to->view.offset({dst, r, h, d}),
                      from->at(from->view.offset({b, p * page + r, h, d})));
            }
          }
        }
      }
      if (holds(b, p)) out.table[static_cast<std::size_t>(b * n + p)] = dst;
    }
  }
  return out;
}

}  // namespace ulysses::testing
