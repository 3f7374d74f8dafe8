// Random configurations (tests/common/config_sweep.h) through cuDNN on the device loopback (P
// virtual ranks on one GPU), against one GPU running the whole sequence and the FP64 truth: what
// the library takes on a GPU it must compute right, for combinations no hand-written case names.
//
// Checked as the hand-written suites check them (gpu_ulysses_common.h): ulysses bitwise one GPU's
// O, LSE, dK, dV (dQ too with the deterministic backward; else within 2 ulps), ring, hybrid and
// allgather within STYLE.md's 2x rule of the FP64 truth. Every draw trains (forward + backward).
// Half the draws' loopback says its copy to a rank itself is no separate copy (as NCCL), so
// Ulysses sends own rows through the exchange there and packs them in place in the others; a third
// of the dense draws give the ranks sequence-major ([S/cp, B, H, D], sbhd) activations.
//
// ULYSSES_SWEEP_CASES=n runs n draws (default below), ULYSSES_SWEEP_SEED=s replays one,
// ULYSSES_SWEEP_MATCH="words" keeps to draws whose description holds them (config_sweep.h).
#include <gtest/gtest.h>

#include <chrono>

#include "common/config_sweep.h"
#include "gpu/gpu_ulysses_common.h"

namespace ulysses {
namespace {

using testing::GpuCase;
using testing::SweepCase;

constexpr int kDefaultCases = 24;

testing::SweepSpace gpu_space() {
  return {.cps = {1, 2, 3, 4, 8},
          .dtypes = {DType::kBFloat16, DType::kFloat16},
          .head_dims = {32, 64, 72, 128, 256},
          .kv_heads = {1, 2, 4},
          .group_sizes = {1, 2, 4},
          .max_tokens = 512,
          .max_doc = 200,
          .max_docs = 5,
          .deterministic = true};
}

// The harness's case for a draw (it always trains and keeps nothing between backwards).
GpuCase gpu_case(const SweepCase& c) {
  GpuCase g{"sweep", c.P, c.layout, c.B, c.S, c.Hq, c.Hkv, c.D, c.dtype};
  g.causal = c.causal;
  g.wl = c.wl;
  g.wr = c.wr;
  g.sinks = c.sinks;
  g.cu = c.cu;
  g.deterministic = c.deterministic;
  g.chunks = c.chunks;
  g.strategy = c.strategy;
  g.U = c.U;
  g.saved = c.saved;
  g.in_flight = c.in_flight;
  g.payload = c.payload;
  g.sharding = c.sharding;
  g.Dv = c.Dv;
  return g;
}

SweepCase draw(std::uint64_t seed) {
  SweepCase c = testing::draw_case(seed, gpu_space());
  c.training = true;
  c.keep_saved = false;
  return c;
}

TEST(GpuSweep, WhatThePlanTakesItComputesOnCudnn) {
  ULYSSES_REQUIRE_GPUS(1);
  const testing::SweepSeeds seeds = testing::sweep_seeds(kDefaultCases, testing::fresh_seed());
  auto kernel = create_cudnn_attention(0);
  ASSERT_TRUE(kernel.is_ok()) << kernel.status().to_string();
  std::map<std::string, int> refusals;
  std::map<Strategy, int> ran;
  int draws = 0;
  for (std::uint64_t seed : seeds.seeds) {
    SweepCase c = testing::wanted_draw(seed, draw);
    for (int tries = 0; tries < 50; ++tries, ++draws) {
      auto comms = create_device_loopback_group(c.P, 0);
      ASSERT_TRUE(comms.is_ok()) << comms.status().to_string();
      Status refused;
      if (testing::plan_takes(c, *comms, **kernel, refusals, &refused)) break;
      // The plans ask cuDNN only for calls it runs (test_sweep holds them to its rules on the
      // CPU; here the backend itself answers), except what no plan can avoid.
      EXPECT_TRUE(refused.message().find("CudnnAttention") == std::string::npos ||
                  testing::kernel_refusal_expected(c, refused))
          << c.describe() << ": " << refused.to_string();
      c = testing::wanted_draw(std::mt19937_64(c.seed)(), draw);
    }
    ++draws;
    const GpuCase g = gpu_case(c);
    SCOPED_TRACE(c.describe());
    const auto t0 = std::chrono::steady_clock::now();
    std::mt19937_64 rng(c.seed ^ 0x5eedULL);
    const testing::GpuInputs in = testing::make_gpu_inputs(g, rng);
    const testing::GpuInputs delivered = testing::as_delivered(g, in);
    const testing::GpuOutputs single = testing::run_single_gpu(g, delivered);
    // Half the draws send a rank's own rows through the exchange (copies_own_rows() false, as over
    // NCCL) instead of packing them in place.
    const bool own_rows = std::bernoulli_distribution(0.5)(rng);
    // A third of the dense draws hand the ranks' activations over sequence-major (sbhd).
    GpuCase ranks = g;
    ranks.seq_major = c.layout == Layout::kBSHD && std::bernoulli_distribution(1.0 / 3)(rng);
    auto comms = create_device_loopback_group(c.P, 0, LoopbackOptions{.copies_own_rows = own_rows});
    ASSERT_TRUE(comms.is_ok()) << comms.status().to_string();
    const testing::GpuOutputs dist =
        testing::run_distributed(ranks, in, *comms, [](int) { return 0; });
    if (c.strategy == Strategy::kUlysses) {
      testing::expect_matches_single_gpu(g, single, dist);
    } else {
      testing::expect_ring_within_2x(g, single, dist, testing::run_reference_fp64(g, delivered));
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s %s%s%s (%.1f s)\n", HasFailure() ? "FAIL" : "ok  ", c.describe().c_str(),
                own_rows ? "" : " own-rows-exchanged", ranks.seq_major ? " sbhd" : "", s);
    std::fflush(stdout);
    ++ran[c.strategy];
    if (HasFailure()) break;  // one failing draw is enough to replay
  }
  testing::print_sweep(ran, draws, refusals);
}

}  // namespace
}  // namespace ulysses
