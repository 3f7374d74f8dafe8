// Small device kernels around the cuDNN attention graphs (see attention_aux.h). Legend: b batch,
// t token, h head, d head_dim element. Grid-stride loops over one flat index.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>

#include "common/cuda_check.h"
#include "common/tensor_rows.h"
#include "kernels/attention_aux.h"
#include "kernels/dtype_access.cuh"
#include "kernels/elementwise.h"

namespace ulysses::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxStrides = 8;

int blocks(std::int64_t n) {
  const std::int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < 1 ? 1 : (b > 65535 * 8 ? 65535 * 8 : b));
}

#define ULYSSES_GRID_LOOP(i, n)                                                                    \
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)

struct Strides {
  std::int64_t v[kMaxStrides];
};

__global__ void varlen_metadata_kernel(const std::int32_t* cu, int num_seqs, int padded,
                                       std::int64_t base, int kinds, Strides strides,
                                       std::int32_t* seq_len, std::int64_t* offsets) {
  ULYSSES_GRID_LOOP(i, static_cast<std::int64_t>(padded) + 1) {
    const int s = static_cast<int>(i < num_seqs ? i : num_seqs);
    const std::int64_t start = cu[s] - base;
    if (i < padded) seq_len[i] = i < num_seqs ? cu[i + 1] - cu[i] : 0;
    for (int k = 0; k < kinds; ++k) {
      offsets[k * (padded + 1) + i] = start * strides.v[k];
    }
  }
}

// VarlenRows: side[k] picks the query (0) or key (1) row starts for offsets row k. Entries past
// num_seqs are empty sequences starting where the last one ends.
__global__ void varlen_rows_metadata_kernel(const std::int32_t* q_begin, const std::int32_t* q_len,
                                            const std::int32_t* kv_begin,
                                            const std::int32_t* kv_len, int num_seqs, int padded,
                                            std::int64_t q_base, std::int64_t kv_base, int kinds,
                                            Strides strides, Strides side, std::int32_t* seq_len_q,
                                            std::int32_t* seq_len_kv, std::int64_t* offsets) {
  ULYSSES_GRID_LOOP(i, static_cast<std::int64_t>(padded) + 1) {
    const bool real = i < num_seqs;
    // A sequence without query or without key rows gets neither (no empty softmax rows).
    const bool live = real && q_len[i] > 0 && kv_len[i] > 0;
    if (i < padded) {
      seq_len_q[i] = live ? q_len[i] : 0;
      seq_len_kv[i] = live ? kv_len[i] : 0;
    }
    std::int64_t q_start = 0, kv_start = 0;
    if (real) {
      q_start = q_begin[i];
      kv_start = kv_begin[i];
    } else if (num_seqs > 0) {
      q_start = q_begin[num_seqs - 1] + q_len[num_seqs - 1];
      kv_start = kv_begin[num_seqs - 1] + kv_len[num_seqs - 1];
    }
    for (int k = 0; k < kinds; ++k) {
      const std::int64_t start = side.v[k] == 0 ? q_start - q_base : kv_start - kv_base;
      offsets[k * (padded + 1) + i] = (start > 0 ? start : 0) * strides.v[k];
    }
  }
}

__global__ void fill_lse_kernel(float* lse, std::int64_t B, std::int64_t H, std::int64_t tokens,
                                std::int64_t sb, std::int64_t sh, std::int64_t st,
                                std::int64_t first) {
  ULYSSES_GRID_LOOP(i, B * H * tokens) {
    const std::int64_t t = first + i % tokens;
    const std::int64_t h = (i / tokens) % H;
    const std::int64_t b = i / (tokens * H);
    lse[b * sb + h * sh + t * st] = -INFINITY;
  }
}

__global__ void copy_lse_kernel(float* dst, const float* src, std::int64_t B, std::int64_t H,
                                std::int64_t S, std::int64_t db, std::int64_t dh, std::int64_t ds,
                                std::int64_t sb, std::int64_t sh, std::int64_t ss) {
  ULYSSES_GRID_LOOP(i, B * H * S) {
    const std::int64_t s = i % S, h = (i / S) % H, b = i / (S * H);
    dst[b * db + h * dh + s * ds] = src[b * sb + h * sh + s * ss];
  }
}

// one_key_backward: a [B, 1, H, D] view's element (b, h, d) (dtype_access.cuh).
struct Act {
  void* data;
  int dtype;  // DType value
  std::int64_t sb, sh, sd;
};
Act act(const TensorView& t) {
  return {t.data, static_cast<int>(t.dtype), t.stride(0), t.stride(2), t.stride(3)};
}
__device__ float get(const Act& t, std::int64_t b, std::int64_t h, std::int64_t d) {
  return load(t.data, t.dtype, b * t.sb + h * t.sh + d * t.sd);
}
__device__ void put(const Act& t, std::int64_t b, std::int64_t h, std::int64_t d, float x) {
  store(t.data, t.dtype, b * t.sb + h * t.sh + d * t.sd, x);
}

constexpr int kOneKeyThreads = 256;  // one thread per head_dim element (cuDNN: head_dim <= 256)

// The three dot products q.k, dO.v and dO.o of one query head over the block, in a fixed order
// (lanes by a shuffle tree, then the warps in order), returned to every thread.
__device__ float3 block_dots(float3 x) {
  constexpr int kWarps = kOneKeyThreads / 32;
  __shared__ float3 partial[kWarps];
  __shared__ float3 total;
  for (int off = 16; off > 0; off /= 2) {
    x.x += __shfl_down_sync(0xffffffffu, x.x, off);
    x.y += __shfl_down_sync(0xffffffffu, x.y, off);
    x.z += __shfl_down_sync(0xffffffffu, x.z, off);
  }
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  if (lane == 0) partial[warp] = x;
  __syncthreads();
  if (threadIdx.x == 0) {
    float3 s = make_float3(0.0f, 0.0f, 0.0f);
    for (int w = 0; w < kWarps; ++w) {
      s.x += partial[w].x;
      s.y += partial[w].y;
      s.z += partial[w].z;
    }
    total = s;
  }
  __syncthreads();
  const float3 r = total;
  __syncthreads();  // partial and total are reused by the next head
  return r;
}

// One block per (b, KV head), thread d of head_dim (D: Q and K; Dv: V, O and dO).
__global__ void __launch_bounds__(kOneKeyThreads)
    one_key_backward_kernel(Act q, Act k, Act v, Act o, Act d_o, const float* lse,
                            std::int64_t lse_sb, std::int64_t lse_sh, Act dq, Act dk, Act dv,
                            int hkv, int ratio, int D, int Dv, float scale, bool visible) {
  const std::int64_t b = blockIdx.x / hkv, g = blockIdx.x % hkv;
  const int d = static_cast<int>(threadIdx.x);
  const bool on = d < D, on_v = d < Dv;
  const float kd = on ? get(k, b, g, d) : 0.0f, vd = on_v ? get(v, b, g, d) : 0.0f;
  float dk_sum = 0.0f, dv_sum = 0.0f;
  for (int r = 0; r < ratio; ++r) {
    const std::int64_t h = g * ratio + r;
    const float qd = on ? get(q, b, h, d) : 0.0f, od = on_v ? get(o, b, h, d) : 0.0f;
    const float gd = on_v ? get(d_o, b, h, d) : 0.0f;
    const float3 dots = block_dots(make_float3(qd * kd, gd * vd, gd * od));
    const float l = lse[b * lse_sb + h * lse_sh];
    const float p = visible && l != -INFINITY ? expf(scale * dots.x - l) : 0.0f;
    const float ds = p * (dots.y - dots.z);
    if (on) put(dq, b, h, d, scale * ds * kd);
    dk_sum += scale * ds * qd;
    dv_sum += p * gd;
  }
  if (on) put(dk, b, g, d, dk_sum);
  if (on_v) put(dv, b, g, d, dv_sum);
}

}  // namespace

Status one_key_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& o, const TensorView& d_o, const TensorView& lse,
                        const TensorView& dq, const TensorView& dk, const TensorView& dv,
                        float scale, bool visible, Stream stream) {
  const std::int64_t B = q.size(0), hq = q.size(2), hkv = k.size(2), D = q.size(3), Dv = v.size(3);
  if (q.size(1) != 1 || k.size(1) != 1 || hkv < 1 || hq % hkv != 0 || D > kOneKeyThreads ||
      Dv > kOneKeyThreads || lse.dtype != DType::kFloat32 || B * hkv > 0x7fffffff) {
    return internal_error("ulysses::kernels::cuda::one_key_backward: bad arguments");
  }
  if (B == 0) return Status::ok();
  one_key_backward_kernel<<<static_cast<unsigned>(B * hkv), kOneKeyThreads, 0, stream>>>(
      act(q), act(k), act(v), act(o), act(d_o), static_cast<const float*>(lse.data), lse.stride(0),
      lse.stride(1), act(dq), act(dk), act(dv), static_cast<int>(hkv), static_cast<int>(hq / hkv),
      static_cast<int>(D), static_cast<int>(Dv), scale, visible);
  ULYSSES_CUDA_CHECK_LAUNCH();
  return Status::ok();
}

Status copy_act(const TensorView& dst, const TensorView& src, Stream stream) {
  return copy_elements(dst, src, stream);
}

Status varlen_metadata(const std::int32_t* cu_seqlens, int num_seqs, int padded,
                       std::int64_t base_row, std::span<const std::int64_t> token_strides,
                       std::int32_t* seq_len, std::int64_t* offsets, Stream stream) {
  if (token_strides.size() > static_cast<std::size_t>(kMaxStrides) || padded < num_seqs) {
    return internal_error("ulysses::kernels::cuda::varlen_metadata: bad arguments");
  }
  Strides s{};
  for (std::size_t k = 0; k < token_strides.size(); ++k) s.v[k] = token_strides[k];
  varlen_metadata_kernel<<<blocks(padded + 1), kThreads, 0, stream>>>(
      cu_seqlens, num_seqs, padded, base_row, static_cast<int>(token_strides.size()), s, seq_len,
      offsets);
  ULYSSES_CUDA_CHECK_LAUNCH();
  return Status::ok();
}

Status varlen_rows_metadata(const VarlenRows& rows, int padded, std::int64_t q_base,
                            std::int64_t kv_base, std::span<const std::int64_t> token_strides,
                            std::span<const int> sides, std::int32_t* seq_len_q,
                            std::int32_t* seq_len_kv, std::int64_t* offsets, Stream stream) {
  const int n = rows.num_seqs();
  if (token_strides.size() > static_cast<std::size_t>(kMaxStrides) ||
      sides.size() != token_strides.size() || padded < n) {
    return internal_error("ulysses::kernels::cuda::varlen_rows_metadata: bad arguments");
  }
  Strides s{}, side{};
  for (std::size_t k = 0; k < token_strides.size(); ++k) {
    s.v[k] = token_strides[k];
    side.v[k] = sides[k];
  }
  varlen_rows_metadata_kernel<<<blocks(padded + 1), kThreads, 0, stream>>>(
      rows.q_begin_device, rows.q_len_device, rows.kv_begin_device, rows.kv_len_device, n, padded,
      q_base, kv_base, static_cast<int>(token_strides.size()), s, side, seq_len_q, seq_len_kv,
      offsets);
  ULYSSES_CUDA_CHECK_LAUNCH();
  return Status::ok();
}

Status zero_tokens_from(const TensorView& a, std::int64_t first, Stream stream) {
  const std::int64_t tokens = a.size(1) - first;
  if (tokens <= 0) return Status::ok();
  return fill_zero(detail::sequence_rows(a, first, tokens), stream);
}

Status fill_lse_from(const TensorView& l, std::int64_t first, Stream stream) {
  const std::int64_t tokens = l.size(2) - first;
  if (tokens <= 0) return Status::ok();
  fill_lse_kernel<<<blocks(l.size(0) * l.size(1) * tokens), kThreads, 0, stream>>>(
      static_cast<float*>(l.data), l.size(0), l.size(1), tokens, l.stride(0), l.stride(1),
      l.stride(2), first);
  ULYSSES_CUDA_CHECK_LAUNCH();
  return Status::ok();
}

Status copy_lse(const TensorView& dst, const TensorView& src, Stream stream) {
  const std::int64_t n = src.size(0) * src.size(1) * src.size(2);
  copy_lse_kernel<<<blocks(n), kThreads, 0, stream>>>(
      static_cast<float*>(dst.data), static_cast<const float*>(src.data), src.size(0), src.size(1),
      src.size(2), dst.stride(0), dst.stride(1), dst.stride(2), src.stride(0), src.stride(1),
      src.stride(2));
  ULYSSES_CUDA_CHECK_LAUNCH();
  return Status::ok();
}

Status convert_to_f32(const TensorView& dst, const TensorView& src, Stream stream) {
  return convert_elements(dst, src, /*add=*/false, stream);
}

}  // namespace ulysses::kernels::cuda
