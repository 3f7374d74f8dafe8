// Ad-hoc (not built by CMake): the staging kernels around the attention kernel, timed alone on the
// shapes a 128k-token step at cp = 2 gives them (Hq = 32, Hkv = 8, D = 128), beside a device copy
// and a memset. GB/s counts bytes read + written. Built against the library before and after the
// element-wise rewrite, same source (the functions' signatures did not change).
#include <cuda_runtime.h>

#include <cstdio>
#include <functional>
#include <vector>

#include "kernels/attention_aux.h"
#include "kernels/merge.h"
#include "ulysses/types.h"

using namespace ulysses;

namespace {

void* alloc(std::size_t n, float fill) {
  void* p = nullptr;
  cudaMalloc(&p, n);
  std::vector<float> h(n / 4, fill);
  cudaMemcpy(p, h.data(), n / 4 * 4, cudaMemcpyHostToDevice);
  return p;
}

TensorView act(void* p, DType t, std::int64_t S, std::int64_t H, std::int64_t heads_stride) {
  return TensorView::strided(p, t, {1, S, H, 128},
                             {S * heads_stride * 128, heads_stride * 128, 128, 1}, Device::cuda(0));
}

void time(const char* name, double bytes, const std::function<Status()>& f) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  float best = 1e9f;
  for (int it = 0; it < 8; ++it) {
    cudaEventRecord(a);
    Status s = f();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    if (!s.is_ok()) {
      std::printf("%-58s %s\n", name, s.to_string().c_str());
      return;
    }
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    if (it > 1 && ms < best) best = ms;
  }
  std::printf("%-58s %8.3f ms %8.0f MiB %7.0f GB/s\n", name, best, bytes / (1 << 20),
              bytes / (best * 1e-3) / 1e9);
}

}  // namespace

int main() {
  const std::int64_t S = 32768, SQ = 131072;
  const std::size_t big = std::size_t{SQ} * 24 * 128 * 2;  // a Q|K|V receive buffer at 128k
  void* x = alloc(big, 0.5f);
  void* y = alloc(big, 0.25f);
  void* z = alloc(std::size_t{S} * 32 * 128 * 4, 0.125f);
  void* l1 = alloc(std::size_t{S} * 32 * 4, 1.0f);
  void* l2 = alloc(std::size_t{S} * 32 * 4, 2.0f);
  const DType bf = DType::kBFloat16, f32 = DType::kFloat32;
  auto lse = [&](void* p, std::int64_t H) {
    return TensorView::contiguous(p, f32, {1, H, S}, Device::cuda(0));
  };
  const double mib = 1 << 20;
  const double o32 = S * 32 * 128 * 2.0;  // bf16 [S, 32, 128]
  std::printf("# seq %lld query rows; bf16 unless named\n", static_cast<long long>(S));
  time("cudaMemcpyAsync, 256 MiB", 2 * o32, [&] {
    cudaMemcpyAsync(y, x, o32, cudaMemcpyDeviceToDevice);
    return Status::ok();
  });
  time("cudaMemsetAsync, 256 MiB", o32, [&] {
    cudaMemsetAsync(y, 0, o32);
    return Status::ok();
  });
  time("zero_tokens_from O [32k, 32, 128] contiguous", o32,
       [&] { return kernels::cuda::zero_tokens_from(act(y, bf, S, 32, 32), 0, nullptr); });
  time("zero_tokens_from [32k, 16, 128] of 24 heads", o32 / 2,
       [&] { return kernels::cuda::zero_tokens_from(act(y, bf, S, 16, 24), 0, nullptr); });
  time("zero fp32 [32k, 16, 128] contiguous", o32,
       [&] { return kernels::cuda::zero(act(z, f32, S, 16, 16), nullptr); });
  time("zero fp32 [32k, 8, 128] of 16 heads (dK of dK|dV)", o32 / 2,
       [&] { return kernels::cuda::zero(act(z, f32, S, 8, 16), nullptr); });
  time("convert_to_f32 [32k, 8, 128] bf16 -> fp32", o32 / 4 * 3, [&] {
    return kernels::cuda::convert_to_f32(act(z, f32, S, 8, 8), act(x, bf, S, 8, 8), nullptr);
  });
  time("accumulate fp32 [32k, 16, 128] += bf16", o32 / 2 * 5, [&] {
    return kernels::cuda::accumulate(act(z, f32, S, 16, 16), act(x, bf, S, 16, 16), nullptr);
  });
  time("accumulate fp32 [32k, 8, 128] of 16 heads += bf16", o32 / 4 * 5, [&] {
    return kernels::cuda::accumulate(act(z, f32, S, 8, 16), act(x, bf, S, 8, 8), nullptr);
  });
  time("convert fp32 -> bf16 [32k, 16, 128]", o32 / 2 * 3, [&] {
    return kernels::cuda::convert(act(y, bf, S, 16, 16), act(z, f32, S, 16, 16), nullptr);
  });
  time("copy_act Q [128k, 16, 128] out of 24 heads", SQ * 16 * 128 * 4.0, [&] {
    return kernels::cuda::copy_act(act(y, bf, SQ, 16, 16), act(x, bf, SQ, 16, 24), nullptr);
  });
  time("merge_partial fp32 acc [32k, 16, 128] + fp32 block", o32 / 2 * 6, [&] {
    return kernels::cuda::merge_partial(
        act(z, f32, S, 16, 16), lse(l1, 16),
        act(static_cast<char*>(z) + std::size_t{S} * 16 * 128 * 4, f32, S, 16, 16), lse(l2, 16),
        nullptr);
  });
  time("merge_partial fp32 acc [32k, 16, 128] + bf16 block", o32 / 2 * 5, [&] {
    return kernels::cuda::merge_partial(act(z, f32, S, 16, 16), lse(l1, 16), act(x, bf, S, 16, 16),
                                        lse(l2, 16), nullptr);
  });
  time("finalize_partial fp32 [32k, 16, 128] -> bf16", o32 / 2 * 3, [&] {
    return kernels::cuda::finalize_partial(act(z, f32, S, 16, 16), lse(l1, 16), TensorView{}, 0,
                                           act(y, bf, S, 16, 16), lse(l2, 16), nullptr);
  });
  (void)mib;
  return 0;
}
