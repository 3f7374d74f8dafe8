// The C API's own contract (include/ulysses/c_api.h): defaults, NULL arguments, the per-thread last
// error, and the sharding query's capacity check. The data path through it is tested from Python
// (tests/python), against the unsharded run.
#include "ulysses/c_api.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "ulysses/ulysses.h"

namespace {

TEST(CApi, ConfigDefaultsAreThoseOfPlanConfig) {
  ulysses_plan_config c;
  std::memset(&c, 0x5A, sizeof c);
  ulysses_plan_config_init(&c);
  const ulysses::PlanConfig p;
  EXPECT_EQ(c.window_left, p.attention.window_left);
  EXPECT_EQ(c.window_right, p.attention.window_right);
  EXPECT_EQ(c.cp, p.parallel.cp);
  EXPECT_EQ(c.dtype, static_cast<int32_t>(p.dtype));
  EXPECT_EQ(c.batch, p.batch);
  EXPECT_EQ(c.training, p.training ? 1 : 0);
  EXPECT_EQ(c.overlap_chunks, p.overlap_chunks);
  EXPECT_EQ(c.chunks_in_flight, p.chunks_in_flight);
  EXPECT_EQ(c.head_dim_v, p.attention.head_dim_v);
  EXPECT_EQ(c.softmax_scale, 0.0f);  // 0: 1/sqrt(head_dim)
  EXPECT_EQ(ulysses_c_api_version(), ULYSSES_C_API_VERSION);
}

TEST(CApi, DecodeConfigDefaultsAndNullArguments) {
  ulysses_decode_config c;
  std::memset(&c, 0x5A, sizeof c);
  ulysses_decode_config_init(&c);
  const ulysses::DecodeConfig d;
  EXPECT_EQ(c.window_left, d.attention.window_left);
  EXPECT_EQ(c.cp, d.cp);
  EXPECT_EQ(c.dtype, static_cast<int32_t>(d.dtype));
  EXPECT_EQ(c.query_tokens, d.query_tokens);
  EXPECT_EQ(c.max_segments, d.max_segments);
  EXPECT_EQ(c.max_splits, d.max_splits);
  EXPECT_EQ(c.min_split_rows, d.min_split_rows);
  EXPECT_EQ(c.head_dim_v, d.attention.head_dim_v);
  EXPECT_EQ(c.split_kernel, static_cast<int32_t>(d.split_kernel));
  EXPECT_EQ(c.softmax_scale, 0.0f);
  ulysses_decode* dec = nullptr;
  EXPECT_EQ(ulysses_decode_create(&c, nullptr, nullptr, &dec), ULYSSES_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ulysses_last_error()).find("comm is NULL"), std::string::npos);
  EXPECT_EQ(dec, nullptr);
  EXPECT_EQ(ulysses_decode_forward(nullptr, nullptr, nullptr), ULYSSES_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ulysses_last_error()).find("decode is NULL"), std::string::npos);
  EXPECT_EQ(ulysses_decode_workspace_bytes(nullptr), 0u);
  ulysses_decode_destroy(nullptr);
}

TEST(CApi, NullArgumentsAreNamedNotDereferenced) {
  ulysses_plan_config c;
  ulysses_plan_config_init(&c);
  ulysses_plan* plan = nullptr;
  EXPECT_EQ(ulysses_plan_create(&c, nullptr, nullptr, &plan), ULYSSES_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ulysses_last_error()).find("comm is NULL"), std::string::npos)
      << ulysses_last_error();
  EXPECT_EQ(plan, nullptr);
  EXPECT_EQ(ulysses_loopback_group(2, nullptr), ULYSSES_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ulysses_last_error()).find("comms"), std::string::npos);
  EXPECT_EQ(ulysses_plan_forward(nullptr, nullptr, nullptr), ULYSSES_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ulysses_last_error()).find("plan is NULL"), std::string::npos);
  EXPECT_EQ(ulysses_comm_rank(nullptr), -1);
  EXPECT_EQ(ulysses_plan_workspace_bytes(nullptr), 0u);
  EXPECT_EQ(ulysses_plan_held_bytes(nullptr), 0u);
  EXPECT_EQ(ulysses_kernel_held_bytes(nullptr), 0u);
  EXPECT_EQ(ulysses_plan_release_held(nullptr, nullptr), ULYSSES_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ulysses_last_error()).find("plan is NULL"), std::string::npos);
  EXPECT_EQ(ulysses_kernel_release_held(nullptr, nullptr), ULYSSES_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ulysses_last_error()).find("kernel is NULL"), std::string::npos);
  int64_t graphs = -1, failed = -1;
  double seconds = -1;
  EXPECT_EQ(ulysses_kernel_cudnn_graph_stats(nullptr, &graphs, &failed, &seconds),
            ULYSSES_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ulysses_last_error()).find("kernel is NULL"), std::string::npos);
  ulysses_kernel* reference = nullptr;
  ASSERT_EQ(ulysses_reference_kernel(&reference), ULYSSES_OK);
  EXPECT_EQ(ulysses_kernel_cudnn_graph_stats(reference, nullptr, &failed, &seconds),
            ULYSSES_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ulysses_last_error()).find("graphs is NULL"), std::string::npos);
  // Not a cuDNN kernel (in a build without CUDA: no cuDNN at all).
  EXPECT_EQ(ulysses_kernel_cudnn_graph_stats(reference, &graphs, &failed, &seconds),
            ulysses_built_with_cuda() ? ULYSSES_INVALID_ARGUMENT : ULYSSES_UNSUPPORTED);
  EXPECT_EQ(graphs, -1);  // untouched on error
  ulysses_kernel_destroy(reference);
  ulysses_comm_destroy(nullptr);  // like free(NULL)
  ulysses_plan_destroy(nullptr);
}

TEST(CApi, WrappingAnNcclCommunicatorChecksItsArguments) {
  ulysses_comm* comm = nullptr;
  EXPECT_EQ(ulysses_nccl_wrap(nullptr, 0, 0, &comm), ULYSSES_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ulysses_last_error()).find("nccl_comm is NULL"), std::string::npos)
      << ulysses_last_error();
  EXPECT_EQ(comm, nullptr);
  int not_a_comm = 0;  // never dereferenced: every check below comes before the communicator's
  EXPECT_EQ(ulysses_nccl_wrap(&not_a_comm, 0, 0, nullptr), ULYSSES_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ulysses_last_error()).find("comm is NULL"), std::string::npos)
      << ulysses_last_error();
  // A device no machine has is refused by name (a build without CUDA refuses every device).
  EXPECT_EQ(ulysses_nccl_wrap(&not_a_comm, 1 << 20, 0, &comm),
            ulysses_built_with_cuda() ? ULYSSES_INVALID_ARGUMENT : ULYSSES_UNSUPPORTED);
  const std::string error = ulysses_last_error();
  EXPECT_NE(error.find(ulysses_built_with_cuda() ? "device" : "CUDA"), std::string::npos) << error;
  EXPECT_NE(error.find("wrap_nccl_communicator"), std::string::npos) << error;
  EXPECT_EQ(comm, nullptr);
}

TEST(CApi, LastErrorIsPerThreadAndClearedBySuccess) {
  std::string other;
  std::thread t([&] {
    EXPECT_EQ(ulysses_loopback_group(0, nullptr), ULYSSES_INVALID_ARGUMENT);
    other = ulysses_last_error();
  });
  t.join();
  EXPECT_FALSE(other.empty());
  ulysses_kernel* k = nullptr;
  ASSERT_EQ(ulysses_reference_kernel(&k), ULYSSES_OK);
  EXPECT_STREQ(ulysses_last_error(), "");  // this thread's last call succeeded
  ulysses_kernel_destroy(k);
}

TEST(CApi, BadConfigKeepsTheStatusCodeAndMessage) {
  std::vector<ulysses_comm*> comms(2);
  ASSERT_EQ(ulysses_loopback_group(2, comms.data()), ULYSSES_OK);
  EXPECT_EQ(ulysses_comm_size(comms[1]), 2);
  EXPECT_EQ(ulysses_comm_rank(comms[1]), 1);
  EXPECT_EQ(ulysses_comm_device(comms[0]), -1);
  ulysses_plan_config c;
  ulysses_plan_config_init(&c);
  c.num_heads_q = 6;
  c.num_heads_kv = 2;
  c.head_dim = 8;
  c.cp = 2;
  c.seqlen = 8;
  c.dtype = 1;
  c.payload = 5;  // not a Payload
  std::vector<int> codes(2);
  std::vector<std::string> messages(2);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      ulysses_kernel* k = nullptr;
      EXPECT_EQ(ulysses_reference_kernel(&k), ULYSSES_OK);
      ulysses_plan* plan = nullptr;
      codes[static_cast<std::size_t>(r)] =
          ulysses_plan_create(&c, comms[static_cast<std::size_t>(r)], k, &plan);
      messages[static_cast<std::size_t>(r)] = ulysses_last_error();
      EXPECT_EQ(plan, nullptr);
      ulysses_kernel_destroy(k);
    });
  }
  for (auto& t : ranks) t.join();
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(codes[static_cast<std::size_t>(r)], ULYSSES_INVALID_ARGUMENT);
    EXPECT_NE(messages[static_cast<std::size_t>(r)].find("INVALID_ARGUMENT: "), std::string::npos);
    EXPECT_NE(messages[static_cast<std::size_t>(r)].find("payload"), std::string::npos)
        << messages[static_cast<std::size_t>(r)];
  }
  EXPECT_EQ(messages[0], messages[1]);
  for (ulysses_comm* comm : comms) ulysses_comm_destroy(comm);
}

TEST(CApi, ShardRangesNeedRoomForEveryRange) {
  ulysses_plan_config c;
  ulysses_plan_config_init(&c);
  c.strategy = 1;  // ring
  c.cp = 2;
  c.seqlen = 48;
  int64_t ranges[4] = {-1, -1, -1, -1};
  int64_t n = 0;
  ASSERT_EQ(ulysses_shard_token_ranges(&c, 1, nullptr, 0, ranges, 2, &n), ULYSSES_OK);
  EXPECT_EQ(n, 2);
  EXPECT_EQ(ranges[0], 12);
  EXPECT_EQ(ranges[1], 24);
  EXPECT_EQ(ranges[2], 24);
  EXPECT_EQ(ranges[3], 36);
  EXPECT_EQ(ulysses_shard_token_ranges(&c, 1, nullptr, 0, ranges, 1, &n), ULYSSES_INVALID_ARGUMENT);
  EXPECT_EQ(n, 2);  // the count needed
  EXPECT_NE(std::string(ulysses_last_error()).find("max_ranges"), std::string::npos);
}

TEST(CApi, CuSeqlensCountsAreTakenAsGivenNotAsNone) {
  // A count without an array, or a negative count, used to read as "no cu_seqlens": a packed
  // batch cut like one dense sequence.
  ulysses_plan_config c;
  ulysses_plan_config_init(&c);
  c.strategy = 1;  // ring
  c.layout = 1;    // thd
  c.cp = 2;
  c.seqlen = 48;
  int64_t ranges[8];
  int64_t n = -1;
  EXPECT_EQ(ulysses_shard_token_ranges(&c, 1, nullptr, 3, ranges, 4, &n), ULYSSES_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ulysses_last_error()).find("cu_seqlens is NULL"), std::string::npos)
      << ulysses_last_error();
  EXPECT_EQ(n, -1);  // untouched
  const int32_t cu[3] = {0, 20, 48};
  EXPECT_EQ(ulysses_shard_token_ranges(&c, 1, cu, -3, ranges, 4, &n), ULYSSES_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ulysses_last_error()).find("num_cu_seqlens is negative"), std::string::npos)
      << ulysses_last_error();
  double pairs[2];
  EXPECT_EQ(ulysses_attention_pairs_by_rank(&c, nullptr, 3, pairs), ULYSSES_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ulysses_last_error()).find("ulysses_attention_pairs_by_rank"),
            std::string::npos)
      << ulysses_last_error();
  // A plan's forward and backward too, before any tensor is read.
  c.strategy = 0;  // ulysses, one rank
  c.cp = 1;
  c.num_heads_q = 2;
  c.num_heads_kv = 1;
  c.head_dim = 8;
  c.dtype = 1;  // fp32
  c.seqlen = 48;
  ulysses_comm* comm = nullptr;
  ulysses_kernel* kernel = nullptr;
  ulysses_plan* plan = nullptr;
  ASSERT_EQ(ulysses_loopback_group(1, &comm), ULYSSES_OK);
  ASSERT_EQ(ulysses_reference_kernel(&kernel), ULYSSES_OK);
  ASSERT_EQ(ulysses_plan_create(&c, comm, kernel, &plan), ULYSSES_OK) << ulysses_last_error();
  ulysses_forward_args f;
  std::memset(&f, 0, sizeof f);
  f.num_cu_seqlens = 3;
  EXPECT_EQ(ulysses_plan_forward(plan, &f, nullptr), ULYSSES_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ulysses_last_error()).find("ulysses_plan_forward: cu_seqlens is NULL"),
            std::string::npos)
      << ulysses_last_error();
  ulysses_backward_args b;
  std::memset(&b, 0, sizeof b);
  b.num_cu_seqlens = -1;
  EXPECT_EQ(ulysses_plan_backward(plan, &b, nullptr), ULYSSES_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ulysses_last_error()).find("num_cu_seqlens is negative"), std::string::npos)
      << ulysses_last_error();
  ulysses_plan_destroy(plan);
  ulysses_kernel_destroy(kernel);
  ulysses_comm_destroy(comm);
}

TEST(CApi, PositionIdsAndPackedOffsets) {
  ulysses_plan_config c;
  ulysses_plan_config_init(&c);
  c.strategy = 1;  // ring: rank 0 holds chunks 0 and 3 of 4
  c.cp = 2;
  c.seqlen = 8;
  int32_t ids[4] = {-1, -1, -1, -1};
  int64_t n = 0;
  ASSERT_EQ(ulysses_shard_position_ids(&c, 0, nullptr, 0, ids, 4, &n), ULYSSES_OK);
  EXPECT_EQ(n, 4);
  EXPECT_EQ(std::vector<int32_t>(ids, ids + 4), (std::vector<int32_t>{0, 1, 6, 7}));
  EXPECT_EQ(ulysses_shard_position_ids(&c, 0, nullptr, 0, ids, 3, &n), ULYSSES_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ulysses_last_error()).find("max_ids"), std::string::npos);
  const int32_t cu[] = {0, 5, 17, 18};
  int32_t offsets[4] = {};
  ASSERT_EQ(ulysses_packed_sequence_offsets(&c, cu, 4, offsets), ULYSSES_OK);
  EXPECT_EQ(std::vector<int32_t>(offsets, offsets + 4), (std::vector<int32_t>{0, 8, 20, 24}));
  EXPECT_EQ(ulysses_packed_sequence_offsets(&c, cu, 4, nullptr), ULYSSES_INVALID_ARGUMENT);
  c.packed_sharding = 2;  // stream: the offsets as given
  ASSERT_EQ(ulysses_packed_sequence_offsets(&c, cu, 4, offsets), ULYSSES_OK);
  EXPECT_EQ(std::vector<int32_t>(offsets, offsets + 4), (std::vector<int32_t>(cu, cu + 4)));
  c.strategy = 0;         // ulysses
  c.packed_sharding = 1;  // per_sequence: ring and hybrid only
  EXPECT_EQ(ulysses_packed_sequence_offsets(&c, cu, 4, offsets), ULYSSES_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ulysses_last_error()).find("packed_sharding"), std::string::npos);
}

TEST(CApi, PairsByRankAndBalancedOrder) {
  ulysses_plan_config c;
  ulysses_plan_config_init(&c);
  c.num_heads_q = 4;
  c.num_heads_kv = 2;
  c.head_dim = 8;
  c.causal = 1;
  c.strategy = 3;  // allgather: the stream in 4 zigzag chunks of 16
  c.cp = 2;
  c.seqlen = 64;
  // A 48-token document then a 16-token one: rank 1 holds the first's rows 16-47.
  const int32_t cu[] = {0, 48, 64};
  double pairs[2] = {-1, -1};
  ASSERT_EQ(ulysses_attention_pairs_by_rank(&c, cu, 3, pairs), ULYSSES_OK);
  EXPECT_EQ(pairs[0], 136.0 + 136.0);
  EXPECT_EQ(pairs[1], 1040.0);
  int32_t order[2] = {-1, -1}, reordered[3] = {-1, -1, -1};
  ASSERT_EQ(ulysses_balance_packed_sequences(&c, cu, 3, order, reordered), ULYSSES_OK);
  EXPECT_EQ(std::vector<int32_t>(order, order + 2), (std::vector<int32_t>{1, 0}));
  EXPECT_EQ(std::vector<int32_t>(reordered, reordered + 3), (std::vector<int32_t>{0, 16, 64}));
  ASSERT_EQ(ulysses_attention_pairs_by_rank(&c, reordered, 3, pairs), ULYSSES_OK);
  EXPECT_LT(std::max(pairs[0], pairs[1]), 1040.0);
  ASSERT_EQ(ulysses_attention_pairs_by_rank(&c, nullptr, 0, pairs), ULYSSES_OK);  // one sequence
  EXPECT_EQ(pairs[0], pairs[1]);
  EXPECT_EQ(ulysses_balance_packed_sequences(&c, cu, 3, nullptr, reordered),
            ULYSSES_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ulysses_last_error()).find("order"), std::string::npos);
  c.seqlen = 62;
  EXPECT_EQ(ulysses_attention_pairs_by_rank(&c, cu, 3, pairs), ULYSSES_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ulysses_last_error()).find("seqlen"), std::string::npos);
}

}  // namespace
