// NCCL with one process per GPU, launched by mpirun (`mpirun -np N test_mpi`): the communicator
// from ulysses/mpi.h, data movement bit-exact, Ulysses and ring against the single-GPU cuDNN run,
// mesh splits, and the timeout path across processes. Rank 0 gathers every rank's shards (MPI) and
// checks them; each rank checks its own status. Run without mpirun, every test skips.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>

#include "gpu/gpu_ulysses_common.h"
#include "ulysses/mpi.h"

namespace ulysses {
namespace {

using testing::GpuCase;

// Set in main(): whether this process was started by an MPI launcher, and its place.
bool g_mpi = false;
int g_rank = 0, g_size = 1, g_device = 0;

#define REQUIRE_MPI_GPUS()                                                                 \
  do {                                                                                     \
    if (!g_mpi) GTEST_SKIP() << "not started by mpirun (run: mpirun -np <GPUs> test_mpi)"; \
    if (g_size < 2) GTEST_SKIP() << "needs at least 2 processes, got " << g_size;          \
    if (cuda_device_count() < 1) GTEST_SKIP() << "needs a GPU per process, found none";    \
  } while (0)

std::unique_ptr<Communicator> world(NcclOptions options = {.timeout = std::chrono::seconds(60)}) {
  auto comm = create_nccl_communicator_mpi(MPI_COMM_WORLD, g_device, options);
  EXPECT_TRUE(comm.is_ok()) << comm.status().to_string();
  return comm.is_ok() ? std::move(comm).value() : nullptr;
}

// The same fresh seed on every rank (rank 0 draws it).
std::uint64_t shared_seed() {
  std::uint64_t seed = testing::fresh_seed();
  MPI_Bcast(&seed, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  return seed;
}

// Every rank's outputs at rank 0, in rank order (other ranks get an empty vector).
std::vector<testing::RankOutputs> gather_at_root(const GpuCase& c, const testing::GpuInputs& in,
                                                 const testing::RankOutputs& mine) {
  std::vector<testing::RankOutputs> all;
  if (g_rank == 0) {
    for (int r = 0; r < g_size; ++r) all.push_back(testing::rank_output_shapes(c, in, r));
  }
  auto field = [](testing::RankOutputs& o, int i) -> detail::HostTensor& {
    detail::HostTensor* f[] = {&o.o, &o.lse, &o.dq, &o.dk, &o.dv, &o.dsinks};
    return *f[i];
  };
  testing::RankOutputs local = mine;
  for (int i = 0; i < 6; ++i) {
    const detail::HostTensor& t = field(local, i);
    const int bytes = static_cast<int>(t.storage.size());
    std::vector<std::uint8_t> recv(g_rank == 0 ? static_cast<std::size_t>(bytes) * g_size : 0);
    EXPECT_EQ(MPI_Gather(t.storage.data(), bytes, MPI_BYTE, recv.data(), bytes, MPI_BYTE, 0,
                         MPI_COMM_WORLD),
              MPI_SUCCESS);
    for (int r = 0; r < static_cast<int>(all.size()); ++r) {
      detail::HostTensor& dst = field(all[static_cast<std::size_t>(r)], i);
      EXPECT_EQ(dst.storage.size(), static_cast<std::size_t>(bytes));
      std::memcpy(dst.storage.data(), recv.data() + static_cast<std::size_t>(r) * bytes,
                  std::min(dst.storage.size(), static_cast<std::size_t>(bytes)));
    }
  }
  return all;
}

// Runs this rank of a case; at rank 0, the assembled global outputs (else empty).
std::optional<testing::GpuOutputs> run_case(const GpuCase& c, const testing::GpuInputs& in) {
  auto comm = world();
  testing::RankOutputs mine = testing::rank_output_shapes(c, in, g_rank);
  if (comm) {
    const Status st = testing::run_rank(c, in, *comm, g_device, g_rank, &mine);
    EXPECT_TRUE(st.is_ok()) << "rank " << g_rank << ": " << st.to_string();
    if (!st.is_ok()) mine = testing::rank_output_shapes(c, in, g_rank);
  }
  const std::vector<testing::RankOutputs> all = gather_at_root(c, in, mine);
  if (g_rank != 0) return std::nullopt;
  return testing::assemble(c, in, all);
}

TEST(Mpi, AllToAllVIsBitExact) {
  REQUIRE_MPI_GPUS();
  auto comm = world();
  ASSERT_NE(comm, nullptr);
  const int n = g_size, r = g_rank;
  std::vector<std::size_t> sc(n), so(n), rc(n), ro(n);
  std::size_t st = 0, rt = 0;
  for (int p = 0; p < n; ++p) {  // unequal sizes, stamped with (sender, receiver, index)
    sc[p] = 4 * static_cast<std::size_t>(r + 2 * p + 1000);
    so[p] = st;
    st += sc[p];
    rc[p] = 4 * static_cast<std::size_t>(p + 2 * r + 1000);
    ro[p] = rt;
    rt += rc[p];
  }
  std::vector<std::uint32_t> send(st / 4), recv(rt / 4, 0xdeadbeef);
  for (int p = 0; p < n; ++p) {
    for (std::size_t i = 0; i < sc[p] / 4; ++i)
      send[so[p] / 4 + i] = (r << 24) | (p << 16) | static_cast<std::uint32_t>(i);
  }
  testing::DeviceBytes ds(st, g_device), dr(rt, g_device);
  ASSERT_CUDA(cudaMemcpy(ds.ptr, send.data(), st, cudaMemcpyHostToDevice));
  ASSERT_CUDA(cudaMemcpy(dr.ptr, recv.data(), rt, cudaMemcpyHostToDevice));
  cudaStream_t s = nullptr;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  Status status = comm->all_to_all_v(ds.ptr, sc, so, dr.ptr, rc, ro, s);
  if (status.is_ok()) status = synchronize(*comm, s);
  EXPECT_TRUE(status.is_ok()) << status.to_string();
  ASSERT_CUDA(cudaMemcpy(recv.data(), dr.ptr, rt, cudaMemcpyDeviceToHost));
  std::int64_t wrong = 0;
  for (int p = 0; p < n; ++p) {
    for (std::size_t i = 0; i < rc[p] / 4; ++i) {
      wrong += recv[ro[p] / 4 + i] !=
               ((static_cast<std::uint32_t>(p) << 24) | (static_cast<std::uint32_t>(r) << 16) |
                static_cast<std::uint32_t>(i));
    }
  }
  EXPECT_EQ(wrong, 0) << "rank " << r;
  cudaStreamDestroy(s);
}

class MpiUlysses : public ::testing::TestWithParam<GpuCase> {};

TEST_P(MpiUlysses, MatchesSingleGpu) {
  REQUIRE_MPI_GPUS();
  GpuCase c = GetParam();
  c.P = g_size;
  if (c.Hq % c.P != 0) GTEST_SKIP() << "heads do not divide over " << c.P << " processes";
  const auto seed = shared_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const testing::GpuInputs in = testing::make_gpu_inputs(c, rng);
  const auto dist = run_case(c, in);
  if (g_rank != 0) return;
  const testing::GpuOutputs single = testing::run_single_gpu(c, in, g_device);
  testing::expect_matches_single_gpu(c, single, *dist);
}

class MpiRing : public ::testing::TestWithParam<GpuCase> {};

TEST_P(MpiRing, WithinTwiceTheSingleGpuError) {
  REQUIRE_MPI_GPUS();
  GpuCase c = GetParam();
  c.P = g_size;
  if (c.strategy == Strategy::kHybrid) {
    c.U = c.P % 2 == 0 && c.P >= 4 ? 2 : c.P;  // 2 x (P/2) with 4+ processes, else one group
  }
  const auto seed = shared_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const testing::GpuInputs in = testing::make_gpu_inputs(c, rng);
  const auto dist = run_case(c, in);
  if (g_rank != 0) return;
  const testing::GpuOutputs single = testing::run_single_gpu(c, in, g_device);
  const testing::GpuOutputs truth = testing::run_reference_fp64(c, in);
  testing::expect_ring_within_2x(c, single, *dist, truth);
}

GpuCase ulysses_case(std::string name, Layout layout, std::int64_t S, int Hq, int Hkv, int D) {
  return GpuCase{std::move(name), 0, layout, 1, S, Hq, Hkv, D};
}

INSTANTIATE_TEST_SUITE_P(
    Processes, MpiUlysses,
    ::testing::Values([] { return ulysses_case("gqa_causal", Layout::kBSHD, 2048, 16, 8, 128); }(),
                      [] {
                        GpuCase c =
                            ulysses_case("deterministic_full", Layout::kBSHD, 1024, 8, 8, 128);
                        c.B = 2;
                        c.causal = false;
                        c.deterministic = true;
                        return c;
                      }(),
                      [] {  // one KV head: every process holds a replica
                        GpuCase c = ulysses_case("mqa_sinks_window", Layout::kBSHD, 1024, 8, 1, 64);
                        c.wl = 200;
                        c.sinks = true;
                        return c;
                      }(),
                      [] {
                        GpuCase c = ulysses_case("varlen", Layout::kTHD, 2048, 8, 4, 128);
                        c.cu = {0, 700, 701, 1900};
                        return c;
                      }(),
                      [] {  // backward exchanges q, k, v, o again (only the LSE saved)
                        GpuCase c = ulysses_case("lse_only_varlen", Layout::kTHD, 2048, 16, 8, 128);
                        c.cu = {0, 900, 901, 2000};
                        c.saved = SavedActivations::kLseOnly;
                        return c;
                      }()),
    [](const auto& param_info) { return param_info.param.name; });

using testing::multi_gpu_ring_case;

INSTANTIATE_TEST_SUITE_P(Processes, MpiRing,
                         ::testing::Values(multi_gpu_ring_case("ring_gqa_causal", Strategy::kRing,
                                                               true, false),
                                           multi_gpu_ring_case("hybrid_window_sinks",
                                                               Strategy::kHybrid, true, true, 200),
                                           [] {
                                             GpuCase c =
                                                 multi_gpu_ring_case("ring_packed_causal",
                                                                     Strategy::kRing, true, false);
                                             c.layout = Layout::kTHD;
                                             c.S = 2048;
                                             c.cu = {0, 300, 817, 908, 1608};
                                             return c;
                                           }()),
                         [](const auto& param_info) { return param_info.param.name; });

TEST(Mpi, MeshSplitGivesWorkingGroups) {
  REQUIRE_MPI_GPUS();
  if (g_size % 2 != 0) GTEST_SKIP() << "needs an even process count";
  auto comm = world();
  ASSERT_NE(comm, nullptr);
  auto mesh = Mesh::create({.dp = g_size / 2, .cp = 2, .tp = 1}, g_size);
  ASSERT_TRUE(mesh.is_ok()) << mesh.status().to_string();
  auto cp = split_nccl_communicator(*comm, *mesh, MeshAxis::kCp);
  ASSERT_TRUE(cp.is_ok()) << cp.status().to_string();
  EXPECT_EQ((*cp)->size(), 2);
  // Sum of global ranks over the cp group {2g, 2g + 1}: 4g + 1.
  testing::DeviceBytes d(4, g_device);
  const float mine = static_cast<float>(g_rank);
  ASSERT_CUDA(cudaMemcpy(d.ptr, &mine, 4, cudaMemcpyHostToDevice));
  cudaStream_t s = nullptr;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  Status st = (*cp)->all_reduce_sum(d.ptr, d.ptr, 1, DType::kFloat32, s);
  if (st.is_ok()) st = synchronize(**cp, s);
  EXPECT_TRUE(st.is_ok()) << st.to_string();
  float sum = -1;
  ASSERT_CUDA(cudaMemcpy(&sum, d.ptr, 4, cudaMemcpyDeviceToHost));
  EXPECT_EQ(sum, static_cast<float>(4 * (g_rank / 2) + 1)) << "rank " << g_rank;
  cudaStreamDestroy(s);
}

TEST(MpiTimeout, APeerProcessThatNeverCallsEndsInTimeoutNotAHang) {
  REQUIRE_MPI_GPUS();
  // Every rank but 0 skips the all-to-all: rank 0's kernel waits forever on the GPU, and
  // synchronize() must come back with kTimeout after 3 s, having aborted its communicators.
  auto comm = world({.timeout = std::chrono::milliseconds(3000)});
  ASSERT_NE(comm, nullptr);
  testing::DeviceBytes buf(static_cast<std::size_t>(g_size) << 20, g_device);
  if (g_rank == 0) {
    cudaStream_t s = nullptr;
    ASSERT_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    std::vector<std::size_t> counts(static_cast<std::size_t>(g_size), 1 << 20), offsets;
    for (int p = 0; p < g_size; ++p) offsets.push_back(static_cast<std::size_t>(p) << 20);
    const auto t0 = std::chrono::steady_clock::now();
    Status st = comm->all_to_all_v(buf.ptr, counts, offsets, buf.ptr, counts, offsets, s);
    if (st.is_ok()) st = synchronize(*comm, s);
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(st.code(), StatusCode::kTimeout) << st.to_string();
    EXPECT_LT(waited, 60.0);
    Status after = comm->barrier(nullptr);  // an aborted communicator reports, never hangs
    EXPECT_EQ(after.code(), StatusCode::kCommError) << after.to_string();
    std::printf("timeout path: rank 0 returned %s after %.1f s\n",
                status_code_name(st.code()).data(), waited);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace
}  // namespace ulysses

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // Only call MPI_Init under a launcher: a singleton start may try to spawn MPI daemons, and CI
  // runs this binary plainly (every test then skips).
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"}) {
    if (std::getenv(var) != nullptr) ulysses::g_mpi = true;
  }
  if (ulysses::g_mpi) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &ulysses::g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ulysses::g_size);
    const int gpus = ulysses::cuda_device_count();
    const auto local = ulysses::mpi_local_rank(MPI_COMM_WORLD);
    if (gpus > 0 && local.is_ok()) ulysses::g_device = *local % gpus;
    cudaSetDevice(ulysses::g_device);
  }
  const int rc = RUN_ALL_TESTS();
  if (ulysses::g_mpi) {
    // A failure on any rank fails every process's exit code.
    int worst = rc;
    MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return worst;
  }
  return rc;
}
