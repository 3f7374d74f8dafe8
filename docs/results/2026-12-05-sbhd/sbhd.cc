// Ad-hoc probe (not built by CMake): what Megatron's [s, b, h, d] activations cost against
// [b, s, h, d] ones. Each rank's q, k, v, o, dO, dq, dk, dv are allocated [S/cp, B, H, D] and
// passed as [B, S/cp, H, D] views with the sequence stride outermost (sbhd), or contiguous
// (bshd). cp = 1: the one-rank plan hands the views to cuDNN in place. cp = 2: two virtual ranks
// on one GPU (device loopback; both ranks' work shares the GPU, so only the two layouts' ratio
// means anything): packs read the views, unpacks write them. Forward + backward per step, the
// two layouts alternating in rounds after a warm-up, medians of each. Timing only (the GPU tests
// check the bits: test_gpu_ulysses' Sbhd cases).
// Build from the repository root after scripts/build.sh:
//   g++ -std=c++20 -O2 -Iinclude -I/usr/local/cuda/include docs/results/2026-12-05-sbhd/sbhd.cc \
//     -o sbhd build/libulysses.a -L/usr/local/cuda/lib64 -L/usr/local/cuda/lib -lcudnn -lnccl \
//     -lnvrtc -lcudart -lcuda -ldl -lpthread
//   ./sbhd CP B SEQ ROUNDS
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "ulysses/gpu.h"
#include "ulysses/ulysses.h"

using namespace ulysses;

namespace {
constexpr int Hq = 32, Hkv = 8, D = 128, kIters = 5;

void check(bool ok, const std::string& what) {
  if (!ok) {
    std::printf("FAILED: %s\n", what.c_str());
    std::exit(1);
  }
}

void* alloc(std::size_t n) {
  void* p = nullptr;
  check(cudaMalloc(&p, n) == cudaSuccess, "cudaMalloc");
  check(cudaMemset(p, 0x3c, n) == cudaSuccess, "cudaMemset");  // bf16 0x3c3c ~ 0.0115
  return p;
}

// A rank's tensors and plan; step() runs kIters forward + backward steps and returns ms per step.
struct Rank {
  std::unique_ptr<LocalAttention> kernel;
  std::unique_ptr<DistributedAttention> plan;
  std::vector<void*> bufs;
  ForwardArgs f;
  BackwardArgs b;
  cudaStream_t stream = nullptr;

  Rank(Communicator& comm, int cp, std::int64_t B, std::int64_t S, bool seq_major) {
    const PlanConfig cfg{
        .attention = {.num_heads_q = Hq, .num_heads_kv = Hkv, .head_dim = D, .causal = true},
        .parallel = {.cp = cp},
        .dtype = DType::kBFloat16,
        .batch = B,
        .seqlen = S};
    auto k = create_cudnn_attention(0);
    check(k.is_ok(), k.status().to_string());
    kernel = std::move(*k);
    auto p = DistributedAttention::create(cfg, comm, *kernel);
    check(p.is_ok(), p.status().to_string());
    plan = std::move(*p);
    const std::int64_t Sl = S / cp;
    auto act = [&](int h) {
      void* ptr = alloc(static_cast<std::size_t>(B * Sl * h * D) * 2);
      bufs.push_back(ptr);
      const Device dev = Device::cuda(0);
      if (!seq_major) return TensorView::contiguous(ptr, DType::kBFloat16, {B, Sl, h, D}, dev);
      return TensorView::strided(ptr, DType::kBFloat16, {B, Sl, h, D}, {h * D, B * h * D, D, 1},
                                 dev);
    };
    void* lse = alloc(static_cast<std::size_t>(B * Hq * Sl) * 4);
    void* ws = alloc(std::max<std::size_t>(plan->workspace_bytes(), 1));
    void* saved = alloc(std::max<std::size_t>(plan->saved_bytes(), 1));
    bufs.insert(bufs.end(), {lse, ws, saved});
    f = {.q = act(Hq),
         .k = act(Hkv),
         .v = act(Hkv),
         .o = act(Hq),
         .lse = TensorView::contiguous(lse, DType::kFloat32, {B, Hq, Sl}, Device::cuda(0)),
         .workspace = ws,
         .saved = saved};
    b = {.d_o = act(Hq),
         .dq = act(Hq),
         .dk = act(Hkv),
         .dv = act(Hkv),
         .workspace = ws,
         .saved = saved};
    check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess, "stream");
  }
  ~Rank() {
    for (void* p : bufs) cudaFree(p);
    cudaStreamDestroy(stream);
  }
  double step(Communicator& comm) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kIters; ++i) {
      Status s = plan->forward(f, stream);
      if (s.is_ok()) s = plan->backward(b, stream);
      check(s.is_ok(), s.to_string());
    }
    check(synchronize(comm, stream).is_ok(), "synchronize");
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
               .count() /
           kIters;
  }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::printf("usage: sbhd CP B SEQ ROUNDS\n");
    return 2;
  }
  const int cp = std::atoi(argv[1]), rounds = std::atoi(argv[4]);
  const std::int64_t B = std::atoll(argv[2]), S = std::atoll(argv[3]);
  cudaSetDevice(0);
  std::vector<double> ms[2];
  for (int round = -1; round < rounds; ++round) {  // round -1: warm-up, not kept
    for (int layout = 0; layout < 2; ++layout) {
      auto group = create_device_loopback_group(cp, 0);
      check(group.is_ok(), group.status().to_string());
      std::vector<double> got(static_cast<std::size_t>(cp));
      std::vector<std::thread> threads;
      for (int r = 0; r < cp; ++r) {
        threads.emplace_back([&, r] {
          Communicator& comm = *(*group)[static_cast<std::size_t>(r)];
          Rank rank(comm, cp, B, S, layout == 1);
          rank.step(comm);  // builds cuDNN's graphs
          got[static_cast<std::size_t>(r)] = rank.step(comm);
        });
      }
      for (auto& t : threads) t.join();
      if (round >= 0) ms[layout].push_back(*std::max_element(got.begin(), got.end()));
    }
  }
  const double bshd = median(ms[0]), sbhd = median(ms[1]);
  std::printf("cp %d B %lld S %lld: bshd %.3f ms, sbhd %.3f ms per step (sbhd / bshd %.3f)", cp,
              static_cast<long long>(B), static_cast<long long>(S), bshd, sbhd, sbhd / bshd);
  std::printf("; rounds bshd");
  for (double x : ms[0]) std::printf(" %.3f", x);
  std::printf(" sbhd");
  for (double x : ms[1]) std::printf(" %.3f", x);
  std::printf("\n");
  return 0;
}
