// A user-written local kernel without softmax statistics (causal linear attention, elu+1 feature
// map) plugged into Ulysses unchanged: the distributed run must equal the kernel's own unsharded
// run.
#include <gtest/gtest.h>

#include <cmath>

#include "common/test_util.h"
#include "ulysses/gpu.h"

namespace ulysses {
namespace {

using testing::HostTensor;

// o_i = sum_{j<=i} (phi(q_i) . phi(k_j)) v_j / sum_{j<=i} phi(q_i) . phi(k_j),  phi(x) = elu(x)
// + 1. Forward only, fp32, no LSE: everything ulysses must not assume about a kernel.
class CausalLinearAttention final : public LocalAttention {
 public:
  std::string_view name() const override { return "user-causal-linear"; }
  Device device() const override { return Device::host(); }
  bool provides_lse() const override { return false; }
  bool supports_backward() const override { return false; }
  Status check_support(const LocalProblem& p) const override {
    if (p.dtype != DType::kFloat32) return unsupported("user-causal-linear: fp32 only");
    if (p.varlen) return unsupported("user-causal-linear: no packed batches");
    return Status::ok();
  }
  Status forward(const LocalProblem& p, const LocalForwardArgs& a, Stream) override {
    const int ratio = p.config.num_heads_q / p.config.num_heads_kv;
    const auto D = p.config.head_dim;
    auto phi = [](double x) { return x > 0 ? x + 1 : std::exp(x); };
    auto at = [](const TensorView& t, std::int64_t b, std::int64_t s, std::int64_t h,
                 std::int64_t d) {
      return static_cast<double>(static_cast<const float*>(t.data)[t.offset({b, s, h, d})]);
    };
    for (std::int64_t b = 0; b < p.batch; ++b) {
      for (int h = 0; h < p.num_heads_q_local; ++h) {
        const int g = (p.head_offset_q + h) / ratio - p.head_offset_kv;
        std::vector<double> kv(static_cast<std::size_t>(D * D), 0.0),
            ksum(static_cast<std::size_t>(D), 0.0);
        for (std::int64_t i = 0; i < p.seqlen; ++i) {
          for (int x = 0; x < D; ++x) {
            const double kx = phi(at(a.k, b, i, g, x));
            ksum[static_cast<std::size_t>(x)] += kx;
            for (int y = 0; y < D; ++y)
              kv[static_cast<std::size_t>(x * D + y)] += kx * at(a.v, b, i, g, y);
          }
          double den = 0;
          std::vector<double> num(static_cast<std::size_t>(D), 0.0);
          for (int x = 0; x < D; ++x) {
            const double qx = phi(at(a.q, b, i, h, x));
            den += qx * ksum[static_cast<std::size_t>(x)];
            for (int y = 0; y < D; ++y)
              num[static_cast<std::size_t>(y)] += qx * kv[static_cast<std::size_t>(x * D + y)];
          }
          for (int y = 0; y < D; ++y) {
            static_cast<float*>(a.o.data)[a.o.offset({b, i, h, y})] =
                static_cast<float>(num[static_cast<std::size_t>(y)] / den);
          }
        }
      }
    }
    return Status::ok();
  }
  Status backward(const LocalProblem&, const LocalBackwardArgs&, Stream) override {
    return unsupported("user-causal-linear: no backward");
  }
};

TEST(UserKernel, LinearAttentionRunsUnderUlyssesUnchanged) {
  for (int P : {2, 4}) {
    const AttentionConfig att{.num_heads_q = 8, .num_heads_kv = 2, .head_dim = 8, .causal = true};
    const std::int64_t B = 2, S = 12;
    HostTensor q(DType::kFloat32, {B, S, 8, 8}), k(DType::kFloat32, {B, S, 2, 8}),
        v = k, o(DType::kFloat32, {B, S, 8, 8});
    std::mt19937_64 rng(testing::fresh_seed());
    for (HostTensor* t : {&q, &k, &v}) testing::fill_uniform(*t, rng);
    CausalLinearAttention kernel;
    HostTensor expected = o;
    const LocalProblem full = LocalProblem::unsharded(att, DType::kFloat32, B, S);
    ASSERT_TRUE(
        kernel.forward(full, {.q = q.view, .k = k.view, .v = v.view, .o = expected.view}, nullptr)
            .is_ok());
    testing::poison(o);
    const PlanConfig cfg{.attention = att,
                         .parallel = {.cp = P},
                         .dtype = DType::kFloat32,
                         .batch = B,
                         .seqlen = S,
                         .training = false};
    Status lse_status, bwd_status;
    auto st = testing::run_ranks(P, [&](int r, Communicator& comm) -> Status {
      auto plan = DistributedAttention::create(cfg, comm, kernel);
      if (!plan.is_ok()) return plan.status();
      std::vector<unsigned char> ws((*plan)->workspace_bytes());
      ForwardArgs f{.q = *shard_view(q.view, Layout::kBSHD, P, r),
                    .k = *shard_view(k.view, Layout::kBSHD, P, r),
                    .v = *shard_view(v.view, Layout::kBSHD, P, r),
                    .o = *shard_view(o.view, Layout::kBSHD, P, r),
                    .workspace = ws.data()};
      if (r == 0) {
        // Asking a kernel without LSE for LSE is refused before anything moves.
        HostTensor lse(DType::kFloat32, {B, 8, S / P});
        ForwardArgs with_lse = f;
        with_lse.lse = lse.view;
        lse_status = (*plan)->forward(with_lse, nullptr);
        bwd_status = (*plan)->backward(BackwardArgs{}, nullptr);
      }
      return (*plan)->forward(f, nullptr);
    });
    EXPECT_ALL_OK(st);
    EXPECT_BITWISE_EQ(expected, o, "O with P=" + std::to_string(P));
    EXPECT_EQ(lse_status.code(), StatusCode::kUnsupported);
    EXPECT_NE(lse_status.message().find("user-causal-linear"), std::string::npos)
        << lse_status.message();
    EXPECT_FALSE(bwd_status.is_ok());
  }
}

TEST(UserKernel, RingHybridAndAllGatherRefuseAKernelWithoutSoftmaxStatistics) {
  // Ring merges blocks by LSE, allgather keeps it for backward and returns it; a kernel without
  // it is refused on every rank, pointing to ulysses (inference plans too).
  CausalLinearAttention kernel;
  for (Strategy strategy : {Strategy::kRing, Strategy::kHybrid, Strategy::kAllGather}) {
    const PlanConfig cfg{
        .attention = {.num_heads_q = 4, .num_heads_kv = 2, .head_dim = 8, .causal = true},
        .parallel = {.strategy = strategy,
                     .cp = 2,
                     .ulysses_degree = strategy == Strategy::kHybrid ? 2 : 0},
        .dtype = DType::kFloat32,
        .batch = 1,
        .seqlen = 8,
        .training = false};
    auto st = testing::run_ranks(2, [&](int, Communicator& comm) -> Status {
      return DistributedAttention::create(cfg, comm, kernel).status();
    });
    for (const Status& s : st) {
      EXPECT_EQ(s.code(), StatusCode::kUnsupported) << s.to_string();
      EXPECT_NE(s.message().find("softmax statistics"), std::string::npos) << s.message();
      EXPECT_NE(s.message().find("use strategy ulysses"), std::string::npos) << s.message();
    }
  }
}

// cudnn_graph_stats() reports on cuDNN kernels only: any other kernel is refused by name, in every
// build (without CUDA, as every CUDA backend is: kUnsupported).
TEST(UserKernel, HasNoCudnnGraphStats) {
  CausalLinearAttention user;
  const Status s = cudnn_graph_stats(user).status();
  if (!built_with_cuda()) {
    EXPECT_EQ(s.code(), StatusCode::kUnsupported) << s.to_string();
    return;
  }
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  EXPECT_NE(s.message().find("user-causal-linear"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("create_cudnn_attention"), std::string::npos) << s.message();
  EXPECT_EQ(cudnn_graph_stats(*make_reference_attention()).status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ulysses
