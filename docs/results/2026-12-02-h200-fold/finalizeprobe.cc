// Ad-hoc (not built by CMake), for the next GPU session: what holds kernels::cuda::finalize_partial
// at ~1.44 TB/s (docs/PERF.md, "Sinks outside cuDNN, dense calls too"). Times it on [1, S, 32, 128]
// bf16 rows in variants that each remove one suspect, beside a copy of O:
//   in place, sinks             the cuDNN backend's fold (the measured case)
//   out of place, sinks         O and the LSE into other buffers: no read-modify-write of a line
//   in place, no sinks          the weights and the exp/log gone (w = 1: a copy onto itself)
//   in place, LSE token-major   the LSE as a [1, H, S] view with strides {S H, 1, H}: a group's
//                               four (eight) heads of one token read and write one LSE line
#include <cuda_runtime.h>

#include <cstdio>
#include <vector>

#include "kernels/merge.h"
#include "ulysses/types.h"

using namespace ulysses;

template <typename F>
float best_ms(F&& f) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  float best = 1e9f;
  for (int it = 0; it < 10; ++it) {
    cudaEventRecord(a);
    f();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    if (it > 1 && ms < best) best = ms;
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return best;
}

int main() {
  const std::int64_t H = 32, D = 128;
  for (std::int64_t S : {16384, 32768, 65536}) {
    const std::size_t act = static_cast<std::size_t>(S * H * D);
    void *o, *o2, *lse, *lse2, *sinks;
    cudaMalloc(&o, act * 2);
    cudaMalloc(&o2, act * 2);
    cudaMalloc(&lse, S * H * 4);
    cudaMalloc(&lse2, S * H * 4);
    cudaMalloc(&sinks, H * 4);
    std::vector<float> zeros(static_cast<std::size_t>(S * H), 0.0f);
    cudaMemcpy(lse, zeros.data(), S * H * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(sinks, zeros.data(), H * 4, cudaMemcpyHostToDevice);
    cudaMemset(o, 0x3c, act * 2);
    const Device dev = Device::cuda(0);
    const TensorView ov = TensorView::contiguous(o, DType::kBFloat16, {1, S, H, D}, dev),
                     o2v = TensorView::contiguous(o2, DType::kBFloat16, {1, S, H, D}, dev),
                     lv = TensorView::contiguous(lse, DType::kFloat32, {1, H, S}, dev),
                     l2v = TensorView::contiguous(lse2, DType::kFloat32, {1, H, S}, dev),
                     ltm = TensorView::strided(lse, DType::kFloat32, {1, H, S}, {S * H, 1, H}, dev),
                     sv = TensorView::contiguous(sinks, DType::kFloat32, {H}, dev);
    Status st = Status::ok();
    auto run = [&](const TensorView& out, const TensorView& l_in, const TensorView& l_out,
                   const TensorView& s) {
      return best_ms([&] {
        if (st.is_ok()) st = kernels::cuda::finalize_partial(ov, l_in, s, 0, out, l_out, nullptr);
      });
    };
    const float in_place = run(ov, lv, lv, sv), out_of_place = run(o2v, lv, l2v, sv),
                no_sinks = run(ov, lv, lv, TensorView{}), token_major = run(ov, ltm, ltm, sv);
    if (!st.is_ok()) return std::printf("%s\n", st.to_string().c_str()), 1;
    const float copy = best_ms([&] { cudaMemcpyAsync(o2, o, act * 2, cudaMemcpyDeviceToDevice); });
    auto gbs = [&](float ms) { return 4.0 * act / (ms * 1e-3) / 1e9; };
    std::printf(
        "rows %6lld x 32 heads, ms (GB/s of O moved): in place %.3f (%.0f), out of place %.3f "
        "(%.0f), no sinks %.3f (%.0f), LSE token-major %.3f (%.0f), copy of O %.3f (%.0f)\n",
        static_cast<long long>(S), in_place, gbs(in_place), out_of_place, gbs(out_of_place),
        no_sinks, gbs(no_sinks), token_major, gbs(token_major), copy, gbs(copy));
    for (void* p : {o, o2, lse, lse2, sinks}) cudaFree(p);
  }
  return 0;
}
