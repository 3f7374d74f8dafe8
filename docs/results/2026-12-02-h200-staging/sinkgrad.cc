// Ad-hoc (not built by CMake): kernels::cuda::sink_grad alone (ring's and allgather's backward with
// sinks) on a rank's rows at cp = 2 — [1, S, 32, 128] bf16 O and dO, LSE [1, 32, S] — beside a
// device copy of the bytes it reads. Built against the library before and after its rewrite.
#include <cuda_runtime.h>

#include <cstdio>
#include <vector>

#include "kernels/merge.h"
#include "ulysses/types.h"

using namespace ulysses;

int main() {
  const std::int64_t H = 32, D = 128;
  for (std::int64_t S : {4096, 16384, 65536}) {
    const std::size_t act = static_cast<std::size_t>(S * H * D * 2);
    void *o, *d_o, *lse, *sinks, *dsinks;
    cudaMalloc(&o, act);
    cudaMalloc(&d_o, act);
    cudaMalloc(&lse, S * H * 4);
    cudaMalloc(&sinks, H * 4);
    cudaMalloc(&dsinks, H * 4);
    std::vector<float> ones(static_cast<std::size_t>(S * H), 1.0f);
    cudaMemcpy(lse, ones.data(), S * H * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(sinks, ones.data(), H * 4, cudaMemcpyHostToDevice);
    cudaMemset(o, 0x3c, act);
    cudaMemset(d_o, 0x3c, act);
    const Device dev = Device::cuda(0);
    const TensorView ov = TensorView::contiguous(o, DType::kBFloat16, {1, S, H, D}, dev),
                     dov = TensorView::contiguous(d_o, DType::kBFloat16, {1, S, H, D}, dev),
                     lv = TensorView::contiguous(lse, DType::kFloat32, {1, H, S}, dev),
                     sv = TensorView::contiguous(sinks, DType::kFloat32, {H}, dev),
                     dv = TensorView::contiguous(dsinks, DType::kFloat32, {H}, dev);
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    float best = 1e9f, copy = 1e9f;
    for (int it = 0; it < 8; ++it) {
      cudaEventRecord(a);
      Status s = kernels::cuda::sink_grad(ov, dov, lv, sv, 0, dv, nullptr);
      cudaEventRecord(b);
      cudaEventSynchronize(b);
      if (!s.is_ok()) {
        std::printf("%s\n", s.to_string().c_str());
        return 1;
      }
      float ms = 0;
      cudaEventElapsedTime(&ms, a, b);
      if (it > 1 && ms < best) best = ms;
      cudaEventRecord(a);
      cudaMemcpyAsync(d_o, o, act, cudaMemcpyDeviceToDevice);
      cudaEventRecord(b);
      cudaEventSynchronize(b);
      cudaEventElapsedTime(&ms, a, b);
      if (it > 1 && ms < copy) copy = ms;
    }
    std::printf(
        "sink_grad rows %6lld x 32 heads: %7.3f ms, %6.0f GB/s read (a copy of O: %.3f ms)\n",
        static_cast<long long>(S), best, 2.0 * act / (best * 1e-3) / 1e9, copy);
    for (void* p : {o, d_o, lse, sinks, dsinks}) cudaFree(p);
  }
  return 0;
}
