// Bad input at random, on host loopback ranks: it must get a named refusal, never a crash, an
// overflow or a read outside the caller's views (CI runs these under ASan and UBSan too). A printed
// seed replays a failure.
//  - ConfigFuzz: configurations, most near valid, some with one field pushed to an extreme (zero,
//    negative, past int32, past what int64 size arithmetic holds, not an enum value), through
//    DistributedAttention::create() and DistributedDecode::create(). Such a fuzz found the
//    plans' and DecodeConfig's size products overflowing before they refused.
//  - DecodeArgsFuzz: decode steps with layouts pushed off (DistributedDecode::forward()).
//  - CallArgsFuzz: forward and backward calls with one view or buffer spoiled.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "common/call_fixture.h"
#include "common/check.h"
#include "common/test_util.h"
#include "ulysses/decode.h"

namespace ulysses {
namespace {

using testing::HostTensor;

constexpr int kIntMax = std::numeric_limits<int>::max();
constexpr std::int64_t kInt64Max = std::numeric_limits<std::int64_t>::max();

class Draw {
 public:
  explicit Draw(std::uint64_t seed) : g_(seed) {}
  bool coin(int one_in) { return g_() % static_cast<unsigned>(one_in) == 0; }
  template <typename T>
  T any(std::initializer_list<T> v) {
    return *(v.begin() + g_() % v.size());
  }
  // Mostly one of `valid`, one time in 15 one of `extreme`.
  template <typename T>
  T field(std::initializer_list<T> valid, std::initializer_list<T> extreme) {
    return coin(15) ? any(extreme) : any(valid);
  }

 private:
  std::mt19937_64 g_;
};

AttentionConfig attention_of(Draw& d) {
  AttentionConfig a;
  a.num_heads_q = d.field<int>({1, 2, 3, 4, 8, 12, 32, 64}, {0, -1, 65537, 1 << 20, kIntMax});
  a.num_heads_kv = d.field<int>({1, 2, 4}, {0, -1, 3, kIntMax});
  if (!d.coin(4)) a.num_heads_kv = std::max(1, a.num_heads_q / d.any<int>({1, 2, 4, 8}));
  a.head_dim = d.field<int>({1, 4, 8, 16}, {0, -1, 192, 256, 257, kIntMax});
  a.head_dim_v = d.field<int>({0, 0, 0, 4, 8}, {-1, 257, kIntMax});
  a.causal = d.coin(2);
  a.window_left = d.field<int>({-1, -1, 0, 1, 5}, {-2, kIntMax, std::numeric_limits<int>::min()});
  a.window_right = d.field<int>({-1, -1, 0, 3}, {-2, kIntMax, std::numeric_limits<int>::min()});
  if (a.causal && !d.coin(8)) a.window_right = -1;
  a.sinks = d.coin(2);
  if (d.coin(50)) a.softmax_scale = d.any<float>({0.f, -1.f, NAN, INFINITY});
  return a;
}

PlanConfig plan_of(Draw& d, int P) {
  PlanConfig c;
  c.attention = attention_of(d);
  c.parallel.strategy = d.field<Strategy>(
      {Strategy::kUlysses, Strategy::kRing, Strategy::kHybrid, Strategy::kAllGather},
      {static_cast<Strategy>(7)});
  c.parallel.cp = d.coin(20) ? d.any<int>({0, -1, P + 1}) : P;
  const bool hybrid = c.parallel.strategy == Strategy::kHybrid;
  c.parallel.ulysses_degree = hybrid ? d.field<int>({1, 2, 4, std::max(1, P / 2)}, {0, 3, -1})
                                     : d.field<int>({0}, {1, 2, -1});
  c.parallel.packed_sharding =
      d.field<PackedSharding>({PackedSharding::kDefault, PackedSharding::kDefault,
                               PackedSharding::kStream, PackedSharding::kPerSequence},
                              {static_cast<PackedSharding>(9)});
  c.layout = d.field<Layout>({Layout::kBSHD, Layout::kTHD}, {static_cast<Layout>(9)});
  c.dtype = d.field<DType>({DType::kFloat32, DType::kFloat64, DType::kBFloat16},
                           {DType::kFloat16, static_cast<DType>(99)});
  c.batch = d.field<std::int64_t>({1, 1, 2, 3, 1 << 10},
                                  {0, -1, std::int64_t{1} << 31, std::int64_t{1} << 40, kInt64Max});
  if (c.layout == Layout::kTHD && !d.coin(4)) c.batch = 1;
  c.seqlen = d.field<std::int64_t>(
      {8, 16, 48, 96, 1024, 1 << 20, std::int64_t{1} << 30, std::int64_t{3} << 33},
      {0, -1, 1, 7, std::int64_t{1} << 40, std::int64_t{1} << 62, kInt64Max});
  c.training = d.coin(2);
  c.overlap_chunks = d.field<int>({1, 1, 2, 3}, {0, -1, 8, kIntMax});
  c.backward_keeps_saved = d.coin(2);
  c.saved_activations =
      d.field<SavedActivations>({SavedActivations::kHeadSharded, SavedActivations::kLseOnly},
                                {static_cast<SavedActivations>(7)});
  c.chunks_in_flight = d.field<int>({1, 2, 2}, {0, 3, -1});
  c.payload = d.field<Payload>({Payload::kNative, Payload::kNative, Payload::kFp8},
                               {static_cast<Payload>(7)});
  return c;
}

DecodeConfig decode_of(Draw& d, int P) {
  DecodeConfig c;
  c.attention = attention_of(d);
  c.cp = d.coin(20) ? d.any<int>({0, -1, P + 1}) : P;
  c.dtype = d.field<DType>({DType::kFloat32, DType::kFloat64, DType::kBFloat16},
                           {DType::kFloat8E4M3, static_cast<DType>(99)});
  c.batch = d.field<std::int64_t>({1, 2, 8}, {0, -1, std::int64_t{1} << 40, kInt64Max});
  c.query_tokens = d.field<std::int64_t>({1, 1, 4}, {0, -1, 1 << 20, kInt64Max});
  c.cache_rows =
      d.field<std::int64_t>({16, 1000, 4096, std::int64_t{1} << 31},
                            {0, -1, 1, std::int64_t{1} << 40, std::int64_t{1} << 62, kInt64Max});
  c.max_segments = d.field<int>({1, 2, 3}, {0, -1, kIntMax});
  c.min_split_rows = d.field<std::int64_t>({1, 16, 1024}, {0, -1, kInt64Max});
  c.max_splits = d.field<int>({1, 16}, {0, -1, kIntMax});
  c.split_kernel =
      d.field<DecodeKernel>({DecodeKernel::kAuto, DecodeKernel::kLocal, DecodeKernel::kBuiltIn},
                            {static_cast<DecodeKernel>(7)});
  c.page_size =
      d.field<std::int64_t>({0, 0, 0, 1, 8, 16}, {-1, 3, std::int64_t{1} << 40, kInt64Max});
  c.device_layout = d.coin(4);
  if (c.device_layout && c.split_kernel == DecodeKernel::kLocal && !d.coin(8)) {
    c.split_kernel = DecodeKernel::kAuto;
  }
  return c;
}

// Every rank's verdict the same; a refusal an argument error or kUnsupported naming its API.
void expect_one_verdict(const std::vector<Status>& st) {
  ASSERT_FALSE(st.empty());
  for (std::size_t r = 0; r < st.size(); ++r) {
    EXPECT_EQ(st[r].code(), st[0].code())
        << "rank " << r << ": " << st[r].to_string() << " vs " << st[0].to_string();
    EXPECT_EQ(st[r].message(), st[0].message()) << "rank " << r;
    if (!st[r].is_ok()) {
      EXPECT_TRUE(st[r].code() == StatusCode::kInvalidArgument ||
                  st[r].code() == StatusCode::kUnsupported)
          << st[r].to_string();
      EXPECT_EQ(st[r].message().rfind("ulysses::", 0), 0u) << st[r].message();
    }
  }
}

TEST(ConfigFuzz, EveryRankGivesOneNamedVerdict) {
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Draw d(seed);
  auto kernel = make_reference_attention();
  int plans = 0, refused = 0;
  std::atomic<std::size_t> sizes{0};  // (read, so that the size queries run)
  for (int i = 0; i < 5000 && !::testing::Test::HasFailure(); ++i) {
    SCOPED_TRACE("draw " + std::to_string(i));
    const int P = d.any<int>({1, 2, 3, 4, 8});
    const bool decode = d.coin(3);
    const PlanConfig plan_config = plan_of(d, P);
    const DecodeConfig decode_config = decode_of(d, P);
    const std::vector<Status> st = testing::run_ranks(P, [&](int, Communicator& comm) -> Status {
      if (decode) {
        auto plan = DistributedDecode::create(decode_config, comm, *kernel);
        if (!plan.is_ok()) return plan.status();
        sizes += (*plan)->workspace_bytes();
        return Status::ok();
      }
      auto plan = DistributedAttention::create(plan_config, comm, *kernel);
      if (!plan.is_ok()) return plan.status();
      sizes += (*plan)->workspace_bytes() + (*plan)->saved_bytes() + (*plan)->held_bytes();
      return Status::ok();
    });
    expect_one_verdict(st);
    (st[0].is_ok() ? plans : refused) += 1;
  }
  std::cout << "seed " << seed << ": " << plans << " plans made, " << refused << " refused ("
            << sizes.load() % 1000 << ")\n";
  // The draws are near valid: both verdicts come up (so neither side is skipped).
  EXPECT_GT(plans, 100);
  EXPECT_GT(refused, 100);
}

// Decode steps on one host rank with layouts that are often wrong: each sequence's segments drawn
// valid, then sometimes one field pushed off (a row, a length, a position, an offset, one segment
// too many, a negative query position, a page-table entry outside the pool, a short table). Only
// the rows of the segments hold values, every other cache row is NaN: forward() must refuse by name
// (kInvalidArgument, its API) or give O and LSE without a NaN (so it read no row outside the
// segments; under CI's ASan build nothing outside the buffers either).
TEST(DecodeArgsFuzz, RefusedByNameOrReadsOnlyTheSegments) {
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 g(seed);
  auto U = [&](std::int64_t lo, std::int64_t hi) {  // in [lo, hi]
    return lo + static_cast<std::int64_t>(g() % static_cast<std::uint64_t>(hi - lo + 1));
  };
  auto value = [&] { return static_cast<float>(U(0, 999)) / 500.0f - 1.0f; };
  auto comms = create_loopback_group(1);
  ASSERT_TRUE(comms.is_ok());
  Communicator& comm = *(*comms)[0];
  auto kernel = make_reference_attention();
  constexpr int Hq = 4, Hkv = 2, D = 8;
  int computed = 0, refused = 0;
  for (int draw = 0; draw < 3000 && !::testing::Test::HasFailure(); ++draw) {
    SCOPED_TRACE("draw " + std::to_string(draw));
    const std::int64_t B = U(1, 3), T = U(1, 3), page = U(0, 1) ? 0 : 4;
    const std::int64_t C = page ? 4 * U(2, 5) : U(8, 20);
    const DecodeConfig c{
        .attention = {.num_heads_q = Hq,
                      .num_heads_kv = Hkv,
                      .head_dim = D,
                      .causal = U(0, 1) == 1,
                      .window_left = U(0, 2) ? -1 : static_cast<int>(U(0, 10)),
                      .sinks = U(0, 3) == 0},
        .cp = 1,
        .dtype = DType::kFloat32,
        .batch = B,
        .query_tokens = T,
        .cache_rows = C,
        .max_segments = static_cast<int>(U(1, 3)),
        .min_split_rows = U(1, 8),
        .max_splits = static_cast<int>(U(1, 4)),
        .split_kernel = page || U(0, 1) ? DecodeKernel::kBuiltIn : DecodeKernel::kLocal,
        .page_size = page};
    auto plan = DistributedDecode::create(c, comm, *kernel);
    ASSERT_TRUE(plan.is_ok()) << plan.status().to_string();

    // A valid layout per sequence (or one for all), then at most one field pushed off.
    std::vector<CacheSegment> segs;
    std::vector<std::int64_t> offsets{0}, qpos;
    const bool per_sequence = B > 1 && U(0, 1) == 1;
    for (std::int64_t b = 0; b < (per_sequence ? B : 1); ++b) {
      std::int64_t row = 0, pos = 0;
      for (std::int64_t i = 0, n = U(0, c.max_segments); i < n; ++i) {
        row += U(0, 3);
        if (row >= C) break;
        const std::int64_t rows = U(1, C - row);
        pos += U(0, 5);
        segs.push_back({.row = row, .rows = rows, .position = pos});
        row += rows;
        pos += rows;
      }
      offsets.push_back(static_cast<std::int64_t>(segs.size()));
      qpos.push_back(pos + U(-1, 3));
    }
    std::int64_t query_position = qpos[0];
    const std::int64_t pages = page ? U(1, B * C / page + 2) : 0;
    std::vector<std::int32_t> table;
    if (page) {
      std::vector<std::int32_t> pool(static_cast<std::size_t>(pages));
      std::iota(pool.begin(), pool.end(), 0);
      std::shuffle(pool.begin(), pool.end(), g);
      for (std::int64_t i = 0; i < B * (C / page); ++i) {
        table.push_back(pool[static_cast<std::size_t>(i % pages)]);
      }
    }
    auto any_of = [&](auto& v) -> auto& { return v[static_cast<std::size_t>(U(0, v.size() - 1))]; };
    switch (U(0, 9)) {
      case 0:
        if (!segs.empty()) any_of(segs).row = U(-3, C + 3);
        break;
      case 1:
        if (!segs.empty()) any_of(segs).rows = U(-2, C + 3);
        break;
      case 2:
        if (!segs.empty()) any_of(segs).position = U(-3, 50);
        break;
      case 3:
        if (per_sequence) any_of(offsets) = U(-1, segs.size() + 1);
        break;
      case 4:
        segs.push_back({.row = U(-1, C), .rows = U(-1, C), .position = U(-1, 40)});
        break;
      case 5:
        query_position = U(-3, 3);
        break;
      case 6:
        if (per_sequence) any_of(qpos) = U(-3, 3);
        break;
      case 7:
        if (page) any_of(table) = static_cast<std::int32_t>(U(-2, pages + 1));
        break;
      case 8:
        if (table.size() > 1) table.pop_back();
        break;
      default:
        break;
    }

    // NaN everywhere but the rows of the segments (those inside the buffers).
    const std::int64_t cache_elements = (page ? pages * page : B * C) * Hkv * D;
    std::vector<float> k(static_cast<std::size_t>(cache_elements), NAN), v = k;
    auto fill_row = [&](std::int64_t b, std::int64_t r) {
      if (r < 0 || r >= C) return;
      std::int64_t row = b * C + r;
      if (page) {
        const std::int64_t e = b * (C / page) + r / page;
        if (e >= static_cast<std::int64_t>(table.size())) return;
        const std::int32_t p = table[static_cast<std::size_t>(e)];
        if (p < 0 || p >= pages) return;
        row = p * page + r % page;
      }
      for (std::int64_t i = row * Hkv * D; i < (row + 1) * Hkv * D; ++i) {
        k[static_cast<std::size_t>(i)] = value();
        v[static_cast<std::size_t>(i)] = value();
      }
    };
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t n = static_cast<std::int64_t>(segs.size());
      const std::int64_t lo = per_sequence ? std::clamp<std::int64_t>(offsets[b], 0, n) : 0;
      const std::int64_t hi = per_sequence ? std::clamp<std::int64_t>(offsets[b + 1], 0, n) : n;
      for (std::int64_t i = lo; i < hi; ++i) {
        const CacheSegment& s = segs[static_cast<std::size_t>(i)];
        for (std::int64_t r = s.row; r < s.row + s.rows; ++r) fill_row(b, r);
      }
    }
    std::vector<float> q(static_cast<std::size_t>(B * T * Hq * D)), sinks(Hq);
    for (float& x : q) x = value();
    for (float& x : sinks) x = value();
    std::vector<float> o(q.size(), NAN), lse(static_cast<std::size_t>(B * Hq * T), NAN);
    std::vector<char> workspace((*plan)->workspace_bytes());
    const std::int64_t cache_rows = page ? page : C, sequences = page ? pages : B;
    DecodeArgs a{.q = TensorView::contiguous(q.data(), DType::kFloat32, {B, T, Hq, D}),
                 .k_cache = TensorView::contiguous(k.data(), DType::kFloat32,
                                                   {sequences, cache_rows, Hkv, D}),
                 .v_cache = TensorView::contiguous(v.data(), DType::kFloat32,
                                                   {sequences, cache_rows, Hkv, D}),
                 .page_table = table,
                 .segments = segs,
                 .query_position = query_position,
                 .o = TensorView::contiguous(o.data(), DType::kFloat32, {B, T, Hq, D}),
                 .lse = TensorView::contiguous(lse.data(), DType::kFloat32, {B, Hq, T}),
                 .workspace = workspace.data()};
    if (per_sequence) {
      a.segment_offsets = offsets;
      a.query_positions = qpos;
    }
    if (c.attention.sinks) a.sinks = TensorView::contiguous(sinks.data(), DType::kFloat32, {Hq});
    const Status st = (*plan)->forward(a, nullptr);
    if (!st.is_ok()) {
      ++refused;
      EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
      EXPECT_EQ(st.message().rfind("ulysses::DistributedDecode::forward", 0), 0u) << st.message();
      continue;
    }
    ++computed;
    EXPECT_EQ(std::count_if(o.begin(), o.end(), [](float x) { return std::isnan(x); }), 0);
    EXPECT_EQ(std::count_if(lse.begin(), lse.end(), [](float x) { return std::isnan(x); }), 0);
  }
  std::cout << "seed " << seed << ": " << computed << " steps computed, " << refused
            << " refused\n";
  EXPECT_GT(computed, 100);
  EXPECT_GT(refused, 100);
}

// Forward and backward calls of valid plans on host ranks with one argument spoiled the same way on
// every rank: a dimension off by one, head_dim not contiguous, a negative stride, another dtype, a
// null pointer, another device, sinks missing or unexpected, a workspace or saved buffer missing,
// packed cu_seqlens that do not add up. A spoiled call must be refused by name (kInvalidArgument,
// the plan's API) on every rank, before any data moves; an untouched one must give outputs
// without a NaN. (Under CI's ASan build, no call may read or write past the views.)
TEST(CallArgsFuzz, SpoiledArgumentsAreRefusedOnEveryRank) {
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 g(seed);
  auto U = [&](std::int64_t lo, std::int64_t hi) {  // in [lo, hi]
    return lo + static_cast<std::int64_t>(g() % static_cast<std::uint64_t>(hi - lo + 1));
  };
  int computed = 0, refused = 0;
  for (int draw = 0; draw < 300 && !::testing::Test::HasFailure(); ++draw) {
    SCOPED_TRACE("draw " + std::to_string(draw));
    const int P = static_cast<int>(U(1, 2));
    PlanConfig c{
        .attention = {.num_heads_q = 4,
                      .num_heads_kv = static_cast<int>(U(0, 1) ? 2 : 4),
                      .head_dim = 8,
                      .head_dim_v = static_cast<int>(U(0, 3) ? 0 : 4),
                      .causal = U(0, 1) == 1,
                      .sinks = U(0, 3) == 0},
        .parallel = {.strategy = static_cast<Strategy>(U(0, 3)), .cp = P, .ulysses_degree = 0},
        .layout = U(0, 2) ? Layout::kBSHD : Layout::kTHD,
        .dtype = DType::kFloat32,
        .batch = 1,
        .seqlen = 8 * P,
        .training = U(0, 3) != 0,
        .saved_activations = U(0, 3) ? SavedActivations::kHeadSharded : SavedActivations::kLseOnly};
    if (c.parallel.strategy == Strategy::kHybrid) c.parallel.ulysses_degree = P;
    if (c.layout == Layout::kBSHD) c.batch = U(1, 2);
    const int spoil = static_cast<int>(U(0, 15));  // 12..15: untouched
    const int tensor = static_cast<int>(U(0, 3));  // which view a spoil touches
    const bool in_backward = c.training && U(0, 1) == 1;
    const int dim_draw = static_cast<int>(U(0, 3));
    std::vector<Status> verdicts(static_cast<std::size_t>(P));
    std::vector<int> nans(static_cast<std::size_t>(P), 0);
    auto kernel = make_reference_attention();
    const auto st = testing::run_ranks(
        P,
        [&](int r, Communicator& comm) -> Status {
          auto plan = DistributedAttention::create(c, comm, *kernel);
          if (!plan.is_ok()) return plan.status();
          const AttentionConfig& a = c.attention;
          // Inputs drawn (each from the same stream), outputs NaN.
          testing::CallFixture x(c);
          for (HostTensor* t : {&x.q, &x.k, &x.v, &x.d_o}) {
            std::mt19937_64 fill(seed + static_cast<std::uint64_t>(draw));
            testing::fill_uniform(*t, fill);
          }
          for (HostTensor* t : {&x.o, &x.dq, &x.dk, &x.dv}) testing::poison(*t);
          x.cu = {0, static_cast<std::int32_t>(c.seqlen / 2), static_cast<std::int32_t>(c.seqlen)};
          std::vector<unsigned char> ws((*plan)->workspace_bytes()), saved((*plan)->saved_bytes());
          ForwardArgs f = x.forward_args(ws.data(), saved.data());
          BackwardArgs b = x.backward_args(ws.data(), saved.data());
          if (c.saved_activations == SavedActivations::kLseOnly) {
            b.q = f.q;
            b.k = f.k;
            b.v = f.v;
            b.o = f.o;
          }
          if (in_backward) {  // a valid forward first
            ULYSSES_RETURN_IF_ERROR((*plan)->forward(f, nullptr));
          }
          // The view the spoil touches: an input or an output of the call that runs.
          TensorView* views[4] = {in_backward ? &b.d_o : &f.q, in_backward ? &b.dk : &f.k,
                                  in_backward ? &b.dv : &f.v, in_backward ? &b.dq : &f.o};
          TensorView& t = *views[tensor];
          const int dim = dim_draw % t.ndim;
          switch (spoil) {
            case 0:
              t.shape[static_cast<std::size_t>(dim)] += 1;
              break;
            case 1:
              t.shape[static_cast<std::size_t>(dim)] -= 1;
              break;
            case 2:
              t.strides[static_cast<std::size_t>(t.ndim - 1)] = 2;
              break;
            case 3:
              t.strides[static_cast<std::size_t>(dim == t.ndim - 1 ? 0 : dim)] *= -1;
              break;
            case 4:
              t.dtype = DType::kFloat64;
              break;
            case 5:
              t.data = nullptr;
              break;
            case 6:
              t.device = Device::cuda(0);
              break;
            case 7:
              f.sinks = b.sinks = a.sinks ? TensorView{} : x.sinks.view;
              break;
            case 8:
              f.workspace = b.workspace = nullptr;
              break;
            case 9:
              if (c.training) f.saved = b.saved = nullptr;
              break;
            case 10:
              x.cu = {0, static_cast<std::int32_t>(c.seqlen) + 1};
              f.cu_seqlens = b.cu_seqlens = x.cu;
              break;
            case 11:
              x.cu = {0, 6, 3, static_cast<std::int32_t>(c.seqlen)};
              f.cu_seqlens = b.cu_seqlens = x.cu;
              break;
            default:
              break;  // untouched
          }
          const Status call =
              in_backward ? (*plan)->backward(b, nullptr) : (*plan)->forward(f, nullptr);
          verdicts[static_cast<std::size_t>(r)] = call;
          if (call.is_ok()) {
            const std::vector<HostTensor*> outs =
                in_backward ? std::vector<HostTensor*>{&x.dq, &x.dk, &x.dv}
                            : std::vector<HostTensor*>{&x.o};
            for (HostTensor* out : outs) {
              nans[static_cast<std::size_t>(r)] += static_cast<int>(testing::count_nan(*out));
            }
          }
          return Status::ok();
        },
        LoopbackOptions{std::chrono::milliseconds(5000)});
    for (const Status& s : st) ASSERT_TRUE(s.is_ok()) << s.to_string();
    // One verdict: the same code on every rank (a message may differ by the rank's own sizes, e.g.
    // all-gather's last rank's workspace).
    for (const Status& v : verdicts) {
      EXPECT_EQ(v.code(), verdicts[0].code()) << v.to_string() << " vs " << verdicts[0].to_string();
      if (!v.is_ok()) {
        EXPECT_EQ(v.message().rfind("ulysses::DistributedAttention::", 0), 0u) << v.message();
      }
    }
    if (verdicts[0].is_ok()) {
      ++computed;
      for (int n : nans) EXPECT_EQ(n, 0) << "spoil " << spoil;
    } else {
      ++refused;
      EXPECT_EQ(verdicts[0].code(), StatusCode::kInvalidArgument) << verdicts[0].to_string();
    }
  }
  std::cout << "seed " << seed << ": " << computed << " calls computed, " << refused
            << " refused\n";
  EXPECT_GT(computed, 30);
  EXPECT_GT(refused, 100);
}

}  // namespace
}  // namespace ulysses
