// The element-wise device kernels' index arithmetic, on the CPU: FastDiv against / and %, every
// planned walk (launches and locate(), the very code the kernels run) visiting each element of its
// views exactly once, paired with the same element of the other view, and pair_rows() (the rows of
// a packed chunk pair's calls under a window, on the host and in the tables kernel) covering each
// visible query-key pair exactly once.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "common/check.h"
#include "common/test_util.h"
#include "kernels/fast_div.h"
#include "kernels/packed_pairs.h"
#include "kernels/row_walk.h"

namespace ulysses::kernels {
namespace {

TEST(FastDiv, MatchesIntegerDivision) {
  std::vector<std::uint32_t> divisors = {1,
                                         2,
                                         3,
                                         5,
                                         7,
                                         8,
                                         10,
                                         16,
                                         100,
                                         127,
                                         128,
                                         255,
                                         256,
                                         641,
                                         1000,
                                         4096,
                                         65535,
                                         65536,
                                         65537,
                                         1u << 31,
                                         (1u << 31) - 1,
                                         (1u << 31) + 1,
                                         0xFFFFFFFFu,
                                         0xFFFFFFFEu};
  std::mt19937_64 rng(testing::fresh_seed());
  for (int i = 0; i < 200; ++i)
    divisors.push_back(static_cast<std::uint32_t>(rng() >> (rng() % 32)) | 1u);
  for (std::uint32_t d : divisors) {
    const FastDiv f(d);
    EXPECT_EQ(f.divisor(), d);
    std::vector<std::uint32_t> ns = {0,     1,           d - 1,       d,           d + 1,
                                     2 * d, 0xFFFFFFFFu, 0xFFFFFFFEu, 0x7FFFFFFFu, 0x80000000u};
    for (int k = 0; k < 2000; ++k) ns.push_back(static_cast<std::uint32_t>(rng()));
    for (int k = 0; k < 200; ++k) ns.push_back(static_cast<std::uint32_t>(rng() % 4096));
    for (std::uint32_t n : ns) {
      std::uint32_t q = 0, r = 0;
      f.divmod(n, q, r);
      ASSERT_EQ(q, n / d) << n << " / " << d;
      ASSERT_EQ(r, n % d) << n << " % " << d;
    }
  }
}

void* at(std::uintptr_t address) { return reinterpret_cast<void*>(address); }

// (dst offset, src offset) in elements of every element of the views.
std::vector<std::pair<std::int64_t, std::int64_t>> naive_pairs(const TensorView& d,
                                                               const TensorView& s) {
  std::vector<std::pair<std::int64_t, std::int64_t>> out;
  const std::int64_t n0 = d.size(0), n1 = d.size(1), n2 = d.size(2), n3 = d.size(3);
  for (std::int64_t a = 0; a < n0; ++a)
    for (std::int64_t b = 0; b < n1; ++b)
      for (std::int64_t c = 0; c < n2; ++c)
        for (std::int64_t e = 0; e < n3; ++e)
          out.emplace_back(d.offset({a, b, c, e}), s.offset({a, b, c, e}));
  std::sort(out.begin(), out.end());
  return out;
}

// The same pairs as the kernels visit them.
std::vector<std::pair<std::int64_t, std::int64_t>> walked_pairs(
    const RowWalk& w, const std::vector<RowWalkLaunch>& launches) {
  std::vector<std::pair<std::int64_t, std::int64_t>> out;
  for (const RowWalkLaunch& l : launches) {
    for (std::uint32_t i = 0; i < l.total; ++i) {
      std::int64_t d = 0, s = 0;
      locate(l, i, d, s);
      for (int j = 0; j < w.vec; ++j) out.emplace_back(d * w.vec + j, s * w.vec + j);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

struct WalkCase {
  const char* name;
  TensorView dst, src;
  std::vector<int> widths;  // as the kernels ask: 16-byte vectors of the wider dtype first
  int expect_vec;
  int expect_outer_dims;
};

std::vector<WalkCase> walk_cases() {
  const auto bf16 = DType::kBFloat16, f32 = DType::kFloat32;
  const std::vector<int> w2 = {8, 4, 2, 1}, w4 = {4, 1}, w4all = {4, 2, 1};
  const auto c = [](std::uintptr_t p, DType t, std::initializer_list<std::int64_t> shape) {
    return TensorView::contiguous(at(p), t, shape);
  };
  const auto s = [](std::uintptr_t p, DType t, std::initializer_list<std::int64_t> shape,
                    std::initializer_list<std::int64_t> strides) {
    return TensorView::strided(at(p), t, shape, strides);
  };
  return {
      // One block of memory: a single row.
      {"contiguous", c(0x1000, bf16, {2, 6, 4, 16}), c(0x9000, bf16, {2, 6, 4, 16}), w2, 8, 0},
      // Ulysses' receive buffer (Q among Q|K|V heads) into a contiguous tensor: rows of H * D.
      {"packed heads", c(0x1000, bf16, {1, 10, 4, 16}),
       s(0x9000, bf16, {1, 10, 4, 16}, {10 * 8 * 16, 8 * 16, 16, 1}), w2, 8, 1},
      // fp32 widened from bf16 rows of every other head: rows of D, two outer dims.
      {"strided heads", c(0x1000, f32, {2, 5, 3, 8}),
       s(0x9000, bf16, {2, 5, 3, 8}, {5 * 6 * 8, 6 * 8, 16, 1}), w4, 4, 3},
      // A base pointer off the 16-byte grid narrows the vectors.
      {"misaligned", c(0x1004, f32, {1, 7, 2, 8}), c(0x9000, bf16, {1, 7, 2, 8}), w4, 1, 0},
      // Rows of D = 6 bf16: no 16-byte vector divides them.
      {"odd rows", s(0x1000, bf16, {1, 9, 2, 6}, {9 * 14, 14, 6, 1}), c(0x9000, bf16, {1, 9, 2, 6}),
       w2, 2, 1},
      // head_dim not contiguous: elements one at a time, four outer dims.
      {"strided d", s(0x1000, f32, {2, 3, 2, 4}, {64, 16, 8, 2}), c(0x9000, f32, {2, 3, 2, 4}),
       w4all, 1, 4},
      // Size-1 dims vanish whatever their strides.
      {"size one", s(0x1000, bf16, {1, 4, 1, 16}, {7, 40, 3, 1}), c(0x9000, bf16, {1, 4, 1, 16}),
       w2, 8, 1},
      // Views of rows from one offset on (zero_tokens_from): a sub-block of one buffer.
      {"row window", s(0x1000 + 3 * 32 * 2, bf16, {1, 5, 2, 16}, {64 * 32, 32, 16, 1}),
       s(0x1000 + 3 * 32 * 2, bf16, {1, 5, 2, 16}, {64 * 32, 32, 16, 1}), w2, 8, 0},
  };
}

TEST(RowWalk, VisitsEveryElementOncePaired) {
  for (const WalkCase& k : walk_cases()) {
    SCOPED_TRACE(k.name);
    const RowWalk w = plan_row_walk(k.dst, &k.src, k.widths);
    EXPECT_EQ(w.vec, k.expect_vec);
    EXPECT_EQ(w.outer_dims, k.expect_outer_dims);
    EXPECT_EQ(w.total() * w.vec, k.dst.numel());
    const auto expected = naive_pairs(k.dst, k.src);
    // One launch, and cut into many (every index of the outermost dim its own launch).
    const std::int64_t per_index =
        w.total() / (w.outer_dims > 0 ? w.outer[static_cast<std::size_t>(w.outer_dims - 1)] : 1);
    for (std::int64_t limit : {kMaxLaunchVectors, per_index}) {
      auto launches = row_walk_launches(w, limit);
      ASSERT_TRUE(launches.is_ok()) << launches.status().to_string();
      for (const RowWalkLaunch& l : *launches) EXPECT_LE(l.total, limit);
      EXPECT_EQ(walked_pairs(w, *launches), expected) << "limit " << limit;
    }
  }
}

TEST(RowWalk, DstAloneAndEmptyViews) {
  const int widths[] = {8, 4, 2, 1};
  const TensorView d =
      TensorView::strided(at(0x2000), DType::kBFloat16, {3, 4, 2, 8}, {4 * 40, 40, 16, 1});
  const RowWalk w = plan_row_walk(d, nullptr, widths);
  EXPECT_EQ(w.vec, 8);
  auto launches = row_walk_launches(w);
  ASSERT_TRUE(launches.is_ok());
  EXPECT_EQ(walked_pairs(w, *launches), naive_pairs(d, d));

  const TensorView empty = TensorView::contiguous(at(0x2000), DType::kBFloat16, {1, 0, 2, 8});
  const RowWalk e = plan_row_walk(empty, nullptr, widths);
  EXPECT_EQ(e.total(), 0);
  auto none = row_walk_launches(e);
  ASSERT_TRUE(none.is_ok());
  EXPECT_TRUE(none->empty());
}

TEST(RowWalk, RefusesWhatOneLaunchCannotIndex) {
  // 64 rows of 64 vectors per index of the outermost dim, against a limit of 1000 vectors.
  const int widths[] = {1};
  const TensorView d =
      TensorView::strided(at(0x2000), DType::kFloat32, {4, 64, 1, 64}, {100000, 1000, 64, 1});
  const RowWalk w = plan_row_walk(d, nullptr, widths);
  ASSERT_EQ(w.outer_dims, 2);
  auto r = row_walk_launches(w, 1000);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(r.status().message().find("4096 vectors"), std::string::npos) << r.status().message();
  auto ok = row_walk_launches(w, 4096 * 2);
  ASSERT_TRUE(ok.is_ok());
  EXPECT_EQ(ok->size(), 2u);
}

// The view rows the pieces' launches visit, in order, and each launch within its limits.
std::vector<std::int64_t> launched_rows(const std::vector<RowPiecesLaunch>& launches,
                                        std::int64_t per_row, std::int64_t limit) {
  std::vector<std::int64_t> out;
  for (const RowPiecesLaunch& l : launches) {
    EXPECT_GE(l.count, 1);
    EXPECT_LE(l.count, kPiecesPerLaunch);
    EXPECT_EQ(l.start[0], 0u);
    for (int i = 0; i < l.count; ++i) EXPECT_LT(l.start[i], l.start[i + 1]) << "piece " << i;
    EXPECT_EQ(std::int64_t{l.total}, std::int64_t{l.start[l.count]} * per_row);
    EXPECT_LE(std::int64_t{l.total}, limit);
    for (std::uint32_t r = 0; r < l.start[l.count]; ++r) out.push_back(piece_row(l, r));
  }
  return out;
}

TEST(RowPieces, LaunchesVisitEveryPieceRowOnceInOrder) {
  const std::uint64_t seed = testing::fresh_seed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  for (int draw = 0; draw < 300; ++draw) {
    // Up to 3 launches' worth of pieces, rows of 1 to 40 vectors, limits that cut pieces.
    const int n = static_cast<int>(rng() % (3 * kPiecesPerLaunch + 2));
    std::vector<std::int32_t> begin, len, expected;
    std::int32_t row = static_cast<std::int32_t>(rng() % 5);
    for (int i = 0; i < n; ++i) {
      const auto l = static_cast<std::int32_t>(rng() % 4 == 0 ? 0 : 1 + rng() % 30);
      begin.push_back(row);
      len.push_back(l);
      for (std::int32_t r = 0; r < l; ++r) expected.push_back(row + r);
      row += l + static_cast<std::int32_t>(rng() % 3 == 0 ? 0 : rng() % 50);
    }
    const std::int64_t per_row = 1 + static_cast<std::int64_t>(rng() % 40);
    const std::int64_t limit =
        draw % 3 == 0 ? kMaxLaunchVectors : per_row * (1 + static_cast<std::int64_t>(rng() % 64));
    SCOPED_TRACE(detail::str_cat("draw ", draw, ": ", n, " pieces, ", per_row,
                                 " vectors a row, limit ", limit));
    auto launches = row_pieces_launches({begin, len}, per_row, limit);
    ASSERT_TRUE(launches.is_ok()) << launches.status().to_string();
    const std::vector<std::int64_t> got = launched_rows(*launches, per_row, limit);
    ASSERT_EQ(got, std::vector<std::int64_t>(expected.begin(), expected.end()));
    // As few launches as the limits allow: each one full but the last (of rows or of pieces).
    for (std::size_t i = 0; i + 1 < launches->size(); ++i) {
      const RowPiecesLaunch& l = (*launches)[i];
      EXPECT_TRUE(l.count == kPiecesPerLaunch || std::int64_t{l.start[l.count]} == limit / per_row)
          << "launch " << i << " of " << launches->size();
    }
  }
}

TEST(RowPieces, RefusesARowPastTheLimitAndTakesNoPieces) {
  const std::int32_t begin[] = {0, 10}, len[] = {5, 5};
  auto r = row_pieces_launches({begin, len}, 100, 64);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(r.status().message().find("100 vectors"), std::string::npos) << r.status().message();
  const std::int32_t zero[] = {0, 0};
  auto none = row_pieces_launches({begin, zero}, 4);
  ASSERT_TRUE(none.is_ok());
  EXPECT_TRUE(none->empty());
}

// plan_piece_walk(): one row's walk plus the row strides reach every element of every row exactly
// as the view's own offsets do, with the widest vector both row strides allow.
TEST(RowPieces, PieceWalkReachesEachRowsElements) {
  const auto bf16 = DType::kBFloat16, f32 = DType::kFloat32;
  const std::vector<int> w2 = {8, 4, 2, 1}, w4 = {4, 1};
  struct Case {
    const char* name;
    TensorView dst, src;
    std::vector<int> widths;
    int expect_vec;
  };
  const Case cases[] = {
      {"fp32 sums += bf16 stage", TensorView::contiguous(at(0x1000), f32, {1, 9, 4, 16}),
       TensorView::contiguous(at(0x9000), bf16, {1, 9, 4, 16}), w4, 4},
      {"Q out of a Q|K|V row", TensorView::contiguous(at(0x1000), bf16, {1, 7, 2, 16}),
       TensorView::strided(at(0x9000), bf16, {1, 7, 2, 16}, {7 * 96, 96, 16, 1}), w2, 8},
      // A row stride of 36 bf16 (72 bytes): no 16- or 8-byte vector lands on every row.
      {"row stride off the grid",
       TensorView::strided(at(0x1000), bf16, {1, 6, 2, 16}, {216, 36, 16, 1}),
       TensorView::contiguous(at(0x9000), bf16, {1, 6, 2, 16}), w2, 4},
      {"strided head_dim", TensorView::strided(at(0x1000), f32, {1, 5, 2, 4}, {80, 16, 8, 2}),
       TensorView::contiguous(at(0x9000), f32, {1, 5, 2, 4}), w4, 1},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.name);
    const PieceWalk w = plan_piece_walk(k.dst, &k.src, k.widths);
    EXPECT_EQ(w.row.vec, k.expect_vec);
    auto rows = row_walk_launches(w.row);
    ASSERT_TRUE(rows.is_ok());
    ASSERT_EQ(rows->size(), 1u);
    const RowWalkLaunch& l = rows->front();
    EXPECT_EQ(std::int64_t{l.total} * w.row.vec, k.dst.size(2) * k.dst.size(3));
    for (std::int64_t r = 0; r < k.dst.size(1); ++r) {
      std::vector<std::pair<std::int64_t, std::int64_t>> got, want;
      for (std::uint32_t j = 0; j < l.total; ++j) {
        std::int64_t d = 0, s = 0;
        locate(l, j, d, s);
        for (int e = 0; e < w.row.vec; ++e) {
          got.emplace_back((d + r * w.dst_row) * w.row.vec + e,
                           (s + r * w.src_row) * w.row.vec + e);
        }
      }
      for (std::int64_t h = 0; h < k.dst.size(2); ++h)
        for (std::int64_t e = 0; e < k.dst.size(3); ++e)
          want.emplace_back(k.dst.offset({0, r, h, e}), k.src.offset({0, r, h, e}));
      std::sort(got.begin(), got.end());
      std::sort(want.begin(), want.end());
      ASSERT_EQ(got, want) << "row " << r;
    }
  }
}

// The two calls of one sequence's pair (rows from `split(part)`: ql query rows from q_start, kl key
// rows from k_start, query 0 at delta positions after key 0, band [lo, hi]) take each visible
// (query, key) pair exactly once and no other, the masked call's mask (offset hi or lo on its own
// rows) agrees with the true positions, rows stay inside the sequence's, and every row of the
// masked call sees a key. Returns the masked call's rows, so that a caller can see it exercised.
template <typename Split>
int expect_pair_split(std::int32_t q_start, std::int32_t k_start, std::int32_t ql, std::int32_t kl,
                      std::int64_t delta, std::int64_t lo, std::int64_t hi, Split&& split) {
  auto visible = [&](std::int64_t i, std::int64_t k) {
    return lo <= i - k + delta && i - k + delta <= hi;
  };
  std::vector<int> cover(static_cast<std::size_t>(ql * kl), 0);
  int masked_rows = 0;
  for (PairPart part : {PairPart::kFull, PairPart::kEdge}) {
    const PairRows r = split(part);
    EXPECT_GE(r.q_begin, q_start);
    EXPECT_GE(r.kv_begin, k_start);
    EXPECT_LE(r.q_begin + r.q_len, q_start + ql);
    EXPECT_LE(r.kv_begin + r.kv_len, k_start + kl);
    EXPECT_EQ(r.q_len == 0, r.kv_len == 0);
    if (r.q_begin < q_start || r.kv_begin < k_start || r.q_begin + r.q_len > q_start + ql ||
        r.kv_begin + r.kv_len > k_start + kl) {
      return masked_rows;  // (the rows below would index outside the sequence's)
    }
    const std::int64_t off = part == PairPart::kFull ? 0 : (delta > 0 ? hi : lo);
    for (std::int32_t i2 = 0; i2 < r.q_len; ++i2) {
      int seen = 0;
      for (std::int32_t k2 = 0; k2 < r.kv_len; ++k2) {
        const std::int64_t i = r.q_begin - q_start + i2, k = r.kv_begin - k_start + k2;
        const std::int64_t x = i2 + off - k2;
        if (part == PairPart::kEdge) {
          EXPECT_EQ(x, i - k + delta);
          if (x < lo || x > hi) continue;
        }
        ++seen;
        EXPECT_TRUE(visible(i, k)) << i << " " << k;
        ++cover[static_cast<std::size_t>(i * kl + k)];
      }
      if (part == PairPart::kEdge) {
        EXPECT_GT(seen, 0) << "row " << i2 << " of the masked call sees no key";
        ++masked_rows;
      }
    }
  }
  for (std::int64_t i = 0; i < ql; ++i) {
    for (std::int64_t k = 0; k < kl; ++k) {
      EXPECT_EQ(cover[static_cast<std::size_t>(i * kl + k)], visible(i, k) ? 1 : 0)
          << i << " " << k;
    }
  }
  return masked_rows;
}

// Bands up to a few rows either side, and unbounded.
std::pair<std::vector<std::int64_t>, std::vector<std::int64_t>> bands(int widest) {
  constexpr std::int64_t kInf = std::int64_t{1} << 40;
  std::vector<std::int64_t> los = {-kInf}, his = {kInf};
  for (int b = 0; b <= widest; ++b) {
    los.push_back(-b);
    his.push_back(b);
  }
  return {los, his};
}

// pair_rows(), per-sequence chunks: every chunk size, real-token counts (padding), chunk distance
// and mask band up to a few rows (expect_pair_split()'s properties).
TEST(PairRows, CoverEveryVisiblePairOnce) {
  const auto [los, his] = bands(11);
  int masked_rows = 0;
  for (std::int32_t c = 1; c <= 6; ++c) {
    for (std::int32_t ql = 0; ql <= c; ++ql) {
      for (std::int32_t kl = 0; kl <= c; ++kl) {
        for (std::int32_t d = -4; d <= 4; ++d) {
          if (d == 0) continue;
          for (std::int64_t lo : los) {
            for (std::int64_t hi : his) {
              SCOPED_TRACE(::testing::Message() << "c " << c << " ql " << ql << " kl " << kl
                                                << " d " << d << " lo " << lo << " hi " << hi);
              const std::int32_t start = 7;
              masked_rows += expect_pair_split(
                  start, start, ql, kl, std::int64_t{d} * c, lo, hi,
                  [&](PairPart part) { return pair_rows(start, c, ql, kl, d, lo, hi, part); });
              if (HasFailure()) return;
            }
          }
        }
      }
    }
  }
  EXPECT_GT(masked_rows, 10000);  // the masked calls were exercised, not only empty
}

// band_rows(), the general form (ring with the packed stream: one sequence's queries in one chunk,
// its keys in another): query and key rows from starts of their own, any distance with every query
// after every key (delta >= kl) or before (delta <= -ql).
TEST(BandRows, CoverEveryVisiblePairOnceFromAnyStarts) {
  const auto [los, his] = bands(13);
  constexpr std::int32_t kMax = 7, q_start = 3, k_start = 11;
  int masked_rows = 0;
  for (std::int32_t ql = 0; ql <= kMax; ++ql) {
    for (std::int32_t kl = 0; kl <= kMax; ++kl) {
      for (std::int64_t delta = -(kMax + 6); delta <= kMax + 6; ++delta) {
        if (delta == 0 || (delta > 0 && delta < kl) || (delta < 0 && delta > -ql)) continue;
        for (std::int64_t lo : los) {
          for (std::int64_t hi : his) {
            SCOPED_TRACE(::testing::Message() << "ql " << ql << " kl " << kl << " delta " << delta
                                              << " lo " << lo << " hi " << hi);
            masked_rows +=
                expect_pair_split(q_start, k_start, ql, kl, delta, lo, hi, [&](PairPart part) {
                  return band_rows(q_start, k_start, ql, kl, delta, lo, hi, part);
                });
            if (HasFailure()) return;
          }
        }
      }
    }
  }
  EXPECT_GT(masked_rows, 10000);
}

}  // namespace
}  // namespace ulysses::kernels
