// Ulysses on one GPU through the device loopback (P virtual ranks), with cuDNN, against the
// single-GPU cuDNN run on the full sequence; plus stream safety and memory stability.
#include <gtest/gtest.h>

#include <barrier>
#include <thread>

#include "common/check.h"
#include "gpu/gpu_ulysses_common.h"

namespace ulysses {
namespace {

using testing::GpuCase;

class DeviceLoopbackUlysses : public ::testing::TestWithParam<GpuCase> {};

TEST_P(DeviceLoopbackUlysses, MatchesSingleGpu) {
  ULYSSES_REQUIRE_GPUS(1);
  const GpuCase c = GetParam();
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const testing::GpuInputs in = testing::make_gpu_inputs(c, rng);
  const testing::GpuOutputs single = testing::run_single_gpu(c, testing::as_delivered(c, in));
  auto comms = create_device_loopback_group(c.P, 0);
  ASSERT_TRUE(comms.is_ok()) << comms.status().to_string();
  const testing::GpuOutputs dist = testing::run_distributed(c, in, *comms, [](int) { return 0; });
  testing::expect_matches_single_gpu(c, single, dist);
}

GpuCase fp8_case(GpuCase c) {
  c.payload = Payload::kFp8;
  return c;
}

// Payload::kFp8: the head owners' kernel reads Q, K, V and dO rounded row by row to fp8; the single
// GPU runs on the inputs as testing::as_delivered rounds them (a host model), so every rule of a
// native run holds against that run.
INSTANTIATE_TEST_SUITE_P(
    Fp8, DeviceLoopbackUlysses,
    ::testing::Values(
        [] {
          GpuCase c =
              fp8_case({"fp8_p2_gqa_causal_deterministic", 2, Layout::kBSHD, 2, 512, 8, 4, 128});
          c.deterministic = true;
          return c;
        }(),
        [] {
          GpuCase c = fp8_case({"fp8_p4_fp16_window_sinks", 4, Layout::kBSHD, 1, 512, 8, 4, 64,
                                DType::kFloat16, true, 100});
          c.sinks = true;
          return c;
        }(),
        [] {
          GpuCase c =
              fp8_case({"fp8_p4_replicated_kv_lse_only", 4, Layout::kBSHD, 1, 512, 8, 2, 128});
          c.saved = SavedActivations::kLseOnly;
          return c;
        }(),
        [] {
          GpuCase c = fp8_case(
              {"fp8_p2_thd_chunks2_lse_one_in_flight", 2, Layout::kTHD, 1, 1024, 8, 4, 128});
          c.cu = {0, 300, 301, 1000};
          c.chunks = 2;
          c.in_flight = 1;
          c.saved = SavedActivations::kLseOnly;
          return c;
        }(),
        [] {
          GpuCase c =
              fp8_case({"fp8_p2_chunks4_heads_sinks", 2, Layout::kBSHD, 1, 512, 16, 8, 128});
          c.chunks = 4;
          c.sinks = true;
          return c;
        }(),
        // Two head widths (MLA): rows of 64 values, 3 per Q/K head, 2 per V.
        [] {
          GpuCase c =
              fp8_case({"fp8_p2_mla_192_128_gqa_chunks2", 2, Layout::kBSHD, 2, 512, 8, 4, 192});
          c.Dv = 128;
          c.chunks = 2;
          return c;
        }(),
        [] {
          GpuCase c = fp8_case(
              {"fp8_p3_mla_192_128_varlen_lse_sinks", 3, Layout::kTHD, 1, 1026, 8, 8, 192});
          c.Dv = 128;
          c.cu = {0, 400, 401, 1000};
          c.sinks = true;
          c.saved = SavedActivations::kLseOnly;
          return c;
        }()),
    [](const auto& param_info) { return param_info.param.name; });

class DeviceLoopbackRing : public ::testing::TestWithParam<GpuCase> {};

TEST_P(DeviceLoopbackRing, WithinTwiceTheSingleGpuError) {
  ULYSSES_REQUIRE_GPUS(1);
  const GpuCase c = GetParam();
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const testing::GpuInputs in = testing::make_gpu_inputs(c, rng);
  const testing::GpuInputs delivered = testing::as_delivered(c, in);  // fp8: K, V rounded
  const testing::GpuOutputs single = testing::run_single_gpu(c, delivered);
  const testing::GpuOutputs truth = testing::run_reference_fp64(c, delivered);
  auto comms = create_device_loopback_group(c.P, 0);
  ASSERT_TRUE(comms.is_ok()) << comms.status().to_string();
  const testing::GpuOutputs dist = testing::run_distributed(c, in, *comms, [](int) { return 0; });
  testing::expect_ring_within_2x(c, single, dist, truth);
}

GpuCase ring_case(std::string name, Strategy strategy, int P, int U, std::int64_t S, int Hq,
                  int Hkv, bool causal, bool sinks, int wl = -1) {
  GpuCase c{std::move(name), P, Layout::kBSHD, 1, S, Hq, Hkv, 64};
  c.causal = causal;
  c.sinks = sinks;
  c.wl = wl;
  c.strategy = strategy;
  c.U = U;
  return c;
}

// Packed sequences (thd) at padded offsets: lengths that are not multiples of 2R, an empty one.
GpuCase packed_case(std::string name, Strategy strategy, int P, int U, std::int64_t S, int Hq,
                    int Hkv, bool causal, std::vector<std::int32_t> lens) {
  GpuCase c = ring_case(std::move(name), strategy, P, U, S, Hq, Hkv, causal, false);
  c.layout = Layout::kTHD;
  c.cu = {0};
  for (std::int32_t l : lens) c.cu.push_back(c.cu.back() + l);
  return c;
}

// Payload::kFp8: K and V travel the ring as fp8 rows and the owners compute with the rounded values
// too, so the 2x rule holds against one GPU and the FP64 truth on K and V rounded by the host
// model.
INSTANTIATE_TEST_SUITE_P(
    Fp8, DeviceLoopbackRing,
    ::testing::Values(
        fp8_case(ring_case("fp8_ring_p2_gqa_causal", Strategy::kRing, 2, 0, 512, 8, 2, true,
                           false)),
        [] {
          GpuCase c = fp8_case(ring_case("fp8_ring_p4_window_sinks_lse_only", Strategy::kRing, 4, 0,
                                         1024, 8, 4, true, true, 100));
          c.saved = SavedActivations::kLseOnly;
          return c;
        }(),
        fp8_case(ring_case("fp8_hybrid_2x2_gqa_causal_sinks", Strategy::kHybrid, 4, 2, 512, 8, 4,
                           true, true)),
        fp8_case(ring_case("fp8_hybrid_4x2_replicated_kv_causal", Strategy::kHybrid, 8, 4, 1024, 8,
                           2, true, false)),
        [] {
          GpuCase c = fp8_case(packed_case("fp8_packed_ring_p2_gqa_causal", Strategy::kRing, 2, 0,
                                           1024, 8, 2, true, {100, 333, 7, 450}));
          c.dtype = DType::kFloat16;
          return c;
        }(),
        // All-gather: its K/V chunks travel as fp8 rows.
        fp8_case(ring_case("fp8_allgather_p4_gqa_causal_sinks", Strategy::kAllGather, 4, 0, 1024, 8,
                           2, true, true)),
        [] {
          GpuCase c = fp8_case(ring_case("fp8_allgather_p2_window_lse_only", Strategy::kAllGather,
                                         2, 0, 1024, 8, 4, true, false, 100));
          c.saved = SavedActivations::kLseOnly;
          return c;
        }(),
        fp8_case(packed_case("fp8_packed_allgather_p2_gqa_causal", Strategy::kAllGather, 2, 0, 1024,
                             8, 2, true, {100, 333, 7, 450}))),
    [](const auto& param_info) { return param_info.param.name; });

INSTANTIATE_TEST_SUITE_P(
    Packed, DeviceLoopbackRing,
    ::testing::Values(
        packed_case("ring_p2_gqa_causal", Strategy::kRing, 2, 0, 1024, 8, 2, true,
                    {100, 333, 7, 450}),
        packed_case("ring_p4_mha_full", Strategy::kRing, 4, 0, 1024, 4, 4, false,
                    {200, 301, 64, 250}),
        packed_case("ring_p8_mqa_causal_empty_seq", Strategy::kRing, 8, 0, 2048, 4, 1, true,
                    {700, 90, 513, 0, 401}),
        packed_case("hybrid_2x2_gqa_causal", Strategy::kHybrid, 4, 2, 1024, 8, 4, true,
                    {129, 400, 33, 300}),
        packed_case("hybrid_4x2_replicated_kv_causal", Strategy::kHybrid, 8, 4, 1024, 8, 2, true,
                    {250, 250, 250}),
        [] {
          GpuCase c = packed_case("ring_p2_gqa_causal_lse_only", Strategy::kRing, 2, 0, 1024, 8, 2,
                                  true, {100, 333, 7, 450});
          c.saved = SavedActivations::kLseOnly;
          return c;
        }(),
        [] {
          // cu_seqlens padded with repeated offsets (static shapes): 300
          // entries, 3 non-empty, one past the tables kernel's first tile of
          // 256.
          std::vector<std::int32_t> lens(300, 0);
          lens[0] = 100;
          lens[260] = 333;
          lens[299] = 50;
          return packed_case("ring_p2_empty_entries_across_tiles", Strategy::kRing, 2, 0, 512, 8, 2,
                             true, lens);
        }(),
        // Windows on packed documents: each pair of different chunks as an
        // unmasked call and one masked on the window's edge, rows cut per
        // document (chunks of 2 to 113 rows against windows of 50 to 300).
        [] {
          GpuCase c = packed_case("ring_p2_gqa_causal_window_100", Strategy::kRing, 2, 0, 1024, 8,
                                  2, true, {100, 333, 7, 450});
          c.wl = 100;
          return c;
        }(),
        [] {
          GpuCase c = packed_case("ring_p4_two_sided_window_sinks", Strategy::kRing, 4, 0, 1024, 4,
                                  4, false, {200, 301, 64, 250});
          c.wl = 64;
          c.wr = 32;
          c.sinks = true;
          return c;
        }(),
        [] {
          GpuCase c = packed_case("ring_p8_mqa_causal_window_300_empty_seq", Strategy::kRing, 8, 0,
                                  2048, 4, 1, true, {700, 90, 513, 0, 401});
          c.wl = 300;
          return c;
        }(),
        [] {
          GpuCase c = packed_case("hybrid_2x2_gqa_causal_window_sinks_lse_only", Strategy::kHybrid,
                                  4, 2, 1024, 8, 4, true, {129, 400, 33, 300});
          c.wl = 50;
          c.sinks = true;
          c.saved = SavedActivations::kLseOnly;
          return c;
        }()),
    [](const auto& param_info) { return param_info.param.name; });

// The packed stream cut like one sequence (PackedSharding::kStream): documents cut by chunk
// boundaries, one spanning several chunks, many short ones, empty ones, padding after them.
GpuCase stream_case(std::string name, Strategy strategy, int P, int U, std::int64_t S, int Hq,
                    int Hkv, bool causal, std::vector<std::int32_t> lens, int wl = -1,
                    int wr = -1) {
  GpuCase c = packed_case(std::move(name), strategy, P, U, S, Hq, Hkv, causal, std::move(lens));
  c.sharding = PackedSharding::kStream;
  c.wl = wl;
  c.wr = wr;
  return c;
}

INSTANTIATE_TEST_SUITE_P(
    PackedStream, DeviceLoopbackRing,
    ::testing::Values(
        stream_case("ring_p2_gqa_causal", Strategy::kRing, 2, 0, 1024, 8, 2, true,
                    {100, 333, 7, 450}),
        stream_case("ring_p4_mha_full", Strategy::kRing, 4, 0, 1024, 4, 4, false,
                    {200, 301, 64, 250}),
        stream_case("ring_p8_mqa_causal_long_doc_empty_seq", Strategy::kRing, 8, 0, 2048, 4, 1,
                    true, {1500, 90, 0, 401}),
        stream_case("ring_p4_gqa_causal_many_short_docs", Strategy::kRing, 4, 0, 1024, 8, 2, true,
                    {17, 40, 3, 90, 128, 1, 64, 200, 33, 77, 250, 9, 60}),
        stream_case("hybrid_2x2_gqa_causal", Strategy::kHybrid, 4, 2, 1024, 8, 4, true,
                    {129, 400, 33, 300}),
        stream_case("ring_p2_gqa_causal_window_100", Strategy::kRing, 2, 0, 1024, 8, 2, true,
                    {100, 333, 7, 450}, 100),
        [] {
          GpuCase c = stream_case("ring_p4_two_sided_window_sinks", Strategy::kRing, 4, 0, 1024, 4,
                                  4, false, {200, 301, 64, 250}, 64, 32);
          c.sinks = true;
          return c;
        }(),
        [] {
          GpuCase c = stream_case("hybrid_2x2_gqa_causal_window_sinks_lse_only", Strategy::kHybrid,
                                  4, 2, 1024, 8, 4, true, {129, 400, 33, 300}, 50);
          c.sinks = true;
          c.saved = SavedActivations::kLseOnly;
          return c;
        }()),
    [](const auto& param_info) { return param_info.param.name; });

INSTANTIATE_TEST_SUITE_P(
    Gpu, DeviceLoopbackRing,
    ::testing::Values(
        ring_case("ring_p2_gqa_causal", Strategy::kRing, 2, 0, 512, 8, 2, true, false),
        ring_case("ring_p4_mha_full_sinks", Strategy::kRing, 4, 0, 512, 4, 4, false, true),
        ring_case("ring_p8_mqa_causal_sinks", Strategy::kRing, 8, 0, 1024, 4, 1, true, true),
        ring_case("ring_p4_window_spanning_whole_chunks", Strategy::kRing, 4, 0, 512, 4, 2, true,
                  false, 1000),
        ring_case("hybrid_2x2_gqa_causal_sinks", Strategy::kHybrid, 4, 2, 512, 8, 4, true, true),
        ring_case("hybrid_4x2_replicated_kv_causal", Strategy::kHybrid, 8, 4, 1024, 8, 2, true,
                  false),
        ring_case("hybrid_2x1_window", Strategy::kHybrid, 2, 2, 512, 4, 2, true, false, 100),
        // Windows shorter than the distance between zigzag chunks: partial chunk pairs are
        // trimmed to rows and keys that see each other, with a shifted diagonal.
        ring_case("ring_p4_causal_window_100", Strategy::kRing, 4, 0, 1024, 4, 2, true, false, 100),
        ring_case("hybrid_2x2_causal_window_90_sinks", Strategy::kHybrid, 4, 2, 512, 8, 4, true,
                  true, 90),
        // Only the LSE saved: backward rebuilds the head-sharded q, k, v, o from the caller's.
        [] {
          GpuCase c = ring_case("ring_p2_gqa_causal_lse_only", Strategy::kRing, 2, 0, 1024, 8, 2,
                                true, false);
          c.saved = SavedActivations::kLseOnly;
          return c;
        }(),
        [] {
          GpuCase c = ring_case("hybrid_2x2_sinks_lse_only", Strategy::kHybrid, 4, 2, 512, 8, 4,
                                true, true);
          c.saved = SavedActivations::kLseOnly;
          return c;
        }(),
        // Batch 2: ring reads dO (and with lse Q and O) in the caller's [B, S/cp, H, D] tensors
        // while K, V and the saved O are in its own [rows][B][H][D] buffers: other strides.
        [] {
          GpuCase c = ring_case("ring_p2_batch2_causal_sinks", Strategy::kRing, 2, 0, 512, 8, 2,
                                true, true);
          c.B = 2;
          return c;
        }(),
        [] {
          GpuCase c = ring_case("ring_p4_batch2_window_lse_only", Strategy::kRing, 4, 0, 1024, 8, 4,
                                true, false, 200);
          c.B = 2;
          c.saved = SavedActivations::kLseOnly;
          return c;
        }(),
        [] {
          GpuCase c = ring_case("ring_p2_two_sided_window", Strategy::kRing, 2, 0, 1024, 4, 2,
                                false, false, 150);
          c.wr = 60;
          return c;
        }(),
        // window_left = 1 mod the chunk (128 rows): a step's first query sees only the last key
        // of a chunk two back, a 1 x 1 call (the cuDNN backend's own backward kernel); batch 2,
        // GQA, sinks. Two-sided: the same at the right bound's edge.
        [] {
          GpuCase c = ring_case("ring_p4_window_edge_one_key", Strategy::kRing, 4, 0, 1024, 8, 2,
                                true, true, 129);
          c.B = 2;
          return c;
        }(),
        [] {
          GpuCase c = ring_case("ring_p2_two_sided_window_edge_one_key", Strategy::kRing, 2, 0,
                                1024, 4, 2, false, false, 257);
          c.wr = 257;
          return c;
        }(),
        [] {
          GpuCase c = ring_case("hybrid_2x2_window_edge_one_key_lse_only", Strategy::kHybrid, 4, 2,
                                1024, 8, 4, true, false, 257);
          c.saved = SavedActivations::kLseOnly;
          return c;
        }(),
        [] {
          GpuCase c = ring_case("hybrid_2x2_fp16_batch2_sinks", Strategy::kHybrid, 4, 2, 512, 8, 2,
                                true, true);
          c.B = 2;
          c.dtype = DType::kFloat16;
          return c;
        }()),
    [](const auto& param_info) { return param_info.param.name; });

// Hybrid groups that split the KV heads unevenly (ulysses_degree below num_heads_kv, not dividing
// it): the first Hkv mod U group positions own one KV head more; ring peers share a position.
INSTANTIATE_TEST_SUITE_P(
    UnevenHybrid, DeviceLoopbackRing,
    ::testing::Values(
        ring_case("hybrid_2x2_gqa_12_over_3_causal_sinks", Strategy::kHybrid, 4, 2, 512, 12, 3,
                  true, true),
        [] {
          GpuCase c = ring_case("hybrid_3x2_mha_4_window_200_lse_only", Strategy::kHybrid, 6, 3,
                                1536, 4, 4, true, false, 200);
          c.saved = SavedActivations::kLseOnly;
          return c;
        }(),
        [] {
          GpuCase c = ring_case("hybrid_2x2_fp16_batch2_gqa_6_over_3", Strategy::kHybrid, 4, 2, 512,
                                6, 3, false, true);
          c.B = 2;
          c.dtype = DType::kFloat16;
          return c;
        }(),
        packed_case("hybrid_2x2_packed_gqa_12_over_3_causal", Strategy::kHybrid, 4, 2, 1024, 12, 3,
                    true, {129, 400, 33, 300}),
        stream_case("hybrid_3x2_stream_mha_5_causal", Strategy::kHybrid, 6, 3, 1536, 5, 5, true,
                    {500, 90, 0, 701}),
        fp8_case(ring_case("fp8_hybrid_2x2_gqa_6_over_3_causal_sinks", Strategy::kHybrid, 4, 2, 512,
                           6, 3, true, true))),
    [](const auto& param_info) { return param_info.param.name; });

// All-gather: every rank runs all heads of its zigzag chunks against the gathered K/V rows they
// see; dK/dV partials are summed on the chunks' owners.
INSTANTIATE_TEST_SUITE_P(
    AllGather, DeviceLoopbackRing,
    ::testing::Values(
        ring_case("p2_gqa_causal", Strategy::kAllGather, 2, 0, 512, 8, 2, true, false),
        ring_case("p4_mha_full_sinks", Strategy::kAllGather, 4, 0, 512, 4, 4, false, true),
        ring_case("p8_mqa_causal_sinks", Strategy::kAllGather, 8, 0, 1024, 4, 1, true, true),
        // More ranks than heads of either kind: nothing to route.
        ring_case("p8_two_heads_causal", Strategy::kAllGather, 8, 0, 1024, 2, 1, true, false),
        ring_case("p4_causal_window_100", Strategy::kAllGather, 4, 0, 1024, 4, 2, true, false, 100),
        [] {
          GpuCase c = ring_case("p2_batch2_causal_sinks_lse_only", Strategy::kAllGather, 2, 0, 512,
                                8, 2, true, true);
          c.B = 2;
          c.saved = SavedActivations::kLseOnly;
          return c;
        }(),
        [] {
          GpuCase c = ring_case("p2_two_sided_window", Strategy::kAllGather, 2, 0, 1024, 4, 2,
                                false, false, 150);
          c.wr = 60;
          return c;
        }(),
        [] {
          GpuCase c = ring_case("p4_fp16_batch2_window_sinks", Strategy::kAllGather, 4, 0, 1024, 8,
                                2, true, true, 200);
          c.B = 2;
          c.dtype = DType::kFloat16;
          return c;
        }(),
        // A window shorter than a chunk (256 rows): backward's part for the keys before a chunk
        // covers only its first 50 rows, which are not a prefix of the batch-2 fp32 dQ sum.
        [] {
          GpuCase c = ring_case("p2_batch2_short_window_sinks", Strategy::kAllGather, 2, 0, 1024, 8,
                                2, true, true, 50);
          c.B = 2;
          return c;
        }(),
        // A window wider than a chunk (256 rows) near the start: rank 1's call holds chunks 1
        // and 2 (512 rows) and only 256 keys lie before them, so the part for those keys splits
        // into rows that see all of them (unmasked) and 256 that see a suffix (masked): cuDNN
        // refuses a windowed call with more query than key rows (the GPU sweep's first find).
        [] {
          GpuCase c = ring_case("p2_batch2_window_past_the_chunk", Strategy::kAllGather, 2, 0, 1024,
                                8, 4, true, false, 300);
          c.B = 2;
          return c;
        }(),
        // Chunks of one token (8 on 4 ranks): a causal call's backward square is one query
        // against one key (the cuDNN backend's own backward kernel; the GPU sweep's third find).
        ring_case("p4_one_token_chunks_causal_sinks", Strategy::kAllGather, 4, 0, 8, 4, 2, true,
                  true),
        ring_case("p4_one_token_chunks_window_2", Strategy::kAllGather, 4, 0, 8, 4, 1, true, false,
                  2),
        // Windows without causal: backward's square of each call's rows plus the first (last)
        // rows against the keys before (after) it; past the chunk near the sequence's ends, the
        // rows that see all of those keys unmasked.
        [] {
          GpuCase c = ring_case("p2_batch2_two_sided_past_the_chunk_sinks", Strategy::kAllGather, 2,
                                0, 1024, 8, 2, false, true, 300);
          c.wr = 280;
          c.B = 2;
          return c;
        }(),
        [] {
          GpuCase c = ring_case("p4_short_window_right_only", Strategy::kAllGather, 4, 0, 1024, 4,
                                1, false, false);
          c.wr = 50;
          return c;
        }()),
    [](const auto& param_info) { return param_info.param.name; });

// All-gather with packed sequences: per-sequence zigzag chunks, each sequence's keys in one run of
// the gathered rows, masks at each sequence's bottom-right corner (cuDNN's alignment).
INSTANTIATE_TEST_SUITE_P(
    AllGatherPacked, DeviceLoopbackRing,
    ::testing::Values(
        packed_case("p2_gqa_causal", Strategy::kAllGather, 2, 0, 1024, 8, 2, true,
                    {100, 333, 7, 450}),
        packed_case("p4_mha_full", Strategy::kAllGather, 4, 0, 1024, 4, 4, false,
                    {200, 301, 64, 250}),
        packed_case("p8_mqa_causal_empty_seq", Strategy::kAllGather, 8, 0, 2048, 4, 1, true,
                    {700, 90, 513, 0, 401}),
        [] {
          GpuCase c = packed_case("p4_causal_window_100", Strategy::kAllGather, 4, 0, 2048, 8, 2,
                                  true, {700, 90, 513, 0, 401});
          c.wl = 100;  // (no sinks: cuDNN 9.19's thd backward has none)
          return c;
        }(),
        [] {
          GpuCase c = packed_case("p2_gqa_causal_lse_only_fp16", Strategy::kAllGather, 2, 0, 1024,
                                  8, 2, true, {100, 333, 7, 450});
          c.saved = SavedActivations::kLseOnly;
          c.dtype = DType::kFloat16;
          return c;
        }(),
        // Windows without causal (chunks of 256 rows): forward's three row
        // classes, backward's square plus the keys before and after.
        [] {
          GpuCase c = packed_case("p2_two_sided_window_sinks", Strategy::kAllGather, 2, 0, 1024, 8,
                                  2, false, {100, 333, 7, 450});
          c.wl = 100;
          c.wr = 60;
          c.sinks = true;
          return c;
        }(),
        [] {
          GpuCase c = packed_case("p4_window_right_only_lse_only", Strategy::kAllGather, 4, 0, 2048,
                                  8, 2, false, {700, 90, 513, 0, 401});
          c.wr = 40;
          c.saved = SavedActivations::kLseOnly;
          return c;
        }(),
        [] {
          GpuCase c = packed_case("p4_wide_two_sided_window", Strategy::kAllGather, 4, 0, 2048, 4,
                                  1, false, {700, 90, 513, 0, 401});
          c.wl = 300;
          c.wr = 500;
          return c;
        }()),
    [](const auto& param_info) { return param_info.param.name; });

// V and O heads `dv` wide (head_dim_v; MLA: 128 with head_dim 192).
GpuCase mla(GpuCase c, int dv) {
  c.Dv = dv;
  return c;
}

// Ring, hybrid and all-gather with two head widths: KV blocks (ring's travelling fp32 gradient
// sums, all-gather's kv_all and partials) hold K heads of D and V heads of Dv; O is Dv wide.
GpuCase with_dims(GpuCase c, int d, int dv) {
  c.D = d;
  return mla(std::move(c), dv);
}

INSTANTIATE_TEST_SUITE_P(
    Mla, DeviceLoopbackRing,
    ::testing::Values(
        with_dims(ring_case("ring_p2_gqa_causal_sinks", Strategy::kRing, 2, 0, 512, 8, 2, true,
                            true),
                  192, 128),
        with_dims(ring_case("ring_p4_causal_window_100", Strategy::kRing, 4, 0, 1024, 4, 2, true,
                            false, 100),
                  192, 128),
        [] {
          GpuCase c = with_dims(
              ring_case("ring_p2_batch2_lse_only", Strategy::kRing, 2, 0, 1024, 8, 2, true, true),
              192, 128);
          c.B = 2;
          c.saved = SavedActivations::kLseOnly;
          return c;
        }(),
        with_dims(ring_case("hybrid_2x2_gqa_causal_sinks", Strategy::kHybrid, 4, 2, 512, 8, 4, true,
                            true),
                  192, 128),
        with_dims(ring_case("hybrid_4x2_replicated_kv_causal", Strategy::kHybrid, 8, 4, 1024, 8, 2,
                            true, false),
                  192, 128),
        // Heads split unevenly in the Ulysses groups (4 over 3: 2, 1, 1).
        with_dims(ring_case("hybrid_3x2_uneven_mha_4_causal_sinks", Strategy::kHybrid, 6, 3, 1536,
                            4, 4, true, true),
                  192, 128),
        [] {
          GpuCase c = with_dims(ring_case("ring_p2_two_sided_window_wider_v", Strategy::kRing, 2, 0,
                                          1024, 4, 2, false, false, 150),
                                64, 128);
          c.wr = 60;
          return c;
        }(),
        with_dims(ring_case("allgather_p2_gqa_causal_sinks", Strategy::kAllGather, 2, 0, 512, 8, 2,
                            true, true),
                  192, 128),
        with_dims(ring_case("allgather_p8_mqa_causal", Strategy::kAllGather, 8, 0, 1024, 4, 1, true,
                            false),
                  192, 128),
        [] {
          GpuCase c = with_dims(ring_case("allgather_p4_batch2_window_100_lse_only",
                                          Strategy::kAllGather, 4, 0, 1024, 8, 2, true, false, 100),
                                192, 128);
          c.B = 2;
          c.saved = SavedActivations::kLseOnly;
          return c;
        }(),
        [] {
          GpuCase c =
              with_dims(ring_case("allgather_p2_two_sided_window_wider_v", Strategy::kAllGather, 2,
                                  0, 1024, 4, 2, false, false, 150),
                        64, 128);
          c.wr = 60;
          return c;
        }(),
        // Packed sequences (cuDNN's packed backward), per sequence and as the stream:
        // VarlenRows on every step.
        with_dims(packed_case("ring_p2_packed_gqa_causal", Strategy::kRing, 2, 0, 1024, 8, 2, true,
                              {100, 333, 7, 450}),
                  192, 128),
        with_dims(packed_case("hybrid_2x2_packed_gqa_causal", Strategy::kHybrid, 4, 2, 1024, 8, 4,
                              true, {200, 301, 64, 250}),
                  192, 128),
        with_dims(stream_case("ring_p4_stream_mqa_causal_wider_v", Strategy::kRing, 4, 0, 1024, 4,
                              1, true, {500, 90, 0, 401}),
                  64, 128),
        with_dims(packed_case("allgather_p2_packed_gqa_causal", Strategy::kAllGather, 2, 0, 1024, 8,
                              2, true, {100, 333, 7, 450}),
                  192, 128),
        // FP8 K/V blocks as rows of gcd(D, Dv) = 64 values (a K head 3 rows, a V head 2).
        fp8_case(with_dims(ring_case("fp8_ring_p2_gqa_causal_sinks", Strategy::kRing, 2, 0, 512, 8,
                                     2, true, true),
                           192, 128)),
        fp8_case(with_dims(ring_case("fp8_hybrid_2x2_gqa_causal", Strategy::kHybrid, 4, 2, 1024, 8,
                                     4, true, false),
                           192, 128)),
        fp8_case(with_dims(packed_case("fp8_ring_p2_packed_gqa_causal", Strategy::kRing, 2, 0, 1024,
                                       8, 2, true, {100, 333, 7, 450}),
                           192, 128)),
        fp8_case(with_dims(ring_case("fp8_allgather_p2_gqa_causal_sinks", Strategy::kAllGather, 2,
                                     0, 512, 8, 2, true, true),
                           192, 128))),
    [](const auto& param_info) { return param_info.param.name; });

GpuCase sbhd(GpuCase c) {
  c.name = "sbhd_" + c.name;
  c.seq_major = true;
  return c;
}

// Megatron's [s, b, h, d] activations, passed as [b, s, h, d] views with the sequence stride
// outermost, no transpose: the same results as contiguous ones (Ulysses bitwise one GPU's, the
// others within the 2x rule). At P = 1 the plan hands such views to cuDNN in place.
INSTANTIATE_TEST_SUITE_P(
    Sbhd, DeviceLoopbackUlysses,
    ::testing::Values(
        sbhd({"p1_gqa_causal_sinks", 1, Layout::kBSHD, 2, 512, 8, 4, 128, DType::kBFloat16, true,
              -1, -1, true}),
        [] {
          GpuCase c = sbhd(
              {"p1_lse_window", 1, Layout::kBSHD, 3, 512, 8, 2, 64, DType::kFloat16, true, 100});
          c.saved = SavedActivations::kLseOnly;
          return c;
        }(),
        [] {
          GpuCase c = sbhd({"p2_gqa_causal_chunks2", 2, Layout::kBSHD, 2, 512, 8, 4, 128});
          c.chunks = 2;
          c.deterministic = true;
          return c;
        }(),
        [] {
          GpuCase c = sbhd({"p4_replicated_kv_lse_sinks", 4, Layout::kBSHD, 3, 512, 8, 2, 64,
                            DType::kFloat16, true, -1, -1, true});
          c.saved = SavedActivations::kLseOnly;
          return c;
        }(),
        [] {
          GpuCase c = sbhd({"p2_mla_192_128_fp8", 2, Layout::kBSHD, 2, 512, 8, 4, 192});
          c.Dv = 128;
          c.payload = Payload::kFp8;
          return c;
        }()),
    [](const auto& param_info) { return param_info.param.name; });

INSTANTIATE_TEST_SUITE_P(Sbhd, DeviceLoopbackRing,
                         ::testing::Values(
                             [] {
                               GpuCase c =
                                   sbhd(ring_case("ring_p2_gqa_causal_sinks", Strategy::kRing, 2, 0,
                                                  512, 8, 2, true, true));
                               c.B = 2;
                               return c;
                             }(),
                             [] {
                               GpuCase c =
                                   sbhd(ring_case("hybrid_2x2_window_lse", Strategy::kHybrid, 4, 2,
                                                  1024, 8, 4, true, false, 100));
                               c.B = 2;
                               c.saved = SavedActivations::kLseOnly;
                               return c;
                             }(),
                             [] {
                               GpuCase c =
                                   sbhd(ring_case("allgather_p2_gqa_causal", Strategy::kAllGather,
                                                  2, 0, 512, 8, 2, true, false));
                               c.B = 3;
                               return c;
                             }(),
                             [] {
                               GpuCase c =
                                   sbhd(ring_case("allgather_p4_full_lse", Strategy::kAllGather, 4,
                                                  0, 1024, 8, 4, false, false));
                               c.B = 2;
                               c.saved = SavedActivations::kLseOnly;
                               return c;
                             }()),
                         [](const auto& param_info) { return param_info.param.name; });

GpuCase lse_only(GpuCase c, int chunks = 1, int in_flight = 2) {
  c.saved = SavedActivations::kLseOnly;
  c.chunks = chunks;
  c.in_flight = in_flight;
  return c;
}

std::vector<GpuCase> cases() {
  const auto bshd = Layout::kBSHD, thd = Layout::kTHD;
  const auto bf16 = DType::kBFloat16, fp16 = DType::kFloat16;
  return {
      // P = 1: no exchange, the plan hands the caller's tensors to cuDNN (GpuSingleRank below).
      {"p1_gqa_causal_sinks", 1, bshd, 2, 512, 8, 4, 128, bf16, true, -1, -1, true},
      lse_only({"p1_lse_varlen_sinks",
                1,
                thd,
                1,
                1024,
                8,
                2,
                128,
                bf16,
                true,
                -1,
                -1,
                true,
                {0, 333, 700, 1000}}),
      {"p1_varlen_window",
       1,
       thd,
       1,
       1024,
       8,
       4,
       64,
       bf16,
       true,
       64,
       -1,
       false,
       {0, 333, 700, 1000}},
      [] {
        GpuCase c{"p1_chunks4_deterministic",
                  1,
                  Layout::kBSHD,
                  1,
                  512,
                  8,
                  4,
                  128,
                  DType::kBFloat16,
                  true,
                  -1,
                  -1,
                  false,
                  {},
                  true};
        c.chunks = 4;  // (one call for every head all the same)
        return c;
      }(),
      {"p2_gqa_causal", 2, bshd, 2, 512, 8, 4, 128, bf16},
      {"p2_gqa_causal_deterministic",
       2,
       bshd,
       1,
       512,
       8,
       2,
       128,
       bf16,
       true,
       -1,
       -1,
       false,
       {},
       true},
      {"p4_mha_full_fp16", 4, bshd, 1, 256, 8, 8, 64, fp16, false},
      {"p4_gqa_window", 4, bshd, 1, 512, 8, 4, 128, bf16, true, 100},
      {"p4_replicated_kv", 4, bshd, 1, 256, 8, 2, 128, bf16},
      // head_dims other than 64 and 128: rows of 160 and 512 bytes through pack and unpack.
      {"p2_d80_gqa_causal", 2, bshd, 1, 256, 8, 4, 80, bf16, true},
      {"p4_d256_replicated_kv_fp16", 4, bshd, 1, 256, 8, 2, 256, fp16},
      {"p8_mqa_replicated_sinks", 8, bshd, 1, 512, 16, 1, 64, bf16, true, -1, -1, true},
      {"p2_varlen_causal",
       2,
       thd,
       1,
       512,
       4,
       2,
       128,
       bf16,
       true,
       -1,
       -1,
       false,
       {0, 100, 101, 300, 480}},
      {"p8_varlen_gqa", 8, thd, 1, 1024, 8, 8, 64, bf16, true, 64, -1, false, {0, 333, 700, 1000}},
      // Packed windows without causal: the kernel's backward runs as causal bands over each
      // document (cuDNN backend); one GPU runs the same bands on every head, so the bits match.
      {"p2_varlen_two_sided_window_sinks",
       2,
       thd,
       1,
       1024,
       8,
       2,
       64,
       bf16,
       false,
       64,
       32,
       true,
       {0, 333, 334, 700, 1000}},
      lse_only({"p4_varlen_window_right_only_replicated_kv",
                4,
                thd,
                1,
                1024,
                8,
                2,
                128,
                bf16,
                false,
                -1,
                100,
                false,
                {0, 90, 90, 600, 1024}}),
      // Packed with sinks (the kernel's backward runs without them, dSinks from sink_grad):
      // padding rows, an empty sequence, a window, replicated KV heads, 4 chunks.
      {"p2_varlen_sinks",
       2,
       thd,
       1,
       512,
       4,
       2,
       128,
       bf16,
       true,
       -1,
       -1,
       true,
       {0, 100, 101, 300, 480}},
      {"p4_varlen_window_sinks_replicated_kv_fp16",
       4,
       thd,
       1,
       512,
       8,
       2,
       64,
       fp16,
       true,
       64,
       -1,
       true,
       {0, 200, 200, 450}},
      {"p2_chunks4_varlen_sinks_deterministic",
       2,
       thd,
       1,
       512,
       8,
       8,
       64,
       bf16,
       true,
       -1,
       -1,
       true,
       {0, 37, 300, 512},
       true,
       4},
      // Exchanges pipelined with the kernel on a side stream: bitwise the same.
      {"p2_chunks2_gqa_causal",
       2,
       bshd,
       2,
       512,
       8,
       4,
       128,
       bf16,
       true,
       -1,
       -1,
       false,
       {},
       false,
       2},
      {"p2_chunks4_sinks_deterministic",
       2,
       bshd,
       1,
       512,
       8,
       8,
       64,
       bf16,
       true,
       -1,
       -1,
       true,
       {},
       true,
       4},
      {"p2_chunks2_varlen",
       2,
       thd,
       1,
       512,
       8,
       4,
       128,
       bf16,
       true,
       -1,
       -1,
       false,
       {0, 100, 101, 300, 480},
       false,
       2},
      // saved_activations = lse: backward exchanges Q, K, V, O again, chunks through slots (4
      // chunks through 2 slots and through 1: a slot reused before its last reader finished would
      // show here), replicated KV heads, packed sequences.
      lse_only({"p2_lse_gqa_causal", 2, bshd, 2, 512, 8, 4, 128, bf16}),
      lse_only({"p2_lse_chunks4_sinks_deterministic",
                2,
                bshd,
                1,
                512,
                8,
                8,
                64,
                bf16,
                true,
                -1,
                -1,
                true,
                {},
                true},
               4),
      lse_only({"p2_lse_chunks4_one_in_flight", 2, bshd, 2, 512, 16, 8, 128, bf16}, 4, 1),
      lse_only(
          {"p4_lse_replicated_kv_sinks", 4, bshd, 1, 256, 8, 2, 128, bf16, true, -1, -1, true}),
      lse_only({"p2_lse_chunks2_varlen",
                2,
                thd,
                1,
                512,
                8,
                4,
                128,
                bf16,
                true,
                -1,
                -1,
                false,
                {0, 100, 101, 300, 480}},
               2),
      lse_only({"p2_lse_chunks2_varlen_sinks",
                2,
                thd,
                1,
                512,
                8,
                4,
                128,
                bf16,
                true,
                -1,
                -1,
                true,
                {0, 100, 101, 300, 480}},
               2),
      // head_dim_v != head_dim (MLA, DeepSeek-V3: 192 with 128): mixed-width Q|K|V message
      // rows (64-element channels), O/dO rows 128 wide and dQ rows 192; the cp = 1 plan, head
      // chunks, replicated KV heads (fp32 partials), LSE-only slots, a window without causal
      // (cuDNN's bands) and sinks; packed batches (cuDNN's packed backward reading Q from the
      // Q|K|V receive rows and writing dQ into the dQ|dK|dV send rows).
      mla({"p1_mla_gqa_causal_sinks", 1, bshd, 1, 512, 8, 2, 192, bf16, true, -1, -1, true}, 128),
      mla({"p2_mla_gqa_causal", 2, bshd, 2, 512, 8, 2, 192, bf16, true}, 128),
      [] {
        GpuCase c = mla({"p2_mla_chunks2_gqa_sinks", 2, Layout::kBSHD, 1, 512, 8, 4, 192,
                         DType::kBFloat16, true, -1, -1, true},
                        128);
        c.chunks = 2;
        return c;
      }(),
      mla({"p4_mla_replicated_kv_causal", 4, bshd, 1, 512, 8, 2, 192, bf16, true}, 128),
      mla(lse_only({"p2_mla_lse_chunks2_one_in_flight", 2, bshd, 1, 512, 8, 4, 192, bf16, true}, 2,
                   1),
          128),
      mla({"p2_mla_two_sided_window_fp16", 2, bshd, 1, 512, 4, 2, 192, fp16, false, 64, 32}, 128),
      mla({"p2_wider_v_d64_v128", 2, bshd, 1, 512, 4, 2, 64, bf16, true}, 128),
      mla({"p2_mla_varlen_gqa_causal_sinks",
           2,
           thd,
           1,
           512,
           8,
           2,
           192,
           bf16,
           true,
           -1,
           -1,
           true,
           {0, 100, 101, 300, 480}},
          128),
      mla(lse_only({"p4_mla_varlen_replicated_kv_lse",
                    4,
                    thd,
                    1,
                    512,
                    8,
                    2,
                    192,
                    bf16,
                    true,
                    -1,
                    -1,
                    false,
                    {0, 200, 333, 512}}),
          128),
      mla({"p2_wider_v_varlen_d64_v128",
           2,
           thd,
           1,
           512,
           4,
           4,
           64,
           bf16,
           true,
           -1,
           -1,
           false,
           {0, 7, 260, 512}},
          128),
  };
}

INSTANTIATE_TEST_SUITE_P(Gpu, DeviceLoopbackUlysses, ::testing::ValuesIn(cases()),
                         [](const auto& param_info) { return param_info.param.name; });

// Uneven heads (cp < num_heads_kv, cp not dividing it): the first num_heads_kv mod cp ranks own one
// KV head (and its query group) more; cuDNN on every rank reads only its own heads out of rows with
// the larger rank's slots. Every rule of MatchesSingleGpu, O and the LSE bitwise.
std::vector<GpuCase> uneven_cases() {
  const auto bshd = Layout::kBSHD, thd = Layout::kTHD;
  const auto bf16 = DType::kBFloat16, fp16 = DType::kFloat16;
  return {
      {"p2_gqa_12_over_3_causal_sinks", 2, bshd, 2, 512, 12, 3, 128, bf16, true, -1, -1, true},
      lse_only({"p4_mha_6_fp16_window", 4, bshd, 1, 512, 6, 6, 64, fp16, false, 100, 20}),
      {"p3_gqa_10_over_5_varlen",
       3,
       thd,
       1,
       1002,
       10,
       5,
       128,
       bf16,
       true,
       -1,
       -1,
       false,
       {0, 300, 301, 1000}},
      [] {
        // (CUDA graphs: test_multigpu's NcclUlyssesGraph; the loopback's ranks cannot be captured.)
        GpuCase c{"p3_gqa_8_over_4_deterministic", 3, bshd, 1, 768, 8, 4, 128, bf16, true};
        c.deterministic = true;
        return c;
      }(),
      fp8_case({"fp8_p2_gqa_6_over_3_sinks", 2, bshd, 1, 512, 6, 3, 128, bf16, true, -1, -1, true}),
      mla({"mla_p3_mha_4_varlen_192_128",
           3,
           thd,
           1,
           513,
           4,
           4,
           192,
           bf16,
           true,
           -1,
           -1,
           false,
           {0, 200, 333, 512}},
          128),
      // Head chunks of unequal sizes (2 chunks: the first one head more where they are odd), with
      // uneven heads too: 8 KV heads on 3 ranks are 3, 3, 2, in 2 chunks (2, 1), (2, 1), (1, 1).
      [] {
        GpuCase c{"p3_gqa_16_over_8_chunks2_sinks",
                  3,
                  bshd,
                  1,
                  768,
                  16,
                  8,
                  128,
                  bf16,
                  true,
                  -1,
                  -1,
                  true};
        c.chunks = 2;
        return c;
      }(),
      lse_only({"p3_mha_7_lse_chunks2_one_in_flight_window", 3, bshd, 2, 768, 7, 7, 64, fp16, false,
                100, 20},
               2, 1),
      [] {
        GpuCase c{"p2_gqa_12_over_6_varlen_chunks2",
                  2,
                  thd,
                  1,
                  1000,
                  12,
                  6,
                  128,
                  bf16,
                  true,
                  -1,
                  -1,
                  false,
                  {0, 300, 301, 1000}};
        c.chunks = 2;
        return c;
      }(),
      [] {
        GpuCase c =
            fp8_case({"fp8_p3_gqa_14_over_7_chunks2", 3, bshd, 1, 768, 14, 7, 128, bf16, true});
        c.chunks = 2;
        return c;
      }(),
      // LSE-only slots of different widths: rank 0's 4 heads in chunks of 2, 1, 1, chunks 0 and 2
      // through the first slot (2 heads wide), chunk 1 through the second (1 head).
      mla(lse_only({"p2_mla_mha_7_lse_chunks3_two_slots_causal_sinks", 2, bshd, 1, 1024, 7, 7, 192,
                    bf16, true, -1, -1, true},
                   3, 2),
          128),
      lse_only(fp8_case({"fp8_p2_mha_7_lse_chunks3_two_slots", 2, bshd, 2, 512, 7, 7, 128, bf16}),
               3, 2),
  };
}

INSTANTIATE_TEST_SUITE_P(Uneven, DeviceLoopbackUlysses, ::testing::ValuesIn(uneven_cases()),
                         [](const auto& param_info) { return param_info.param.name; });

// Inputs produced on a non-default stream and freed (stream-ordered) right after the call returns
// must still give the right results: ulysses reads them in stream order, never later.
// cp = 1 on slices of fused buffers (Q|K|V and dQ|dK|dV, as a framework's projections hand them
// over), which the plan passes to cuDNN in place (which views the kernel gets: test_ulysses'
// UlyssesSingleRank), dense and packed, head-sharded and LSE-only saves: every rule of
// MatchesSingleGpu against cuDNN alone on contiguous tensors.
TEST(GpuSingleRank, FusedViewsMatchTheKernelAlone) {
  ULYSSES_REQUIRE_GPUS(1);
  const auto bshd = Layout::kBSHD, thd = Layout::kTHD;
  const auto heads = SavedActivations::kHeadSharded, lse = SavedActivations::kLseOnly;
  struct Scenario {
    const char* name;
    Layout layout;
    SavedActivations saved;
    // Elements: 1 puts every view off 16 bytes, so rows go through the plan's own buffers; four
    // rounds then, the device's free memory the same after the second and the third, and the
    // buffers (held_bytes()) given back by release_held() before the fourth, whose results are
    // the ones checked.
    std::int64_t shift = 0;
    int D = 128, Dv = 0;  // head_dim, head_dim_v (0: D)
  };
  for (const Scenario& sc : {Scenario{"bshd_heads", bshd, heads}, Scenario{"bshd_lse", bshd, lse},
                             Scenario{"thd_heads", thd, heads}, Scenario{"thd_lse", thd, lse},
                             Scenario{"bshd_lse_misaligned", bshd, lse, 1},
                             Scenario{"thd_heads_misaligned", thd, heads, 1},
                             Scenario{"bshd_heads_misaligned", bshd, heads, 1},
                             // MLA: packed rows of two widths, in place too (cuDNN 9.19).
                             Scenario{"thd_heads_mla", thd, heads, 0, 192, 128},
                             Scenario{"thd_lse_mla", thd, lse, 0, 192, 128},
                             Scenario{"thd_heads_mla_misaligned", thd, heads, 1, 192, 128},
                             Scenario{"bshd_heads_mla", bshd, heads, 0, 192, 128}}) {
    SCOPED_TRACE(sc.name);
    GpuCase c{sc.name, 1,  sc.layout, sc.layout == thd ? 1 : 2, 1024,
              8,       2,  sc.D,      DType::kBFloat16,         true,
              -1,      -1, true};
    if (sc.layout == thd) c.cu = {0, 333, 700, 1000};
    c.saved = sc.saved;
    c.Dv = sc.Dv;
    const auto seed = testing::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const testing::GpuInputs in = testing::make_gpu_inputs(c, rng);
    const testing::GpuOutputs single = testing::run_single_gpu(c, in);

    // Q|K|V rows per token: Q and K heads of D, V heads of Dv. Q, K, V (and dQ, dK, dV) by their
    // first head.
    const int Dv = sc.Dv > 0 ? sc.Dv : c.D;
    const std::int64_t row = (c.Hq + c.Hkv) * c.D + c.Hkv * Dv;
    enum Part { kQ, kK, kV };
    auto slice = [&](void* base, Part part, Device d) {
      const std::int64_t at[] = {0, c.Hq * c.D, (c.Hq + c.Hkv) * c.D};
      return testing::row_slice(base, c.dtype, c.layout, c.B, c.S, row, at[part],
                                part == kQ ? c.Hq : c.Hkv, part == kV ? Dv : c.D, sc.shift, d);
    };
    testing::HostTensor qkv(c.dtype, {c.B * c.S * row + sc.shift}), grads = qkv;
    testing::poison(grads);
    testing::copy_into(slice(qkv.storage.data(), kQ, Device::host()), in.q);
    testing::copy_into(slice(qkv.storage.data(), kK, Device::host()), in.k);
    testing::copy_into(slice(qkv.storage.data(), kV, Device::host()), in.v);
    const Device dev = Device::cuda(0);
    testing::DeviceTensor qkv_d = testing::DeviceTensor::of(qkv),
                          grads_d = testing::DeviceTensor::of(grads),
                          o = testing::DeviceTensor::of(in.shapes.o),
                          lse_d = testing::DeviceTensor::of(in.shapes.lse),
                          d_o = testing::DeviceTensor::of(in.d_o),
                          sinks = testing::DeviceTensor::of(in.sinks),
                          ds = testing::DeviceTensor::of(in.shapes.dsinks),
                          cu = testing::DeviceTensor::of(in.cu);
    auto comms = create_device_loopback_group(1, 0);
    ASSERT_TRUE(comms.is_ok()) << comms.status().to_string();
    auto kernel = create_cudnn_attention(0);
    ASSERT_TRUE(kernel.is_ok()) << kernel.status().to_string();
    auto plan = DistributedAttention::create(testing::plan_config_of(c), *(*comms)[0], **kernel);
    ASSERT_TRUE(plan.is_ok()) << plan.status().to_string();
    testing::DeviceBytes ws((*plan)->workspace_bytes()), saved((*plan)->saved_bytes());
    const TensorView q = slice(qkv_d.ptr, kQ, dev), k = slice(qkv_d.ptr, kK, dev),
                     v = slice(qkv_d.ptr, kV, dev);
    const auto* cu_d = static_cast<const std::int32_t*>(cu.ptr);
    ForwardArgs f{.q = q,
                  .k = k,
                  .v = v,
                  .sinks = sinks.view,
                  .o = o.view,
                  .lse = lse_d.view,
                  .cu_seqlens = c.cu,
                  .cu_seqlens_device = cu_d,
                  .workspace = ws.ptr,
                  .saved = saved.ptr};
    BackwardArgs b{.d_o = d_o.view,
                   .sinks = sinks.view,
                   .dq = slice(grads_d.ptr, kQ, dev),
                   .dk = slice(grads_d.ptr, kK, dev),
                   .dv = slice(grads_d.ptr, kV, dev),
                   .dsinks = ds.view,
                   .cu_seqlens = c.cu,
                   .cu_seqlens_device = cu_d,
                   .workspace = ws.ptr,
                   .saved = saved.ptr,
                   .q = q,
                   .k = k,
                   .v = v,
                   .o = o.view};
    std::size_t free_after[4] = {}, total = 0;
    const int rounds = sc.shift != 0 ? 4 : 1;
    for (int round = 0; round < rounds; ++round) {
      if (round == 3) {
        // The kernel's too (packed graphs may have grown its buffers): stream-ordered buffers
        // share the device pool's blocks, which go back to the device when all of theirs are free.
        const std::size_t held = (*plan)->held_bytes(), kernel_held = (*kernel)->held_bytes();
        EXPECT_GT(held, 0u) << "copy buffers not counted";
        ASSERT_TRUE((*plan)->release_held(nullptr).is_ok());
        ASSERT_TRUE((*kernel)->release_held(nullptr).is_ok());
        ASSERT_CUDA(cudaDeviceSynchronize());
        std::size_t free_released = 0;
        ASSERT_CUDA(cudaMemGetInfo(&free_released, &total));
        EXPECT_EQ((*plan)->held_bytes(), 0u);
        EXPECT_EQ((*kernel)->held_bytes(), 0u);
        EXPECT_GE(free_released, free_after[2] + held + kernel_held)
            << "release_held() freed less than " << held << " + " << kernel_held << " bytes";
      }
      if (round > 0) {  // poisoned again: each call must write every result itself
        ASSERT_CUDA(cudaMemset(grads_d.ptr, 0xFF, grads.storage.size()));
        ASSERT_CUDA(cudaMemset(o.ptr, 0xFF, in.shapes.o.storage.size()));
      }
      Status st = (*plan)->forward(f, nullptr);
      if (st.is_ok()) st = (*plan)->backward(b, nullptr);
      ASSERT_TRUE(st.is_ok()) << st.to_string();
      ASSERT_CUDA(cudaDeviceSynchronize());
      ASSERT_CUDA(cudaMemGetInfo(&free_after[round], &total));
    }
    if (rounds == 4) {
      EXPECT_EQ(free_after[1], free_after[2]) << "the plan's copy buffers grew";
    } else if (sc.layout == bshd || Dv != c.D) {
      // Aligned views the kernel used in place: the plan allocated no copy buffers. (Packed with
      // equal head dims the fused dQ rows have another token stride than O's, which cuDNN's
      // packed backward does not take: those rows are copied.)
      EXPECT_EQ((*plan)->held_bytes(), 0u) << "rows copied through the plan's buffers";
    }
    ASSERT_CUDA(cudaDeviceSynchronize());
    const testing::HostTensor g = grads_d.download(grads);
    void* gh = const_cast<unsigned char*>(g.storage.data());
    const testing::GpuOutputs got{o.download(in.shapes.o),
                                  lse_d.download(in.shapes.lse),
                                  testing::copy_of(slice(gh, kQ, Device::host()), in.shapes.dq),
                                  testing::copy_of(slice(gh, kK, Device::host()), in.shapes.dk),
                                  testing::copy_of(slice(gh, kV, Device::host()), in.shapes.dv),
                                  ds.download(in.shapes.dsinks)};
    testing::expect_matches_single_gpu(c, single, got);
  }
}

TEST(GpuStreams, InputsFreedRightAfterTheCallStayCorrect) {
  ULYSSES_REQUIRE_GPUS(1);
  const GpuCase c{"streams", 1, Layout::kBSHD, 1, 256, 4, 2, 64, DType::kBFloat16};
  std::mt19937_64 rng(testing::fresh_seed());
  const testing::GpuInputs in = testing::make_gpu_inputs(c, rng);
  const testing::GpuOutputs single = testing::run_single_gpu(c, in);
  auto comms = create_device_loopback_group(1, 0);
  ASSERT_TRUE(comms.is_ok());
  auto kernel = create_cudnn_attention(0);
  ASSERT_TRUE(kernel.is_ok());
  const PlanConfig cfg{.attention = testing::attention_of(c),
                       .parallel = {.cp = 1},
                       .dtype = c.dtype,
                       .batch = c.B,
                       .seqlen = c.S,
                       .training = false};
  auto plan = DistributedAttention::create(cfg, *(*comms)[0], **kernel);
  ASSERT_TRUE(plan.is_ok()) << plan.status().to_string();
  cudaStream_t s = nullptr;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  testing::DeviceBytes ws((*plan)->workspace_bytes());
  testing::DeviceTensor o(in.shapes.o);
  for (int it = 0; it < 50; ++it) {
    void *q = nullptr, *k = nullptr, *v = nullptr;
    ASSERT_CUDA(cudaMallocAsync(&q, in.q.storage.size(), s));
    ASSERT_CUDA(cudaMallocAsync(&k, in.k.storage.size(), s));
    ASSERT_CUDA(cudaMallocAsync(&v, in.v.storage.size(), s));
    ASSERT_CUDA(
        cudaMemcpyAsync(q, in.q.storage.data(), in.q.storage.size(), cudaMemcpyHostToDevice, s));
    ASSERT_CUDA(
        cudaMemcpyAsync(k, in.k.storage.data(), in.k.storage.size(), cudaMemcpyHostToDevice, s));
    ASSERT_CUDA(
        cudaMemcpyAsync(v, in.v.storage.data(), in.v.storage.size(), cudaMemcpyHostToDevice, s));
    auto view = [](const testing::HostTensor& h, void* p) {
      TensorView t = h.view;
      t.data = p;
      t.device = Device::cuda(0);
      return t;
    };
    ForwardArgs f{.q = view(in.q, q),
                  .k = view(in.k, k),
                  .v = view(in.v, v),
                  .o = o.view,
                  .workspace = ws.ptr};
    ASSERT_TRUE((*plan)->forward(f, s).is_ok());
    ASSERT_CUDA(cudaFreeAsync(q, s));
    ASSERT_CUDA(cudaFreeAsync(k, s));
    ASSERT_CUDA(cudaFreeAsync(v, s));
    // Another allocation of the same size now reuses the freed memory; poison it.
    void* junk = nullptr;
    ASSERT_CUDA(cudaMallocAsync(&junk, in.q.storage.size(), s));
    ASSERT_CUDA(cudaMemsetAsync(junk, 0xFF, in.q.storage.size(), s));
    ASSERT_CUDA(cudaFreeAsync(junk, s));
  }
  ASSERT_CUDA(cudaStreamSynchronize(s));
  EXPECT_BITWISE_EQ(single.o, o.download(in.shapes.o), "O after 50 stream-ordered iterations");
  cudaStreamDestroy(s);
}

// 1000 forward+backward steps of two device-loopback ranks after 10 warm-up steps: the free device
// memory must not move (no per-step allocation anywhere: plan, kernel, communicator, events).
void expect_no_memory_growth(const GpuCase& c) {
  std::mt19937_64 rng(testing::fresh_seed());
  const testing::GpuInputs in = testing::make_gpu_inputs(c, rng);
  auto comms = create_device_loopback_group(2, 0);
  ASSERT_TRUE(comms.is_ok());
  std::size_t free_after_warmup = 0, free_at_end = 0, total = 0;
  std::vector<Status> st(2);
  std::vector<std::thread> threads;
  std::barrier rendezvous(2);
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      cudaSetDevice(0);
      cudaStream_t s = nullptr;
      cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
      auto kernel = create_cudnn_attention(0);
      const PlanConfig cfg = testing::plan_config_of(c);
      auto plan =
          DistributedAttention::create(cfg, *(*comms)[static_cast<std::size_t>(r)], **kernel);
      if (!plan.is_ok()) {
        st[static_cast<std::size_t>(r)] = plan.status();
        return;
      }
      auto shard = [&](const testing::HostTensor& h) {
        return testing::DeviceTensor::of(h);  // full-size buffers; views below are shard-sized
      };
      testing::DeviceTensor q = shard(in.q), k = shard(in.k), v = shard(in.v), d_o = shard(in.d_o),
                            o = shard(in.shapes.o), dq = shard(in.shapes.dq),
                            dk = shard(in.shapes.dk), dv = shard(in.shapes.dv);
      auto sv = [&](const testing::DeviceTensor& d) {
        return shard_view(d.view, Layout::kBSHD, 2, r).value();
      };
      testing::DeviceBytes ws((*plan)->workspace_bytes()), saved((*plan)->saved_bytes());
      ForwardArgs f{
          .q = sv(q), .k = sv(k), .v = sv(v), .o = sv(o), .workspace = ws.ptr, .saved = saved.ptr};
      BackwardArgs b{.d_o = sv(d_o),
                     .dq = sv(dq),
                     .dk = sv(dk),
                     .dv = sv(dv),
                     .workspace = ws.ptr,
                     .saved = saved.ptr,
                     .q = f.q,  // read with saved_activations = lse
                     .k = f.k,
                     .v = f.v,
                     .o = f.o};
      auto step = [&]() -> Status {
        ULYSSES_RETURN_IF_ERROR((*plan)->forward(f, s));
        return (*plan)->backward(b, s);
      };
      for (int i = 0; i < 10 && st[static_cast<std::size_t>(r)].is_ok(); ++i)
        st[static_cast<std::size_t>(r)] = step();
      cudaStreamSynchronize(s);
      rendezvous.arrive_and_wait();
      if (r == 0) cudaMemGetInfo(&free_after_warmup, &total);
      rendezvous.arrive_and_wait();
      for (int i = 0; i < 1000 && st[static_cast<std::size_t>(r)].is_ok(); ++i)
        st[static_cast<std::size_t>(r)] = step();
      cudaStreamSynchronize(s);
      rendezvous.arrive_and_wait();
      if (r == 0) cudaMemGetInfo(&free_at_end, &total);
      rendezvous.arrive_and_wait();
      cudaStreamDestroy(s);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_ALL_OK(st);
  EXPECT_EQ(free_after_warmup, free_at_end) << "device memory changed over 1000 steps";
}

TEST(GpuStreams, NoDeviceMemoryGrowthOver1000Steps) {
  ULYSSES_REQUIRE_GPUS(1);
  expect_no_memory_growth({"growth", 2, Layout::kBSHD, 1, 256, 4, 2, 64, DType::kBFloat16});
}

TEST(GpuStreams, NoDeviceMemoryGrowthOver1000StepsLseOnlyInSlots) {
  ULYSSES_REQUIRE_GPUS(1);
  // Side stream, 4 chunks through 2 slots, q/k/v/o exchanged again in backward.
  GpuCase c{"growth_lse", 2, Layout::kBSHD, 1, 256, 16, 8, 64, DType::kBFloat16};
  c.chunks = 4;
  c.saved = SavedActivations::kLseOnly;
  expect_no_memory_growth(c);
}

TEST(GpuStreams, NoDeviceMemoryGrowthOver1000StepsRing) {
  ULYSSES_REQUIRE_GPUS(1);
  // KV hops and dK/dV hops on the side stream, block gradients added in the kernel, q/o read in
  // place (lse); any [B, S/2, H, D] shard will do for memory.
  for (SavedActivations saved : {SavedActivations::kHeadSharded, SavedActivations::kLseOnly}) {
    GpuCase c{"growth_ring", 2, Layout::kBSHD, 1, 256, 8, 2, 64, DType::kBFloat16};
    c.strategy = Strategy::kRing;
    c.saved = saved;
    expect_no_memory_growth(c);
  }
}

}  // namespace
}  // namespace ulysses
