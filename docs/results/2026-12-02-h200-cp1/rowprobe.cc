// Ad-hoc (not built by CMake): the row kernels behind sinks, on [1, S, 32, 128] bf16 rows, beside a
// device copy of O, each the fastest of eight timed runs: finalize_partial in place with sinks (the
// cuDNN backend's fold; LSE head-major [1, H, S] as cuDNN and callers hold it, and token-major as
// Ulysses' head-sharded rows), merge_partial (fp32 accumulator, bf16 block) and sink_grad (dSinks
// from O, dO and the LSE). Linked against the library before and after a change. Build: g++ -O2
// -std=c++20 -Isrc -Iinclude -I/usr/local/cuda/include rowprobe.cc -o rowprobe build/libulysses.a
// -L/usr/local/cuda/lib64 -lcudart
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
    void *o, *o2, *d_o, *acc, *lse, *lse2, *sinks, *dsinks;
    for (auto [p, bytes] : {std::pair{&o, act * 2},
                            {&o2, act * 2},
                            {&d_o, act * 2},
                            {&acc, act * 4},
                            {&lse, S * H * 4},
                            {&lse2, S * H * 4},
                            {&sinks, H * 4},
                            {&dsinks, H * 4}}) {
      cudaMalloc(p, bytes);
    }
    std::vector<float> zeros(static_cast<std::size_t>(S * H), 0.0f);
    for (void* p : {lse, lse2}) cudaMemcpy(p, zeros.data(), S * H * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(sinks, zeros.data(), H * 4, cudaMemcpyHostToDevice);
    cudaMemset(o, 0x3c, act * 2);
    cudaMemset(d_o, 0x3c, act * 2);
    cudaMemset(acc, 0, act * 4);
    const Device dev = Device::cuda(0);
    const TensorView ov = TensorView::contiguous(o, DType::kBFloat16, {1, S, H, D}, dev),
                     dov = TensorView::contiguous(d_o, DType::kBFloat16, {1, S, H, D}, dev),
                     av = TensorView::contiguous(acc, DType::kFloat32, {1, S, H, D}, dev),
                     lv = TensorView::contiguous(lse, DType::kFloat32, {1, H, S}, dev),
                     ltm = TensorView::strided(lse, DType::kFloat32, {1, H, S}, {S * H, 1, H}, dev),
                     l2 = TensorView::contiguous(lse2, DType::kFloat32, {1, H, S}, dev),
                     sv = TensorView::contiguous(sinks, DType::kFloat32, {H}, dev),
                     dsv = TensorView::contiguous(dsinks, DType::kFloat32, {H}, dev);
    Status st = Status::ok();
    auto run = [&](auto&& call) {
      return best_ms([&] {
        if (st.is_ok()) st = call();
      });
    };
    // The LSE grows with every fold (log(e^l + 1)): values stay finite, work stays the same.
    const float fin =
        run([&] { return kernels::cuda::finalize_partial(ov, lv, sv, 0, ov, lv, nullptr); });
    const float fin_tm =
        run([&] { return kernels::cuda::finalize_partial(ov, ltm, sv, 0, ov, ltm, nullptr); });
    const float merge = run([&] { return kernels::cuda::merge_partial(av, l2, ov, lv, nullptr); });
    const float grad =
        run([&] { return kernels::cuda::sink_grad(ov, dov, lv, sv, 0, dsv, nullptr); });
    if (!st.is_ok()) return std::printf("%s\n", st.to_string().c_str()), 1;
    const float copy = best_ms([&] { cudaMemcpyAsync(o2, o, act * 2, cudaMemcpyDeviceToDevice); });
    auto gbs = [&](double bytes, float ms) { return bytes / (ms * 1e-3) / 1e9; };
    std::printf(
        "rows %6lld x 32 heads, ms (GB/s): finalize in place %.3f (%.0f), LSE token-major %.3f "
        "(%.0f), merge fp32+bf16 %.3f (%.0f), sink_grad %.3f (%.0f), copy of O %.3f (%.0f)\n",
        static_cast<long long>(S), fin, gbs(4.0 * act, fin), fin_tm, gbs(4.0 * act, fin_tm), merge,
        gbs(10.0 * act, merge), grad, gbs(4.0 * act, grad), copy, gbs(4.0 * act, copy));
    for (void* p : {o, o2, d_o, acc, lse, lse2, sinks, dsinks}) cudaFree(p);
  }
  return 0;
}
