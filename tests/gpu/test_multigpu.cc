// NCCL across every local GPU (one host thread per GPU), and the peer-copy communicator (on one GPU
// too: a device listed twice holds two ranks): data movement bit-exact, Ulysses against
// the single-GPU cuDNN run, mesh splits, and the timeout path (a peer that never calls).
#include <gtest/gtest.h>
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <chrono>

#include "gpu/gpu_ulysses_common.h"

namespace ulysses {
namespace {

using testing::GpuCase;

std::vector<std::unique_ptr<Communicator>> nccl_group(int n, NcclOptions options = {}) {
  auto id = create_nccl_unique_id();
  EXPECT_TRUE(id.is_ok()) << id.status().to_string();
  std::vector<std::unique_ptr<Communicator>> comms(static_cast<std::size_t>(n));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      auto c = create_nccl_communicator(*id, n, r, r, options);
      EXPECT_TRUE(c.is_ok()) << c.status().to_string();
      if (c.is_ok()) comms[static_cast<std::size_t>(r)] = std::move(c).value();
    });
  }
  for (auto& t : threads) t.join();
  return comms;
}

// Rank r of a group spread over every local GPU: GPU r mod (GPU count).
int device_of_rank(int r) { return r % cuda_device_count(); }

// Ranks for the peer-copy tests: one per local GPU, at least 2 (with one GPU, both on it: the
// same code path, a device listed twice holds two ranks).
int peer_copy_ranks() { return std::max(2, cuda_device_count()); }

// n copy-engine communicators (create_peer_copy_group), rank r on device_of_rank(r).
std::vector<std::unique_ptr<Communicator>> peer_copy_group(int n) {
  std::vector<int> devices(static_cast<std::size_t>(n));
  for (int r = 0; r < n; ++r) devices[static_cast<std::size_t>(r)] = device_of_rank(r);
  auto comms = create_peer_copy_group(devices);
  EXPECT_TRUE(comms.is_ok()) << comms.status().to_string();
  return comms.is_ok() ? std::move(comms).value() : std::vector<std::unique_ptr<Communicator>>{};
}

// Rank-stamped words through all_to_all_v with uneven counts (or, `uniform`, the same count for
// every peer at offsets peer · count, the shape NCCL's own ncclAlltoAll takes): every word must
// land where it belongs.
void expect_all_to_all_bit_exact(std::vector<std::unique_ptr<Communicator>>& comms,
                                 bool uniform = false) {
  const int n = static_cast<int>(comms.size());
  ASSERT_GE(n, 1);
  std::atomic<std::int64_t> wrong{0};
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      cudaSetDevice(device_of_rank(r));
      std::vector<std::size_t> sc(n), so(n), rc(n), ro(n);
      std::size_t st = 0, rt = 0;
      for (int p = 0; p < n; ++p) {
        sc[p] = 4 * static_cast<std::size_t>(uniform ? 1000 : r + 2 * p + 1000);
        so[p] = st;
        st += sc[p];
        rc[p] = 4 * static_cast<std::size_t>(uniform ? 1000 : p + 2 * r + 1000);
        ro[p] = rt;
        rt += rc[p];
      }
      std::vector<std::uint32_t> send(st / 4), recv(rt / 4, 0);
      for (int p = 0; p < n; ++p) {
        for (std::size_t i = 0; i < sc[p] / 4; ++i)
          send[so[p] / 4 + i] = (r << 24) | (p << 16) | static_cast<std::uint32_t>(i);
      }
      void *ds = nullptr, *dr = nullptr;
      cudaMalloc(&ds, st);
      cudaMalloc(&dr, rt);
      cudaMemcpy(ds, send.data(), st, cudaMemcpyHostToDevice);
      cudaStream_t s = nullptr;
      cudaStreamCreate(&s);
      Status status = comms[r]->all_to_all_v(ds, sc, so, dr, rc, ro, s);
      if (status.is_ok()) status = synchronize(*comms[r], s);
      EXPECT_TRUE(status.is_ok()) << status.to_string();
      cudaMemcpy(recv.data(), dr, rt, cudaMemcpyDeviceToHost);
      for (int p = 0; p < n; ++p) {
        for (std::size_t i = 0; i < rc[p] / 4; ++i) {
          wrong += recv[ro[p] / 4 + i] !=
                   ((static_cast<std::uint32_t>(p) << 24) | (static_cast<std::uint32_t>(r) << 16) |
                    static_cast<std::uint32_t>(i));
        }
      }
      cudaFree(ds);
      cudaFree(dr);
      cudaStreamDestroy(s);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST(Nccl, AllToAllVIsBitExact) {
  ULYSSES_REQUIRE_GPUS(2);
  auto comms = nccl_group(cuda_device_count());
  expect_all_to_all_bit_exact(comms);
}

// Uniform exchanges (Ulysses' Q|K|V and dO) go through ncclAlltoAll by default and through a
// group of ncclSend/ncclRecv with native_all_to_all = false. Runs on one GPU too (a one-rank
// communicator), so the call path is exercised wherever there is a GPU.
TEST(Nccl, UniformAllToAllIsBitExactNativeAndGrouped) {
  ULYSSES_REQUIRE_GPUS(1);
  for (bool native : {true, false}) {
    SCOPED_TRACE(native ? "ncclAlltoAll" : "ncclSend/ncclRecv group");
    NcclOptions options;
    options.native_all_to_all = native;
    auto comms = nccl_group(cuda_device_count(), options);
    expect_all_to_all_bit_exact(comms, /*uniform=*/true);
  }
}

TEST(PeerCopy, AllToAllVIsBitExact) {
  ULYSSES_REQUIRE_GPUS(1);
  auto comms = peer_copy_group(peer_copy_ranks());
  expect_all_to_all_bit_exact(comms);
}

// Three ranks: with two GPUs one of them holds two ranks (same-device and peer copies mixed).
TEST(PeerCopy, AllToAllVIsBitExactWithThreeRanks) {
  ULYSSES_REQUIRE_GPUS(1);
  auto comms = peer_copy_group(3);
  expect_all_to_all_bit_exact(comms);
}

// Ulysses over every local GPU through NCCL or the peer-copy communicator, against one GPU (on the
// inputs as the fp8 payload rounds them, for such cases).
void ulysses_matches_single_gpu(GpuCase c, bool peer_copy) {
  c.P = peer_copy ? peer_copy_ranks() : cuda_device_count();
  // (What Ulysses routes: head_routing.h. Above cp, KV heads split unevenly too.)
  const bool routes = c.Hkv % c.P == 0 || c.Hkv > c.P || (c.P % c.Hkv == 0 && c.Hq % c.P == 0);
  if (!routes) GTEST_SKIP() << "heads do not route over " << c.P << " GPUs";
  if (c.chunks > 1 && (c.P > c.Hkv || c.Hkv / c.P < c.chunks)) {
    GTEST_SKIP() << c.chunks << " chunks exceed the fewest KV heads a GPU owns with " << c.P
                 << " GPUs";
  }
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const testing::GpuInputs in = testing::make_gpu_inputs(c, rng);
  const testing::GpuOutputs single = testing::run_single_gpu(c, testing::as_delivered(c, in), 0);
  auto comms = peer_copy ? peer_copy_group(c.P) : nccl_group(c.P);
  const testing::GpuOutputs dist = testing::run_distributed(c, in, comms, device_of_rank);
  testing::expect_matches_single_gpu(c, single, dist);
}

class NcclUlysses : public ::testing::TestWithParam<GpuCase> {};

TEST_P(NcclUlysses, MatchesSingleGpu) {
  ULYSSES_REQUIRE_GPUS(2);
  ulysses_matches_single_gpu(GetParam(), false);
}

// A whole step (forward + backward) captured into a CUDA graph and replayed, through NCCL on every
// local GPU (one rank with one GPU: the same pack, ncclAlltoAll, kernel and unpack path): the
// stream contract leaves nothing on the host between the calls' device work, so the graph computes
// what the direct calls do. Not for the peer-copy or loopback communicators (ranks are host threads
// that hand events to each other, which one thread's capture cannot hold).
class NcclUlyssesGraph : public ::testing::TestWithParam<GpuCase> {};

TEST_P(NcclUlyssesGraph, MatchesSingleGpu) {
  ULYSSES_REQUIRE_GPUS(1);
  GpuCase c = GetParam();
  c.cuda_graph = true;
  ulysses_matches_single_gpu(c, false);
}

INSTANTIATE_TEST_SUITE_P(AllGpus, NcclUlyssesGraph,
                         ::testing::Values(
                             GpuCase{"gqa_causal", 0, Layout::kBSHD, 1, 2048, 16, 8, 128},
                             [] {
                               // Exchanges on the side stream, pipelined with the kernel by chunk.
                               GpuCase c{
                                   "chunks2_window_sinks", 0, Layout::kBSHD, 1, 2048, 16, 8, 128};
                               c.chunks = 2;
                               c.wl = 300;
                               c.sinks = true;
                               return c;
                             }(),
                             [] {
                               GpuCase c{"lse_only_chunks4", 0, Layout::kBSHD, 1, 4096, 16, 8, 128};
                               c.chunks = 4;
                               c.saved = SavedActivations::kLseOnly;
                               return c;
                             }(),
                             [] {  // fp8 rows packed, exchanged and turned back inside the graph
                               GpuCase c{"fp8_chunks2", 0, Layout::kBSHD, 1, 2048, 16, 8, 128};
                               c.chunks = 2;
                               c.payload = Payload::kFp8;
                               return c;
                             }(),
                             // 9 KV heads split unevenly on 2, 4 or 8 GPUs (5 and 4; 3, 2, 2, 2;
                             // 2 and seven 1s): exchanges of per-peer sizes inside the graph.
                             GpuCase{"uneven_heads_18_over_9", 0, Layout::kBSHD, 1, 2048, 18, 9,
                                     128}),
                         [](const auto& param_info) { return param_info.param.name; });

class PeerCopyUlysses : public ::testing::TestWithParam<GpuCase> {};

TEST_P(PeerCopyUlysses, MatchesSingleGpu) {
  ULYSSES_REQUIRE_GPUS(1);
  ulysses_matches_single_gpu(GetParam(), true);
}

// Copy-engine exchanges: plain, pipelined on a side stream, and with only the LSE saved.
INSTANTIATE_TEST_SUITE_P(Gpus, PeerCopyUlysses,
                         ::testing::Values(
                             GpuCase{"gqa_causal", 0, Layout::kBSHD, 2, 2048, 16, 8, 128},
                             [] {
                               GpuCase c{"chunks2_varlen", 0, Layout::kTHD, 1, 2048, 16, 8, 128};
                               c.cu = {0, 700, 701, 1900};
                               c.chunks = 2;
                               return c;
                             }(),
                             [] {
                               GpuCase c{"lse_only_chunks4", 0, Layout::kBSHD, 1, 4096, 32, 8, 128};
                               c.chunks = 4;
                               c.saved = SavedActivations::kLseOnly;
                               return c;
                             }(),
                             [] {
                               GpuCase c{"fp8_lse_only", 0, Layout::kBSHD, 1, 2048, 16, 8, 128};
                               c.saved = SavedActivations::kLseOnly;
                               c.payload = Payload::kFp8;
                               return c;
                             }()),
                         [](const auto& param_info) { return param_info.param.name; });

class NcclRing : public ::testing::TestWithParam<GpuCase> {};

// Ring or hybrid over every local GPU through NCCL or the peer-copy communicator, by the 2x rule.
void ring_within_2x(GpuCase c, bool peer_copy) {
  c.P = peer_copy ? peer_copy_ranks() : cuda_device_count();
  if (c.strategy == Strategy::kHybrid) c.U = c.P;  // all ranks in one Ulysses group, R = 1
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const testing::GpuInputs in = testing::make_gpu_inputs(c, rng);
  const testing::GpuInputs delivered = testing::as_delivered(c, in);  // fp8: K, V rounded
  const testing::GpuOutputs single = testing::run_single_gpu(c, delivered, 0);
  const testing::GpuOutputs truth = testing::run_reference_fp64(c, delivered);
  auto comms = peer_copy ? peer_copy_group(c.P) : nccl_group(c.P);
  const testing::GpuOutputs dist = testing::run_distributed(c, in, comms, device_of_rank);
  testing::expect_ring_within_2x(c, single, dist, truth);
}

TEST_P(NcclRing, WithinTwiceTheSingleGpuError) {
  ULYSSES_REQUIRE_GPUS(2);
  ring_within_2x(GetParam(), false);
}

// Ring with a window and sinks, only the LSE saved (peer-copy and graph suites).
GpuCase ring_window_sinks_lse_only() {
  GpuCase c =
      testing::multi_gpu_ring_case("ring_window_sinks_lse_only", Strategy::kRing, true, true, 300);
  c.saved = SavedActivations::kLseOnly;
  return c;
}

// One Ulysses group of every GPU with 9 KV heads (18 query heads): split unevenly on 2, 4 or 8
// GPUs (5 and 4; 3, 2, 2, 2; 2 and seven 1s).
GpuCase hybrid_uneven() {
  GpuCase c = testing::multi_gpu_ring_case("hybrid_one_group_uneven_18_over_9", Strategy::kHybrid,
                                           true, true);
  c.Hq = 18;
  c.Hkv = 9;
  return c;
}

// K and V travel the ring as fp8 rows (the GQA causal case).
GpuCase ring_fp8() {
  GpuCase c = testing::multi_gpu_ring_case("ring_fp8_gqa_causal", Strategy::kRing, true, false);
  c.payload = Payload::kFp8;
  return c;
}

// The KV blocks and dK/dV sums hop as copy-engine copies; only the LSE saved in one case.
class PeerCopyRing : public ::testing::TestWithParam<GpuCase> {};

TEST_P(PeerCopyRing, WithinTwiceTheSingleGpuError) {
  ULYSSES_REQUIRE_GPUS(1);
  ring_within_2x(GetParam(), true);
}

INSTANTIATE_TEST_SUITE_P(
    Gpus, PeerCopyRing,
    ::testing::Values(testing::multi_gpu_ring_case("ring_gqa_causal", Strategy::kRing, true, false),
                      ring_window_sinks_lse_only(), ring_fp8(),
                      testing::multi_gpu_ring_case("allgather_gqa_causal_sinks",
                                                   Strategy::kAllGather, true, true)),
    [](const auto& param_info) { return param_info.param.name; });

// Ring and hybrid steps captured into a CUDA graph and replayed (NCCL on every local GPU; with one
// GPU one rank, where ring, hybrid and all-gather run Ulysses' one-rank plan except with fp8 K/V:
// ring_fp8 then keeps ring's kernel calls, merges and side-stream events, without hops).
class NcclRingGraph : public ::testing::TestWithParam<GpuCase> {};

TEST_P(NcclRingGraph, WithinTwiceTheSingleGpuError) {
  ULYSSES_REQUIRE_GPUS(1);
  GpuCase c = GetParam();
  c.cuda_graph = true;
  ring_within_2x(c, false);
}

INSTANTIATE_TEST_SUITE_P(
    AllGpus, NcclRingGraph,
    ::testing::Values(testing::multi_gpu_ring_case("ring_gqa_causal", Strategy::kRing, true, false),
                      ring_window_sinks_lse_only(),
                      testing::multi_gpu_ring_case("hybrid_one_group_window_sinks",
                                                   Strategy::kHybrid, true, true, 200),
                      hybrid_uneven(), ring_fp8(),
                      testing::multi_gpu_ring_case("allgather_gqa_causal", Strategy::kAllGather,
                                                   true, false)),
    [](const auto& param_info) { return param_info.param.name; });

using testing::multi_gpu_ring_case;

INSTANTIATE_TEST_SUITE_P(
    AllGpus, NcclRing,
    ::testing::Values(
        multi_gpu_ring_case("ring_gqa_causal", Strategy::kRing, true, false),
        multi_gpu_ring_case("ring_full_sinks", Strategy::kRing, false, true),
        multi_gpu_ring_case("hybrid_one_group_window_sinks", Strategy::kHybrid, true, true, 200),
        hybrid_uneven(),
        multi_gpu_ring_case("ring_causal_window_300", Strategy::kRing, true, true, 300), ring_fp8(),
        multi_gpu_ring_case("allgather_gqa_causal", Strategy::kAllGather, true, false),
        multi_gpu_ring_case("allgather_full_sinks", Strategy::kAllGather, false, true),
        [] {
          GpuCase c = multi_gpu_ring_case("allgather_window_300_lse_only", Strategy::kAllGather,
                                          true, true, 300);
          c.saved = SavedActivations::kLseOnly;
          return c;
        }(),
        [] {
          // Packed sequences at offsets padded for up to 8 GPUs (multiples of 16).
          GpuCase c = multi_gpu_ring_case("ring_packed_causal", Strategy::kRing, true, false);
          c.layout = Layout::kTHD;
          c.S = 2048;
          c.cu = {0, 300, 817, 908, 1608};
          return c;
        }()),
    [](const auto& param_info) { return param_info.param.name; });

INSTANTIATE_TEST_SUITE_P(
    AllGpus, NcclUlysses,
    ::testing::Values(
        GpuCase{"gqa_causal", 0, Layout::kBSHD, 1, 2048, 16, 8, 128},
        GpuCase{"deterministic",
                0,
                Layout::kBSHD,
                2,
                1024,
                8,
                8,
                128,
                DType::kBFloat16,
                true,
                -1,
                -1,
                false,
                {},
                true},
        GpuCase{"mqa_sinks_window", 0, Layout::kBSHD, 1, 1024, 8, 1, 64, DType::kBFloat16, true,
                200, -1, true},
        GpuCase{"varlen",
                0,
                Layout::kTHD,
                1,
                2048,
                8,
                4,
                128,
                DType::kBFloat16,
                true,
                -1,
                -1,
                false,
                {0, 700, 701, 1900}},
        GpuCase{"chunks4_gqa_causal",
                0,
                Layout::kBSHD,
                1,
                4096,
                16,
                8,
                128,
                DType::kBFloat16,
                true,
                -1,
                -1,
                false,
                {},
                false,
                4},
        [] {
          // Backward exchanges Q, K, V, O again; 4 chunks
          // through 2 slots of exchange buffers.
          GpuCase c{"lse_only_chunks4_gqa_causal", 0, Layout::kBSHD, 1, 4096, 16, 8, 128};
          c.chunks = 4;
          c.saved = SavedActivations::kLseOnly;
          return c;
        }(),
        [] {  // fp8 rows through ncclAlltoAll (Q|K|V, dO) between the GPUs
          GpuCase c{"fp8_gqa_causal", 0, Layout::kBSHD, 1, 2048, 16, 8, 128};
          c.payload = Payload::kFp8;
          c.deterministic = true;
          return c;
        }()),
    [](const auto& param_info) { return param_info.param.name; });

TEST(Nccl, MeshSplitGivesWorkingGroups) {
  ULYSSES_REQUIRE_GPUS(2);
  const int n = cuda_device_count();
  auto world = nccl_group(n);
  auto mesh = Mesh::create({.dp = n / 2, .cp = 2, .tp = 1}, (n / 2) * 2);
  ASSERT_TRUE(mesh.is_ok());
  if (mesh->world_size() != n) GTEST_SKIP() << "needs an even GPU count";
  std::vector<Status> st(static_cast<std::size_t>(n));
  std::vector<float> sums(static_cast<std::size_t>(n), 0);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      cudaSetDevice(r);
      auto cp = split_nccl_communicator(*world[static_cast<std::size_t>(r)], *mesh, MeshAxis::kCp);
      if (!cp.is_ok()) {
        st[static_cast<std::size_t>(r)] = cp.status();
        return;
      }
      // Sum of global ranks over the cp group: 2g + (2g + 1) for group g.
      float* d = nullptr;
      cudaMalloc(&d, 4);
      const float mine = static_cast<float>(r);
      cudaMemcpy(d, &mine, 4, cudaMemcpyHostToDevice);
      cudaStream_t s = nullptr;
      cudaStreamCreate(&s);
      st[static_cast<std::size_t>(r)] = (*cp)->all_reduce_sum(d, d, 1, DType::kFloat32, s);
      if (st[static_cast<std::size_t>(r)].is_ok())
        st[static_cast<std::size_t>(r)] = synchronize(**cp, s);
      cudaMemcpy(&sums[static_cast<std::size_t>(r)], d, 4, cudaMemcpyDeviceToHost);
      EXPECT_EQ((*cp)->size(), 2);
      cudaFree(d);
      cudaStreamDestroy(s);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_ALL_OK(st);
  for (int r = 0; r < n; ++r)
    EXPECT_EQ(sums[static_cast<std::size_t>(r)], static_cast<float>(4 * (r / 2) + 1)) << r;
}

TEST(Nccl, ForwardingWrappersSeeThroughToTheNcclCommunicator) {
  // A user's ForwardingCommunicator around an NCCL communicator (instrumentation, fault
  // injection) keeps split_nccl_communicator() and synchronize()'s bounded, error-watching wait.
  // One GPU is enough: a one-rank communicator over a one-rank mesh.
  ULYSSES_REQUIRE_GPUS(1);
  auto world = nccl_group(1);
  ASSERT_EQ(world.size(), 1u);
  ASSERT_NE(world[0], nullptr);
  ForwardingCommunicator outer(*world[0]);
  ForwardingCommunicator outermost(outer);
  EXPECT_EQ(&outermost.inner(), &outer);
  auto mesh = Mesh::create({.dp = 1, .cp = 1, .tp = 1}, 1);
  ASSERT_TRUE(mesh.is_ok());
  cudaSetDevice(0);
  auto cp = split_nccl_communicator(outermost, *mesh, MeshAxis::kCp);
  ASSERT_TRUE(cp.is_ok()) << cp.status().to_string();
  EXPECT_EQ((*cp)->backend_name(), "nccl");
  EXPECT_EQ((*cp)->size(), 1);
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 4), cudaSuccess);
  const float three = 3;
  cudaMemcpy(d, &three, 4, cudaMemcpyHostToDevice);
  cudaStream_t s = nullptr;
  cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  ForwardingCommunicator child(**cp);
  EXPECT_ALL_OK((std::vector<Status>{child.all_reduce_sum(d, d, 1, DType::kFloat32, s),
                                     synchronize(child, s), synchronize(outermost, s)}));
  float got = 0;
  cudaMemcpy(&got, d, 4, cudaMemcpyDeviceToHost);
  EXPECT_EQ(got, 3.0f);
  // Not NCCL underneath: refused by name, as without a wrapper.
  auto host = create_loopback_group(1);
  ASSERT_TRUE(host.is_ok());
  ForwardingCommunicator host_outer(*(*host)[0]);
  auto refused = split_nccl_communicator(host_outer, *mesh, MeshAxis::kCp);
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("not an NCCL communicator"), std::string::npos)
      << refused.status().message();
  cudaFree(d);
  cudaStreamDestroy(s);
}

TEST(Nccl, WrappedCommunicatorsAreTheCallersOnTheirOwnDevices) {
  // A framework's communicators (here blocking ones from ncclCommInitAll, as PyTorch's are)
  // wrapped: bit-exact exchanges through them, a device that is not the communicator's refused by
  // name, and the caller's to destroy afterwards (ulysses does not own them). One GPU is enough.
  ULYSSES_REQUIRE_GPUS(1);
  const int n = cuda_device_count();
  std::vector<ncclComm_t> raw(static_cast<std::size_t>(n));
  std::vector<int> devices(static_cast<std::size_t>(n));
  for (int r = 0; r < n; ++r) devices[static_cast<std::size_t>(r)] = r;
  ASSERT_EQ(ncclCommInitAll(raw.data(), n, devices.data()), ncclSuccess);
  {
    std::vector<std::unique_ptr<Communicator>> comms;
    for (int r = 0; r < n; ++r) {
      auto c = wrap_nccl_communicator(raw[static_cast<std::size_t>(r)], r);
      ASSERT_TRUE(c.is_ok()) << c.status().to_string();
      comms.push_back(std::move(c).value());
    }
    expect_all_to_all_bit_exact(comms);
    expect_all_to_all_bit_exact(comms, /*uniform=*/true);
  }  // the wrappers are gone; the communicators are not
  auto invisible = wrap_nccl_communicator(raw[0], n);
  EXPECT_EQ(invisible.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(invisible.status().message().find("not a visible CUDA device"), std::string::npos)
      << invisible.status().message();
  if (n >= 2) {
    auto other = wrap_nccl_communicator(raw[0], 1);
    EXPECT_EQ(other.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(other.status().message().find("not the communicator's device"), std::string::npos)
        << other.status().message();
  }
  for (ncclComm_t c : raw) EXPECT_EQ(ncclCommDestroy(c), ncclSuccess);
}

TEST(Nccl, APeerThatNeverCallsEndsInTimeoutNotAHang) {
  ULYSSES_REQUIRE_GPUS(2);
  // Rank 1 never enters the all-to-all: rank 0's kernel waits forever on the GPU. synchronize()
  // must come back with kTimeout after the configured timeout, having aborted the communicators.
  auto comms = nccl_group(2, NcclOptions{std::chrono::milliseconds(3000)});
  cudaSetDevice(0);
  void* buf = nullptr;
  cudaMalloc(&buf, 2 << 20);
  cudaStream_t s = nullptr;
  cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  std::vector<std::size_t> counts = {1 << 20, 1 << 20}, offsets = {0, 1 << 20};
  const auto t0 = std::chrono::steady_clock::now();
  Status st = comms[0]->all_to_all_v(buf, counts, offsets, buf, counts, offsets, s);
  if (st.is_ok()) st = synchronize(*comms[0], s);
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(st.code(), StatusCode::kTimeout) << st.to_string();
  EXPECT_LT(waited, 60.0);
  // Every later call on any ulysses communicator reports the abort instead of hanging.
  Status after = comms[1]->barrier(nullptr);
  EXPECT_EQ(after.code(), StatusCode::kCommError) << after.to_string();
  std::printf("timeout path: rank 0 returned %s after %.1f s\n", status_code_name(st.code()).data(),
              waited);
}

}  // namespace
}  // namespace ulysses
