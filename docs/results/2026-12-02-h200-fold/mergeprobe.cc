// Ad-hoc (not built by CMake): kernels::cuda::finalize_partial in place with sinks (the cuDNN
// backend's sink fold) and merge_partial (ring's per-step merge: fp32 accumulator, bf16 block) on
// [1, S, 32, 128] rows, LSE [1, 32, S], beside a device copy of O. Built against the library
// before and after the row-group rewrite.
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
  for (std::int64_t S : {4096, 16384, 32768, 65536}) {
    const std::size_t act = static_cast<std::size_t>(S * H * D);
    void *o, *o2, *acc, *lse, *lse2, *sinks;
    cudaMalloc(&o, act * 2);
    cudaMalloc(&o2, act * 2);
    cudaMalloc(&acc, act * 4);
    cudaMalloc(&lse, S * H * 4);
    cudaMalloc(&lse2, S * H * 4);
    cudaMalloc(&sinks, H * 4);
    std::vector<float> zeros(static_cast<std::size_t>(S * H), 0.0f);
    cudaMemcpy(lse, zeros.data(), S * H * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(lse2, zeros.data(), S * H * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(sinks, zeros.data(), H * 4, cudaMemcpyHostToDevice);
    cudaMemset(o, 0x3c, act * 2);
    cudaMemset(acc, 0, act * 4);
    const Device dev = Device::cuda(0);
    const TensorView ov = TensorView::contiguous(o, DType::kBFloat16, {1, S, H, D}, dev),
                     av = TensorView::contiguous(acc, DType::kFloat32, {1, S, H, D}, dev),
                     lv = TensorView::contiguous(lse, DType::kFloat32, {1, H, S}, dev),
                     l2 = TensorView::contiguous(lse2, DType::kFloat32, {1, H, S}, dev),
                     sv = TensorView::contiguous(sinks, DType::kFloat32, {H}, dev);
    Status st = Status::ok();
    // The LSE grows with every fold (log(e^l + 1)): values stay finite, work stays the same.
    const float fin =
        best_ms([&] { st = kernels::cuda::finalize_partial(ov, lv, sv, 0, ov, lv, nullptr); });
    if (!st.is_ok()) return std::printf("%s\n", st.to_string().c_str()), 1;
    const float merge =
        best_ms([&] { st = kernels::cuda::merge_partial(av, lv, ov, l2, nullptr); });
    if (!st.is_ok()) return std::printf("%s\n", st.to_string().c_str()), 1;
    const float copy = best_ms([&] { cudaMemcpyAsync(o2, o, act * 2, cudaMemcpyDeviceToDevice); });
    std::printf(
        "rows %6lld x 32 heads: finalize in place %7.3f ms (%5.0f GB/s), merge fp32+bf16 %7.3f ms "
        "(%5.0f GB/s), copy of O %7.3f ms (%5.0f GB/s)\n",
        static_cast<long long>(S), fin, 4.0 * act / (fin * 1e-3) / 1e9, merge,
        10.0 * act / (merge * 1e-3) / 1e9, copy, 4.0 * act / (copy * 1e-3) / 1e9);
    for (void* p : {o, o2, acc, lse, lse2, sinks}) cudaFree(p);
  }
  return 0;
}
