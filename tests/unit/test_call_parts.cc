// How a kernel call is split into parts that cuDNN's backward addresses correctly
// (attention/call_parts.h), checked with small limits: packed calls into runs of whole sequences
// (hand-made and random row tables: the runs cover every sequence in order, each fits — in
// elements, and in graph rows where a limit on those is given — none could take its next sequence
// too), dense calls into batch entries x KV-head groups (hand-made shapes
// and random ones: the parts tile batch x heads, each fits, and as few as the balanced split
// allows).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "attention/call_parts.h"
#include "common/test_util.h"

namespace ulysses::detail {
namespace {

struct Table {
  std::vector<std::int32_t> q_begin, q_len, kv_begin, kv_len;
};

// Packed from cu_seqlens: queries and keys share the rows.
Table from_cu(const std::vector<std::int32_t>& cu) {
  Table t;
  for (std::size_t i = 0; i + 1 < cu.size(); ++i) {
    t.q_begin.push_back(cu[i]);
    t.q_len.push_back(cu[i + 1] - cu[i]);
  }
  t.kv_begin = t.q_begin;
  t.kv_len = t.q_len;
  return t;
}

Result<std::vector<RaggedGroup>> split(const Table& t, RaggedExtent q, RaggedExtent kv,
                                       std::int64_t limit, std::int64_t max_slots = 0) {
  return ragged_groups(t.q_begin, t.q_len, t.kv_begin, t.kv_len, q, kv, limit, max_slots);
}

bool live(const Table& t, std::size_t i) { return t.q_len[i] > 0 && t.kv_len[i] > 0; }

// Whether sequences [first, last) fit from their own first rows, and those rows.
struct Fit {
  bool fits = true;
  std::int64_t q_row = 0, kv_row = 0;
};
Fit fit(const Table& t, int first, int last, RaggedExtent q, RaggedExtent kv, std::int64_t limit,
        std::int64_t max_slots = 0) {
  Fit f;
  bool any = false;
  std::int64_t q1 = 0, k1 = 0, longest = 0;
  for (int i = first; i < last; ++i) {
    const auto u = static_cast<std::size_t>(i);
    longest = std::max<std::int64_t>({longest, t.q_len[u], t.kv_len[u]});
    if (!live(t, u)) continue;
    f.q_row = any ? std::min<std::int64_t>(f.q_row, t.q_begin[u]) : t.q_begin[u];
    f.kv_row = any ? std::min<std::int64_t>(f.kv_row, t.kv_begin[u]) : t.kv_begin[u];
    q1 = std::max<std::int64_t>(any ? q1 : 0, t.q_begin[u] + t.q_len[u]);
    k1 = std::max<std::int64_t>(any ? k1 : 0, t.kv_begin[u] + t.kv_len[u]);
    any = true;
  }
  if (any) {
    f.fits = (q1 - 1 - f.q_row) * q.row_stride + q.row_last < limit &&
             (k1 - 1 - f.kv_row) * kv.row_stride + kv.row_last < limit;
  }
  // Graph rows: 2^ceil(log2(count)) x max(64, 2^ceil(log2(longest))), spelled out here.
  std::int64_t batch = 1, rows = 64;
  while (batch < last - first) batch *= 2;
  while (rows < longest) rows *= 2;
  if (max_slots > 0 && batch * rows > max_slots) f.fits = false;
  return f;
}

// Every run fits from its rows, the runs tile [0, n) in order, and each run but the last would not
// fit with the next live sequence added (so there are as few as a greedy split allows).
void expect_valid_split(const Table& t, const std::vector<RaggedGroup>& g, RaggedExtent q,
                        RaggedExtent kv, std::int64_t limit, std::int64_t max_slots = 0) {
  const int n = static_cast<int>(t.q_begin.size());
  ASSERT_FALSE(g.empty());
  EXPECT_EQ(g.front().first, 0);
  EXPECT_EQ(g.back().last, n);
  for (std::size_t j = 0; j < g.size(); ++j) {
    SCOPED_TRACE("run " + std::to_string(j));
    if (j > 0) {
      EXPECT_EQ(g[j].first, g[j - 1].last);
    }
    EXPECT_LE(g[j].first, g[j].last);
    const Fit f = fit(t, g[j].first, g[j].last, q, kv, limit, max_slots);
    EXPECT_TRUE(f.fits);
    EXPECT_EQ(g[j].q_row, f.q_row);
    EXPECT_EQ(g[j].kv_row, f.kv_row);
    if (j + 1 < g.size()) {
      // (Without a limit on graph rows, only a sequence with rows can end a run.)
      if (max_slots == 0) {
        EXPECT_TRUE(live(t, static_cast<std::size_t>(g[j].last)))
            << "a run ends before a sequence that bounds nothing";
      }
      EXPECT_FALSE(fit(t, g[j].first, g[j].last + 1, q, kv, limit, max_slots).fits)
          << "run could be longer";
    }
  }
}

TEST(RaggedGroups, WholeCallThatFitsIsOneRun) {
  const Table t = from_cu({0, 3, 7, 9, 15});
  auto g = split(t, {10, 5}, {10, 5}, 1000);
  ASSERT_TRUE(g.is_ok()) << g.status().to_string();
  ASSERT_EQ(g->size(), 1u);
  EXPECT_EQ((*g)[0].first, 0);
  EXPECT_EQ((*g)[0].last, 4);
  EXPECT_EQ((*g)[0].q_row, 0);
  EXPECT_EQ((*g)[0].kv_row, 0);
}

TEST(RaggedGroups, SplitsWhereTheNextSequenceWouldPassTheLimit) {
  // Rows 10 elements apart, 5 more in the last row: 10 rows end at element 95, 11 at 105.
  const Table t = from_cu({0, 3, 7, 9, 15, 19});
  auto g = split(t, {10, 5}, {10, 5}, 100);
  ASSERT_TRUE(g.is_ok()) << g.status().to_string();
  ASSERT_EQ(g->size(), 2u);
  EXPECT_EQ((*g)[0].last, 3);  // rows 0..8
  EXPECT_EQ((*g)[1].first, 3);
  EXPECT_EQ((*g)[1].q_row, 9);  // rows 9..18: 10 rows
  EXPECT_EQ((*g)[1].kv_row, 9);
  expect_valid_split(t, *g, {10, 5}, {10, 5}, 100);
  // One element less and the second run no longer fits whole.
  auto tighter = split(t, {10, 5}, {10, 5}, 95);
  ASSERT_TRUE(tighter.is_ok());
  EXPECT_EQ(tighter->size(), 3u);
  expect_valid_split(t, *tighter, {10, 5}, {10, 5}, 95);
}

TEST(RaggedGroups, KeySideCanBindAlone) {
  // Wide key rows (a fused K|V buffer, say): the key side splits a call the query side would not.
  const Table t = from_cu({0, 4, 8, 12});
  // Keys: 8 rows end at element 750, 12 at 1150; queries: 12 rows at 11.
  auto g = split(t, {1, 0}, {100, 50}, 800);
  ASSERT_TRUE(g.is_ok());
  ASSERT_EQ(g->size(), 2u);
  EXPECT_EQ((*g)[0].last, 2);
  EXPECT_EQ((*g)[1].kv_row, 8);
  expect_valid_split(t, *g, {1, 0}, {100, 50}, 800);
}

TEST(RaggedGroups, SequencesWithoutRowsBoundNothing) {
  // VarlenRows: sequence 1 has no key rows and a far query start; it rides along with its
  // neighbours and moves no run's first rows.
  const Table t{
      .q_begin = {0, 1000, 5}, .q_len = {5, 3, 5}, .kv_begin = {0, 0, 5}, .kv_len = {5, 0, 5}};
  auto g = split(t, {10, 0}, {10, 0}, 100);
  ASSERT_TRUE(g.is_ok());
  ASSERT_EQ(g->size(), 1u);
  expect_valid_split(t, *g, {10, 0}, {10, 0}, 100);
  const Table none{.q_begin = {0, 7}, .q_len = {0, 2}, .kv_begin = {0, 0}, .kv_len = {3, 0}};
  auto h = split(none, {10, 0}, {10, 0}, 1);
  ASSERT_TRUE(h.is_ok());
  ASSERT_EQ(h->size(), 1u);
  EXPECT_EQ((*h)[0].q_row, 0);
  EXPECT_EQ((*h)[0].last, 2);
  auto empty = split(Table{}, {10, 0}, {10, 0}, 1);
  ASSERT_TRUE(empty.is_ok());
  ASSERT_EQ(empty->size(), 1u);
  EXPECT_EQ((*empty)[0].last, 0);
}

TEST(RaggedGroups, SequenceThatCannotFitAloneIsNamed) {
  const Table t = from_cu({0, 3, 20, 22});
  auto g = split(t, {10, 5}, {10, 5}, 100);
  ASSERT_FALSE(g.is_ok());
  EXPECT_EQ(g.status().code(), StatusCode::kInvalidArgument);
  const std::string m = g.status().message();
  EXPECT_NE(m.find("sequence 1"), std::string::npos) << m;
  EXPECT_NE(m.find("rows 3..19"), std::string::npos) << m;
  EXPECT_NE(m.find("at most 100"), std::string::npos) << m;
}

TEST(RaggedGroups, GraphRowsBoundRunsToo) {
  // 64 graph rows per sequence up to 64 rows, 128 for 65..128: a run of 4 short sequences spans
  // 4 x 64 = 256, adding the 100-row fifth 8 x 128.
  const Table t = from_cu({0, 10, 20, 30, 40, 140, 150});
  auto whole = split(t, {1, 0}, {1, 0}, 1 << 20);
  ASSERT_TRUE(whole.is_ok());
  EXPECT_EQ(whole->size(), 1u);
  auto g = split(t, {1, 0}, {1, 0}, 1 << 20, 256);
  ASSERT_TRUE(g.is_ok()) << g.status().to_string();
  ASSERT_EQ(g->size(), 2u);
  EXPECT_EQ((*g)[0].last, 4);
  EXPECT_EQ((*g)[1].first, 4);
  EXPECT_EQ((*g)[1].q_row, 40);
  expect_valid_split(t, *g, {1, 0}, {1, 0}, 1 << 20, 256);
  // Sequences without rows count towards the batch as well: two sequences per run here.
  const Table empties = from_cu({0, 50, 50, 50, 50, 60});
  auto e = split(empties, {1, 0}, {1, 0}, 1 << 20, 128);
  ASSERT_TRUE(e.is_ok());
  ASSERT_EQ(e->size(), 3u);
  EXPECT_EQ((*e)[0].last, 2);
  EXPECT_EQ((*e)[1].last, 4);
  expect_valid_split(empties, *e, {1, 0}, {1, 0}, 1 << 20, 128);
  // A sequence wider than the limit alone is named.
  auto wide = split(t, {1, 0}, {1, 0}, 1 << 20, 64);
  ASSERT_FALSE(wide.is_ok());
  EXPECT_NE(wide.status().message().find("sequence 4 (100 rows)"), std::string::npos)
      << wide.status().message();
  EXPECT_EQ(packed_slots(1, 1), 64);
  EXPECT_EQ(packed_slots(3, 65), 4 * 128);
}

TEST(RaggedGroups, RandomTablesSplitValidly) {
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int trial = 0; trial < 500; ++trial) {
    SCOPED_TRACE("trial " + std::to_string(trial));
    const int n = pick(0, 12);
    Table t;
    if (trial % 2 == 0) {  // cu_seqlens, empty sequences included
      std::vector<std::int32_t> cu = {0};
      for (int i = 0; i < n; ++i) cu.push_back(cu.back() + pick(0, 20));
      t = from_cu(cu);
    } else {  // VarlenRows: gaps, overlaps, sides without rows
      std::int32_t q = 0, k = 0;
      for (int i = 0; i < n; ++i) {
        q += pick(-3, 10);
        k += pick(-3, 10);
        q = std::max(q, 0);
        k = std::max(k, 0);
        t.q_begin.push_back(q);
        t.kv_begin.push_back(k);
        t.q_len.push_back(pick(0, 4) == 0 ? 0 : pick(1, 15));
        t.kv_len.push_back(pick(0, 4) == 0 ? 0 : pick(1, 15));
      }
    }
    const RaggedExtent q{pick(1, 12), pick(0, 8)}, kv{pick(1, 12), pick(0, 8)};
    const std::int64_t limit = pick(1, 400);
    // Every third trial also bounds graph rows (64 per short sequence: 64 .. 1024).
    const std::int64_t max_slots = trial % 3 == 0 ? std::int64_t{64} << pick(0, 4) : 0;
    auto g = split(t, q, kv, limit, max_slots);
    bool each_fits = true;  // every sequence fits alone
    for (int i = 0; i < n; ++i)
      each_fits = each_fits && fit(t, i, i + 1, q, kv, limit, max_slots).fits;
    ASSERT_EQ(g.is_ok(), each_fits) << (g.is_ok() ? std::string("split") : g.status().to_string());
    if (g.is_ok()) {
      expect_valid_split(t, *g, q, kv, limit, max_slots);
    }
    if (HasFatalFailure()) return;
  }
}

// Every (entry, KV head) in exactly one part; each part's compact K, O, dO (one entry, and all of
// its entries) within the limit; parts balanced over the heads (sizes differ by at most one).
void expect_valid_parts(const std::vector<DensePart>& parts, std::int64_t B, std::int64_t Sq,
                        std::int64_t Skv, std::int64_t hq, std::int64_t hkv, std::int64_t D,
                        std::int64_t limit) {
  std::vector<int> seen(static_cast<std::size_t>(B * hkv), 0);
  std::int64_t smallest = hkv, largest = 0;
  for (const DensePart& p : parts) {
    ASSERT_GE(p.b0, 0);
    ASSERT_LE(p.b0 + p.nb, B);
    ASSERT_GE(p.kv0, 0);
    ASSERT_LE(p.kv0 + p.nkv, hkv);
    ASSERT_GT(p.nb, 0);
    ASSERT_GT(p.nkv, 0);
    for (std::int64_t b = p.b0; b < p.b0 + p.nb; ++b) {
      for (std::int64_t h = p.kv0; h < p.kv0 + p.nkv; ++h)
        ++seen[static_cast<std::size_t>(b * hkv + h)];
    }
    const std::int64_t entry = std::max(Skv * p.nkv, Sq * p.nkv * (hq / hkv)) * D;
    EXPECT_LE(p.nb * entry, limit) << "part at entry " << p.b0 << ", KV head " << p.kv0;
    smallest = std::min(smallest, p.nkv);
    largest = std::max(largest, p.nkv);
  }
  EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }))
      << "an (entry, KV head) in no part or in two";
  EXPECT_LE(largest - smallest, 1) << "unbalanced head groups";
}

TEST(DenseParts, CallWhoseViewsFitIsWhole) {
  auto p = dense_parts(4, 1 << 20, 1 << 20, 32, 8, 128, true, 1000);
  ASSERT_TRUE(p.is_ok());
  ASSERT_EQ(p->size(), 1u);
  EXPECT_EQ((*p)[0].nb, 4);
  EXPECT_EQ((*p)[0].nkv, 8);
}

TEST(DenseParts, CompactEntriesThatFitAreOnePart) {
  // Views reach past the limit (long row strides) but the compact tensors do not: one part,
  // staged by the caller.
  auto p = dense_parts(2, 100, 100, 8, 2, 4, false, 100 * 8 * 4 * 2);
  ASSERT_TRUE(p.is_ok());
  ASSERT_EQ(p->size(), 1u);
  EXPECT_EQ((*p)[0].nb, 2);
  EXPECT_EQ((*p)[0].nkv, 2);
}

TEST(DenseParts, SplitsBatchEntriesFirst) {
  // The test_gpu_cudnn shape: 2 x 40000 rows x 256 query heads (64 KV) x 128 past 2^31, one
  // entry under it: two parts of one entry, every head.
  const std::int64_t limit = std::int64_t{1} << 31;
  auto p = dense_parts(2, 40000, 40000, 256, 64, 128, false, limit);
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  ASSERT_EQ(p->size(), 2u);
  EXPECT_EQ((*p)[1].b0, 1);
  EXPECT_EQ((*p)[1].nkv, 64);
  expect_valid_parts(*p, 2, 40000, 40000, 256, 64, 128, limit);
  // One KV head of one entry fits (10 of 25 elements), of all three entries not: entries split.
  auto q = dense_parts(3, 10, 10, 8, 8, 1, false, 25);
  ASSERT_TRUE(q.is_ok()) << q.status().to_string();
  EXPECT_EQ(q->size(), 12u);  // 3 entries x 4 parts of 2 KV heads (20 of 25)
  expect_valid_parts(*q, 3, 10, 10, 8, 8, 1, 25);
}

TEST(DenseParts, SplitsHeadsWhenOneEntryDoesNotFit) {
  // 70000 rows x 256 x 128 = 2.3e9: two parts of 32 KV heads (128 query heads).
  const std::int64_t limit = std::int64_t{1} << 31;
  auto p = dense_parts(1, 70000, 70000, 256, 64, 128, false, limit);
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  ASSERT_EQ(p->size(), 2u);
  EXPECT_EQ((*p)[0].nkv, 32);
  EXPECT_EQ((*p)[1].kv0, 32);
  expect_valid_parts(*p, 1, 70000, 70000, 256, 64, 128, limit);
  // 8 KV heads of which 5 would fit: two parts of 4, not 5 + 3.
  auto q = dense_parts(3, 10, 10, 8, 8, 1, false, 50);
  ASSERT_TRUE(q.is_ok());
  ASSERT_EQ(q->size(), 6u);  // 3 entries (one fits at a time with 4 heads: 40 of 50) x 2
  EXPECT_EQ((*q)[0].nkv, 4);
  expect_valid_parts(*q, 3, 10, 10, 8, 8, 1, 50);
}

TEST(DenseParts, KeysLongerThanQueriesBindToo) {
  auto p = dense_parts(1, 10, 1000, 4, 4, 1, false, 2500);  // K: 1000 per head
  ASSERT_TRUE(p.is_ok());
  EXPECT_EQ(p->size(), 2u);
  expect_valid_parts(*p, 1, 10, 1000, 4, 4, 1, 2500);
}

TEST(DenseParts, OneHeadTooLargeIsNamed) {
  auto p = dense_parts(1, 3000, 3000, 8, 2, 1, false, 10000);  // 3000 x 4 query heads
  ASSERT_FALSE(p.is_ok());
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  const std::string m = p.status().message();
  EXPECT_NE(m.find("12000 elements"), std::string::npos) << m;
  EXPECT_NE(m.find("3000 query rows"), std::string::npos) << m;
}

TEST(DenseParts, RandomShapesSplitValidly) {
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int trial = 0; trial < 500; ++trial) {
    SCOPED_TRACE("trial " + std::to_string(trial));
    const std::int64_t B = pick(1, 6), hkv = pick(1, 9), hq = hkv * pick(1, 4), D = pick(1, 4),
                       Sq = pick(1, 50), Skv = pick(0, 1) ? Sq : pick(1, 80);
    const std::int64_t limit = pick(1, 3000);
    auto p = dense_parts(B, Sq, Skv, hq, hkv, D, false, limit);
    const std::int64_t one_head = std::max(Skv, Sq * (hq / hkv)) * D;
    ASSERT_EQ(p.is_ok(), one_head <= limit)
        << (p.is_ok() ? std::string("split") : p.status().to_string());
    if (!p.is_ok()) continue;
    expect_valid_parts(*p, B, Sq, Skv, hq, hkv, D, limit);
    if (HasFatalFailure()) return;
    // As few head groups as the largest that fits allows, and entries per part as many as fit.
    std::int64_t g = hkv;
    while (std::max(Skv, Sq * (hq / hkv)) * g * D > limit) --g;
    const std::int64_t head_parts = (hkv + g - 1) / g;
    const std::int64_t widest = (hkv + head_parts - 1) / head_parts;
    const std::int64_t nb = std::min(B, limit / (std::max(Skv, Sq * (hq / hkv)) * widest * D));
    EXPECT_EQ(static_cast<std::int64_t>(p->size()), head_parts * ((B + nb - 1) / nb));
  }
}

}  // namespace
}  // namespace ulysses::detail
