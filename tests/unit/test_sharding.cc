// Shard/gather helpers, position ids and packed-batch padding.
#include <gtest/gtest.h>

#include "common/test_util.h"

namespace ulysses {
namespace {

using testing::HostTensor;

TEST(Sharding, ShardViewIsTheContiguousSlice) {
  HostTensor g(DType::kFloat32, {2, 12, 3, 4});
  for (std::int64_t i = 0; i < g.numel(); ++i) g.set(i, static_cast<double>(i));
  for (int r = 0; r < 3; ++r) {
    auto s = shard_view(g.view, Layout::kBSHD, 3, r);
    ASSERT_TRUE(s.is_ok());
    EXPECT_EQ(s->size(1), 4);
    for (std::int64_t b = 0; b < 2; ++b) {
      for (std::int64_t t = 0; t < 4; ++t) {
        const float got = static_cast<const float*>(s->data)[s->offset({b, t, 2, 3})];
        EXPECT_EQ(got, g.at(g.view.offset({b, r * 4 + t, 2, 3})));
      }
    }
  }
  HostTensor packed(DType::kBFloat16, {12, 3, 4});
  auto s = shard_view(packed.view, Layout::kTHD, 4, 3);
  ASSERT_TRUE(s.is_ok());
  EXPECT_EQ(s->size(0), 3);
  EXPECT_EQ(static_cast<char*>(s->data) - static_cast<char*>(packed.view.data), 9 * 3 * 4 * 2);
}

TEST(Sharding, ShardViewRejectsUnevenLengthsAndBadRanks) {
  HostTensor g(DType::kFloat32, {1, 10, 2, 4});
  auto uneven = shard_view(g.view, Layout::kBSHD, 4, 0);
  EXPECT_EQ(uneven.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(uneven.status().message().find("got 10"), std::string::npos);
  auto bad_rank = shard_view(g.view, Layout::kBSHD, 2, 2);
  EXPECT_NE(bad_rank.status().message().find("rank"), std::string::npos);
}

TEST(Sharding, GatherSequenceRoundTripsStampedData) {
  for (int P : {1, 2, 3, 4, 8}) {
    HostTensor src(DType::kBFloat16, {2, 8 * 3, 2, 4});
    for (std::int64_t i = 0; i < src.numel(); ++i) src.set(i, static_cast<double>(i % 251));
    std::vector<HostTensor> gathered(static_cast<std::size_t>(P), src);
    for (auto& g : gathered) testing::poison(g);
    auto st = testing::run_ranks(P, [&](int r, Communicator& comm) -> Status {
      auto shard = shard_view(src.view, Layout::kBSHD, P, r);
      if (!shard.is_ok()) return shard.status();
      std::vector<unsigned char> scratch(static_cast<std::size_t>(src.numel()) * 2);
      return gather_sequence(comm, *shard, gathered[static_cast<std::size_t>(r)].view,
                             Layout::kBSHD, scratch.data(), nullptr);
    });
    EXPECT_ALL_OK(st);
    for (int r = 0; r < P; ++r)
      EXPECT_BITWISE_EQ(src, gathered[static_cast<std::size_t>(r)], "P=" + std::to_string(P));
  }
}

// Each helper refuses a mismatch by name before it reads or writes a byte: the destination is
// poisoned and must stay so.
TEST(Sharding, HelpersRefuseMismatchesByNameBeforeMovingData) {
  HostTensor src(DType::kFloat32, {2, 4, 3}), dst(DType::kFloat32, {2, 4, 3});
  std::mt19937_64 rng(testing::fresh_seed());
  testing::fill_uniform(src, rng);
  testing::poison(dst);
  const HostTensor poisoned = dst;
  auto refused = [&](const Status& st, const std::string& argument, const std::string& what) {
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
    EXPECT_NE(st.message().find(argument), std::string::npos) << st.to_string();
    EXPECT_NE(st.message().find(what), std::string::npos) << st.to_string();
    EXPECT_BITWISE_EQ(poisoned, dst, argument + " " + what);
  };
  HostTensor longer(DType::kFloat32, {2, 5, 3});
  refused(copy_tensor(dst.view, longer.view), "dst", "another shape");
  HostTensor half(DType::kBFloat16, {2, 4, 3});
  refused(copy_tensor(dst.view, half.view), "dst", "another dtype");
  TensorView on_gpu = src.view;
  on_gpu.device = Device::cuda(0);
  refused(copy_tensor(dst.view, on_gpu), "dst/src", "cuda:0");
  ASSERT_TRUE(copy_tensor(dst.view, src.view).is_ok());
  EXPECT_BITWISE_EQ(src, dst, "copy_tensor");

  // cu_seqlens: too short, and decreasing (position ids of packed tokens).
  Status short_cu =
      shard_position_ids(Layout::kTHD, 8, std::vector<std::int32_t>{0}, 2, 0).status();
  EXPECT_EQ(short_cu.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(short_cu.message().find("cu_seqlens is too short"), std::string::npos)
      << short_cu.to_string();
  Status decreasing =
      shard_position_ids(Layout::kTHD, 8, std::vector<std::int32_t>{0, 5, 3, 8}, 2, 0).status();
  EXPECT_NE(decreasing.message().find("cu_seqlens[2]"), std::string::npos)
      << decreasing.to_string();
  EXPECT_NE(decreasing.message().find("decreases"), std::string::npos) << decreasing.to_string();

  // gather_sequence: checked on one rank alone, so a check that let the call through would hang
  // in the all-gather until the loopback's timeout instead of returning at once.
  auto comms = create_loopback_group(2).value();
  HostTensor global(DType::kFloat32, {2, 8, 3});
  testing::poison(global);
  const HostTensor global_poisoned = global;
  std::vector<unsigned char> scratch(static_cast<std::size_t>(global.numel()) * 4);
  Status no_scratch = gather_sequence(*comms[0], src.view, global.view, 1, ParallelConfig{.cp = 2},
                                      nullptr, nullptr);
  EXPECT_EQ(no_scratch.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(no_scratch.message().find("scratch is null"), std::string::npos)
      << no_scratch.to_string();
  Status other_cp = gather_sequence(*comms[0], src.view, global.view, 1, ParallelConfig{.cp = 4},
                                    scratch.data(), nullptr);
  EXPECT_NE(other_cp.message().find("parallel.cp"), std::string::npos) << other_cp.to_string();
  testing::ClaimsGpu on_device(*comms[0]);
  Status device_comm = gather_sequence(on_device, src.view, global.view, 1, ParallelConfig{.cp = 2},
                                       scratch.data(), nullptr);
  EXPECT_EQ(device_comm.code(), StatusCode::kUnsupported) << device_comm.to_string();
  EXPECT_NE(device_comm.message().find("host communicator"), std::string::npos);
  EXPECT_BITWISE_EQ(global_poisoned, global, "gather_sequence refused");
}

TEST(Sharding, PositionIds) {
  auto bshd = shard_position_ids(Layout::kBSHD, 12, {}, 3, 2);
  ASSERT_TRUE(bshd.is_ok());
  EXPECT_EQ(*bshd, (std::vector<std::int32_t>{8, 9, 10, 11}));
  // Sequences [0,5), [5,6), [6,10); tokens 10, 11 are padding.
  const std::vector<std::int32_t> cu = {0, 5, 6, 10};
  std::vector<std::int32_t> all;
  for (int r = 0; r < 4; ++r) {
    auto ids = shard_position_ids(Layout::kTHD, 12, cu, 4, r);
    ASSERT_TRUE(ids.is_ok()) << ids.status().to_string();
    all.insert(all.end(), ids->begin(), ids->end());
  }
  EXPECT_EQ(all, (std::vector<std::int32_t>{0, 1, 2, 3, 4, 0, 0, 1, 2, 3, 0, 0}));
  auto bad = shard_position_ids(Layout::kTHD, 12, std::vector<std::int32_t>{0, 13}, 4, 0);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

TEST(Sharding, PaddedTokenCountUsesLcmOfCpAndPage) {
  const std::vector<std::int32_t> cu = {0, 100, 250};
  EXPECT_EQ(*padded_token_count(cu, 8), 256);
  EXPECT_EQ(*padded_token_count(cu, 3), 252);
  EXPECT_EQ(*padded_token_count(cu, 4, 6), 252);   // lcm(4, 6) = 12: 21 * 12
  EXPECT_EQ(*padded_token_count(cu, 8, 64), 256);  // lcm 64
  EXPECT_EQ(*padded_token_count(std::vector<std::int32_t>{0, 16}, 8), 16);  // already aligned
  auto bad = padded_token_count(std::vector<std::int32_t>{0, 7, 3}, 2);
  EXPECT_NE(bad.status().message().find("cu_seqlens[2]"), std::string::npos);
  EXPECT_NE(padded_token_count(cu, 2, -1).status().message().find("page_size"), std::string::npos);
}

TEST(Sharding, PadPackedTokensCopiesAndZeroFills) {
  HostTensor src(DType::kFloat32, {5, 2, 3}), dst(DType::kFloat32, {8, 2, 3});
  std::mt19937_64 rng(testing::fresh_seed());
  testing::fill_uniform(src, rng);
  testing::poison(dst);
  ASSERT_TRUE(pad_packed_tokens(src.view, dst.view).is_ok());
  for (std::int64_t i = 0; i < src.numel(); ++i) EXPECT_EQ(dst.at(i), src.at(i));
  for (std::int64_t i = src.numel(); i < dst.numel(); ++i) EXPECT_EQ(dst.at(i), 0.0);
  HostTensor small(DType::kFloat32, {4, 2, 3});
  EXPECT_EQ(pad_packed_tokens(src.view, small.view).code(), StatusCode::kInvalidArgument);
}

TEST(Sharding, PaddedPackedBatchRunsUnderUlyssesWithPaddingMasked) {
  // 13 real tokens padded to 16 for cp = 4: the padding's outputs are exactly zero, LSE -inf.
  const std::vector<std::int32_t> cu = {0, 6, 13};
  const std::int64_t T = *padded_token_count(cu, 4);
  ASSERT_EQ(T, 16);
  HostTensor q(DType::kBFloat16, {T, 4, 8}), k(DType::kBFloat16, {T, 2, 8}),
      v = k, o(DType::kBFloat16, {T, 4, 8}), lse(DType::kFloat32, {4, T});
  std::mt19937_64 rng(testing::fresh_seed());
  for (HostTensor* t : {&q, &k, &v}) testing::fill_uniform(*t, rng);
  testing::poison(o);
  testing::poison(lse);
  auto kernel = make_reference_attention();
  const PlanConfig cfg{
      .attention = {.num_heads_q = 4, .num_heads_kv = 2, .head_dim = 8, .causal = true},
      .parallel = {.cp = 4},
      .layout = Layout::kTHD,
      .dtype = DType::kBFloat16,
      .seqlen = T,
      .training = false};
  auto st = testing::run_ranks(4, [&](int r, Communicator& comm) -> Status {
    auto plan = DistributedAttention::create(cfg, comm, *kernel);
    if (!plan.is_ok()) return plan.status();
    std::vector<unsigned char> ws((*plan)->workspace_bytes());
    ForwardArgs f{.q = *shard_view(q.view, Layout::kTHD, 4, r),
                  .k = *shard_view(k.view, Layout::kTHD, 4, r),
                  .v = *shard_view(v.view, Layout::kTHD, 4, r),
                  .o = *shard_view(o.view, Layout::kTHD, 4, r),
                  .lse = *shard_lse_view(lse.view, Layout::kTHD, 4, r),
                  .cu_seqlens = cu,
                  .workspace = ws.data()};
    return (*plan)->forward(f, nullptr);
  });
  EXPECT_ALL_OK(st);
  for (std::int64_t t = 13; t < 16; ++t) {
    for (int h = 0; h < 4; ++h) {
      EXPECT_EQ(lse.at(lse.view.offset({h, t})), -INFINITY);
      for (int d = 0; d < 8; ++d) EXPECT_EQ(o.at(o.view.offset({t, h, d})), 0.0);
    }
  }
  EXPECT_EQ(testing::count_nan(o), 0);
}

}  // namespace
}  // namespace ulysses
