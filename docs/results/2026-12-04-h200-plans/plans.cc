// Probe (forty-sixth session): every execution plan cuDNN offers for the SDPA calls, each
// timed. The backend builds only the heuristics' first plan (HeurMode A); if another plan ran the
// 16-head 8k call (one rank's at cp = 2) faster relative to the 32-head one (cp = 1), the kernel's
// 0.93 cap at 8k would move. B = 1, S tokens, H query heads, H/4 KV heads, D 128, causal, bf16,
// random inputs; each plan: 5 warm-up calls, then the median of 20, after ~1 s of load.
// Build: g++ -O2 -std=c++20 -I<cudnn-frontend>/include -I/usr/local/cuda/include plans.cc -o plans
//        -L/usr/local/cuda/lib64 -lcudnn -lnvrtc -lcuda -lcudart
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cudnn_frontend.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace fe = cudnn_frontend;

#define CK(x)                                                       \
  do {                                                              \
    cudaError_t e_ = (x);                                           \
    if (e_ != cudaSuccess) {                                        \
      std::fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                 \
    }                                                               \
  } while (0)

void* random_bf16(std::size_t n, std::mt19937& rng) {
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<__nv_bfloat16> h(n);
  for (auto& x : h) x = __float2bfloat16(d(rng));
  void* p = nullptr;
  CK(cudaMalloc(&p, n * 2));
  CK(cudaMemcpy(p, h.data(), n * 2, cudaMemcpyHostToDevice));
  return p;
}

std::shared_ptr<fe::graph::Tensor_attributes> bshd(fe::graph::Graph& g, const char* name,
                                                   int64_t uid, int64_t B, int64_t H, int64_t S,
                                                   int64_t D) {
  return g.tensor(fe::graph::Tensor_attributes()
                      .set_name(name)
                      .set_uid(uid)
                      .set_dim({B, H, S, D})
                      .set_stride({S * H * D, D, H * D, 1}));
}

double median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int main(int argc, char** argv) {
  const int64_t S = argc > 1 ? std::atoll(argv[1]) : 8192;
  const int64_t Hq = argc > 2 ? std::atoll(argv[2]) : 16;
  const int64_t Hkv = Hq / 4, B = 1, D = 128;
  cudnnHandle_t handle;
  if (cudnnCreate(&handle) != CUDNN_STATUS_SUCCESS) return 1;
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  cudnnSetStream(handle, st);
  std::mt19937 rng(7);
  void* q = random_bf16(B * S * Hq * D, rng);
  void* k = random_bf16(B * S * Hkv * D, rng);
  void* v = random_bf16(B * S * Hkv * D, rng);
  void* o = random_bf16(B * S * Hq * D, rng);
  void* dO = random_bf16(B * S * Hq * D, rng);
  void *dq, *dk, *dv, *stats;
  CK(cudaMalloc(&dq, B * S * Hq * D * 2));
  CK(cudaMalloc(&dk, B * S * Hkv * D * 2));
  CK(cudaMalloc(&dv, B * S * Hkv * D * 2));
  CK(cudaMalloc(&stats, B * Hq * S * 4));
  enum { kQ = 1, kK, kV, kO, kStats, kdO, kdQ, kdK, kdV };
  std::unordered_map<int64_t, void*> pack = {{kQ, q},   {kK, k},         {kV, v},
                                             {kO, o},   {kStats, stats}, {kdO, dO},
                                             {kdQ, dq}, {kdK, dk},       {kdV, dv}};
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (int backward = 0; backward < 2; ++backward) {
    auto g = std::make_shared<fe::graph::Graph>();
    g->set_io_data_type(fe::DataType_t::BFLOAT16)
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    auto Q = bshd(*g, "Q", kQ, B, Hq, S, D);
    auto K = bshd(*g, "K", kK, B, Hkv, S, D);
    auto V = bshd(*g, "V", kV, B, Hkv, S, D);
    if (!backward) {
      fe::graph::SDPA_attributes at;
      at.set_name("sdpa").set_generate_stats(true).set_attn_scale(scale);
      at.set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT).set_diagonal_band_right_bound(0);
      auto [O, Stats] = g->sdpa(Q, K, V, at);
      O->set_output(true).set_uid(kO).set_dim({B, Hq, S, D}).set_stride({S * Hq * D, D, Hq * D, 1});
      Stats->set_output(true)
          .set_uid(kStats)
          .set_data_type(fe::DataType_t::FLOAT)
          .set_dim({B, Hq, S, 1})
          .set_stride({Hq * S, S, 1, 1});
    } else {
      auto O = bshd(*g, "O", kO, B, Hq, S, D);
      auto dOt = bshd(*g, "dO", kdO, B, Hq, S, D);
      auto Stats_in = g->tensor(fe::graph::Tensor_attributes()
                                    .set_name("Stats")
                                    .set_uid(kStats)
                                    .set_dim({B, Hq, S, 1})
                                    .set_stride({Hq * S, S, 1, 1})
                                    .set_data_type(fe::DataType_t::FLOAT));
      fe::graph::SDPA_backward_attributes at;
      at.set_name("sdpa_backward").set_attn_scale(scale);
      at.set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT).set_diagonal_band_right_bound(0);
      auto [dQ, dK, dV] = g->sdpa_backward(Q, K, V, O, dOt, Stats_in, at);
      dQ->set_output(true)
          .set_uid(kdQ)
          .set_dim({B, Hq, S, D})
          .set_stride({S * Hq * D, D, Hq * D, 1});
      dK->set_output(true)
          .set_uid(kdK)
          .set_dim({B, Hkv, S, D})
          .set_stride({S * Hkv * D, D, Hkv * D, 1});
      dV->set_output(true)
          .set_uid(kdV)
          .set_dim({B, Hkv, S, D})
          .set_stride({S * Hkv * D, D, Hkv * D, 1});
    }
    if (auto v = g->validate(); !v.is_good()) {
      std::printf("validate: %s\n", v.get_message().c_str());
      return 2;
    }
    if (auto v = g->build_operation_graph(handle); !v.is_good()) {
      std::printf("build_operation_graph: %s\n", v.get_message().c_str());
      return 2;
    }
    auto e =
        g->create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::B, fe::HeurMode_t::FALLBACK});
    if (!e.is_good()) std::printf("create_execution_plans: %s\n", e.get_message().c_str());
    (void)g->check_support(handle);
    e = g->build_plans(handle, fe::BuildPlanPolicy_t::ALL);
    if (!e.is_good()) std::printf("build_plans: %s\n", e.get_message().c_str());
    const int64_t n = g->get_execution_plan_count();
    std::printf("S %lld H %lld %s: %lld plans\n", (long long)S, (long long)Hq,
                backward ? "bwd" : "fwd", (long long)n);
    // ~1 s of load first (plan 0), so every plan runs at the cap.
    int64_t ws0 = 0;
    (void)g->get_workspace_size_plan_at_index(0, ws0);
    void* ws = nullptr;
    CK(cudaMalloc(&ws, std::max<int64_t>(ws0, 1)));
    for (int i = 0; i < 400 && n > 0; ++i) (void)g->execute_plan_at_index(handle, pack, ws, 0);
    CK(cudaStreamSynchronize(st));
    CK(cudaFree(ws));
    for (int64_t i = 0; i < n; ++i) {
      std::string name;
      (void)g->get_plan_name_at_index(i, name);
      int64_t wsb = 0;
      (void)g->get_workspace_size_plan_at_index(i, wsb);
      CK(cudaMalloc(&ws, std::max<int64_t>(wsb, 1)));
      std::vector<float> ms;
      bool ok = true;
      for (int it = 0; it < 25 && ok; ++it) {
        CK(cudaEventRecord(e0, st));
        ok = g->execute_plan_at_index(handle, pack, ws, i).is_good();
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        float t = 0;
        CK(cudaEventElapsedTime(&t, e0, e1));
        if (it >= 5) ms.push_back(t);
      }
      std::printf("  plan %lld %-60s ws %8.1f MiB  %s\n", (long long)i, name.c_str(),
                  wsb / 1048576.0,
                  ok ? (std::to_string(median(ms)) + " ms").c_str() : "FAILED to execute");
      CK(cudaFree(ws));
    }
  }
  std::printf("done\n");
  return 0;
}
