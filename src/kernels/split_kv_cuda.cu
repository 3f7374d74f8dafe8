// Split-KV attention (split_kv.h): one CTA per (slot, KV head, block of up to 8 query rows).
//
// 256 threads = 16 groups of 16 lanes. A group owns one key at a time: each lane loads 8 (or 16)
// elements of its K and V rows with 16-byte loads, multiplies them with the same elements of every
// query row, and the group sums the products with four shuffles. Each group walks its own keys
// (kKeys at a time, so that 16 kKeys rows per CTA are in flight) with a running maximum, sum and
// output per query row (online softmax in base 2, scores pre-scaled by log2(e)); at the end the two
// groups of a warp merge by shuffles and the eight warps in shared memory, in a fixed order, so
// the result does not depend on timing.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <set>
#include <type_traits>
#include <utility>

#include "common/cuda_check.h"
#include "kernels/split_kv.h"

namespace ulysses::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kLanes = 16;                  // lanes per key
constexpr int kWarps = kThreads / 32;       // 8
constexpr int kGroups = kThreads / kLanes;  // keys a CTA reads side by side
constexpr int kChunk = 8;                   // elements per 16-byte load
constexpr int kSpan = kLanes * kChunk;      // elements one load of a group covers (128)
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <typename T>
__device__ inline float to_float(T x) {
  if constexpr (std::is_same_v<T, __half>) {
    return __half2float(x);
  } else {
    return __bfloat162float(x);
  }
}

template <typename T>
__device__ inline T from_float(float x) {
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(x);
  } else {
    return __float2bfloat16_rn(x);
  }
}

// Eight fp16 / bf16 values of a 16-byte load as fp32.
template <typename T>
__device__ inline void unpack8(const uint4& u, float* f) {
  const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 x;
    if constexpr (std::is_same_v<T, __half>) {
      x = __half22float2(*reinterpret_cast<const __half2*>(&w[i]));
    } else {
      x = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w[i]));
    }
    f[2 * i] = x.x;
    f[2 * i + 1] = x.y;
  }
}

// 16 bytes from global to shared memory, asynchronously (sm_80+), bypassing L1: the cache is read
// once.
__device__ inline void copy_async(uint4* dst, const void* src) {
  const auto d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src) : "memory");
}
__device__ inline void commit_copies() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int kPending>
__device__ inline void wait_copies() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// Keys per group per step: four, two where the registers per row would not fit.
constexpr int keys_per_step(int nc, int ncv, int rb) { return rb * (nc + ncv) > 8 ? 2 : 4; }

// Steps of keys in the shared-memory ring (split_kv_kernel).
constexpr int kStages = 4;

// NC / NCV: 16-byte loads per lane for a K / V row (head_dim up to 128 NC); RB: query rows.
template <typename T, int NC, int NCV, int RB>
__global__ void __launch_bounds__(kThreads) split_kv_kernel(const SplitKvArgs a) {
  constexpr int kKeys = keys_per_step(NC, NCV, RB);
  __shared__ float s_acc[kWarps][RB][NCV * kSpan];
  __shared__ float s_m[kWarps][RB], s_l[kWarps][RB], s_f[kWarps][RB];
  __shared__ float s_lse[RB];

  const int slot = static_cast<int>(blockIdx.x);
  const int g = a.heads_q / a.heads_kv;
  const int h = static_cast<int>(blockIdx.y) % a.heads_kv;
  const int row0 = static_cast<int>(blockIdx.y) / a.heads_kv * RB;
  const int rows = min(RB, g * a.tokens - row0);
  const std::int64_t kv_row = a.table[slot];
  const int kv_len = a.table[a.slots + slot];
  const int b = a.table[2 * a.slots + slot];
  const std::int64_t delta =
      static_cast<std::int64_t>(static_cast<std::uint32_t>(a.table[3 * a.slots + slot])) |
      (static_cast<std::int64_t>(a.table[4 * a.slots + slot]) << 32);
  const bool masked = slot >= a.masked_from;
  const int lane = static_cast<int>(threadIdx.x) % kLanes;
  const int group = static_cast<int>(threadIdx.x) / kLanes;
  const int warp = static_cast<int>(threadIdx.x) / 32;

  // The query rows, scaled so that exp2(score) is the softmax numerator.
  float q[RB][NC * kChunk];
  int tok[RB];
  const float qscale = a.scale * kLog2e;
#pragma unroll
  for (int r = 0; r < RB; ++r) {
    tok[r] = 0;
    const T* qp = nullptr;
    if (r < rows) {
      const int row = row0 + r, t = row / g, jj = row % g;
      tok[r] = t;
      qp = static_cast<const T*>(a.q) + b * a.q_batch + t * a.q_token + (h * g + jj) * a.q_head;
    }
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const int e0 = (lane + kLanes * c) * kChunk;
#pragma unroll
      for (int e = 0; e < kChunk; ++e) {
        q[r][c * kChunk + e] =
            qp != nullptr && e0 + e < a.head_dim ? to_float(qp[e0 + e]) * qscale : 0.0f;
      }
    }
  }

  float m[RB], l[RB], acc[RB][NCV * kChunk];
#pragma unroll
  for (int r = 0; r < RB; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int i = 0; i < NCV * kChunk; ++i) acc[r][i] = 0.0f;
  }
  const T* kb = static_cast<const T*>(a.k) + h * a.k_head;
  const T* vb = static_cast<const T*>(a.v) + h * a.v_head;

  // Each thread copies its own 16-byte pieces of K and V rows into its own slots of a kStages-deep
  // ring in shared memory (cp.async), kStages - 1 steps ahead of the step it computes, and reads
  // back only what it copied: no barrier, and 3 steps of keys in flight per CTA.
  extern __shared__ uint4 s_ring[];  // [kStages][kItems][kThreads]
  constexpr int kItems = kKeys * (NC + NCV);
  const int steps = (kv_len + kGroups * kKeys - 1) / (kGroups * kKeys);
  auto issue = [&](int step) {
    uint4* ring = s_ring + (step % kStages) * kItems * kThreads + threadIdx.x;
#pragma unroll
    for (int u = 0; u < kKeys; ++u) {
      const int j = step * kGroups * kKeys + u * kGroups + group;
      const std::int64_t row = kv_row + j;
#pragma unroll
      for (int c = 0; c < NC + NCV; ++c) {
        const bool is_k = c < NC;
        const int e0 = (lane + kLanes * (is_k ? c : c - NC)) * kChunk;
        uint4* dst = ring + (u * (NC + NCV) + c) * kThreads;
        if (j < kv_len && e0 < (is_k ? a.head_dim : a.head_dim_v)) {
          copy_async(dst, is_k ? kb + row * a.k_row + e0 : vb + row * a.v_row + e0);
        } else {
          *dst = make_uint4(0, 0, 0, 0);
        }
      }
    }
  };
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (i < steps) issue(i);
    commit_copies();
  }

  for (int step = 0; step < steps; ++step) {
    if (step + kStages - 1 < steps) issue(step + kStages - 1);
    commit_copies();
    wait_copies<kStages - 1>();  // this step's group has landed
    const int j0 = step * kGroups * kKeys;
    const uint4* ring = s_ring + (step % kStages) * kItems * kThreads + threadIdx.x;
    uint4 kr[kKeys][NC], vr[kKeys][NCV];
#pragma unroll
    for (int u = 0; u < kKeys; ++u) {
#pragma unroll
      for (int c = 0; c < NC; ++c) kr[u][c] = ring[(u * (NC + NCV) + c) * kThreads];
#pragma unroll
      for (int c = 0; c < NCV; ++c) vr[u][c] = ring[(u * (NC + NCV) + NC + c) * kThreads];
    }
    // Scores: each lane's share of the dot products, summed over the group's 16 lanes.
    float s[kKeys][RB];
#pragma unroll
    for (int u = 0; u < kKeys; ++u) {
      float kf[NC * kChunk];
#pragma unroll
      for (int c = 0; c < NC; ++c) unpack8<T>(kr[u][c], kf + c * kChunk);
#pragma unroll
      for (int r = 0; r < RB; ++r) {
        float d = 0.0f;
#pragma unroll
        for (int i = 0; i < NC * kChunk; ++i) d = fmaf(q[r][i], kf[i], d);
        s[u][r] = d;
      }
    }
#pragma unroll
    for (int u = 0; u < kKeys; ++u) {
#pragma unroll
      for (int r = 0; r < RB; ++r) {
#pragma unroll
        for (int off = kLanes / 2; off > 0; off /= 2) {
          s[u][r] += __shfl_xor_sync(0xffffffffu, s[u][r], off);
        }
      }
    }
    // Masks: keys past the slot, rows past the block, and the window / causal band of edges.
#pragma unroll
    for (int u = 0; u < kKeys; ++u) {
      const int j = j0 + u * kGroups + group;
#pragma unroll
      for (int r = 0; r < RB; ++r) {
        bool seen = j < kv_len && r < rows;
        if (masked && seen) {
          const std::int64_t d = delta + tok[r] - j;
          seen = (a.window_right < 0 || d >= -a.window_right) &&
                 (a.window_left < 0 || d <= a.window_left);
        }
        if (!seen) s[u][r] = -INFINITY;
      }
    }
    // Online softmax: scores become weights against the new running maximum.
#pragma unroll
    for (int r = 0; r < RB; ++r) {
      float mx = m[r];
#pragma unroll
      for (int u = 0; u < kKeys; ++u) mx = fmaxf(mx, s[u][r]);
      if (mx == -INFINITY) {
#pragma unroll
        for (int u = 0; u < kKeys; ++u) s[u][r] = 0.0f;
        continue;
      }
      const float alpha = exp2f(m[r] - mx);
      float sum = 0.0f;
#pragma unroll
      for (int u = 0; u < kKeys; ++u) {
        s[u][r] = exp2f(s[u][r] - mx);
        sum += s[u][r];
      }
      l[r] = l[r] * alpha + sum;
      m[r] = mx;
#pragma unroll
      for (int i = 0; i < NCV * kChunk; ++i) acc[r][i] *= alpha;
    }
#pragma unroll
    for (int u = 0; u < kKeys; ++u) {
      float vf[NCV * kChunk];
#pragma unroll
      for (int c = 0; c < NCV; ++c) unpack8<T>(vr[u][c], vf + c * kChunk);
#pragma unroll
      for (int r = 0; r < RB; ++r) {
#pragma unroll
        for (int i = 0; i < NCV * kChunk; ++i) acc[r][i] = fmaf(s[u][r], vf[i], acc[r][i]);
      }
    }
  }

  // The warp's two groups merge (fp addition commutes, so both halves hold the same bits).
#pragma unroll
  for (int r = 0; r < RB; ++r) {
    const float mo = __shfl_xor_sync(0xffffffffu, m[r], kLanes);
    const float lo = __shfl_xor_sync(0xffffffffu, l[r], kLanes);
    const float mx = fmaxf(m[r], mo);
    const float fa = mx == -INFINITY ? 0.0f : exp2f(m[r] - mx);
    const float fb = mx == -INFINITY ? 0.0f : exp2f(mo - mx);
    l[r] = l[r] * fa + lo * fb;
    m[r] = mx;
#pragma unroll
    for (int i = 0; i < NCV * kChunk; ++i) {
      const float ao = __shfl_xor_sync(0xffffffffu, acc[r][i], kLanes);
      acc[r][i] = acc[r][i] * fa + ao * fb;
    }
  }
  if (static_cast<int>(threadIdx.x) % 32 < kLanes) {
#pragma unroll
    for (int r = 0; r < RB; ++r) {
      if (lane == 0) {
        s_m[warp][r] = m[r];
        s_l[warp][r] = l[r];
      }
#pragma unroll
      for (int c = 0; c < NCV; ++c) {
#pragma unroll
        for (int e = 0; e < kChunk; ++e) {
          s_acc[warp][r][(lane + kLanes * c) * kChunk + e] = acc[r][c * kChunk + e];
        }
      }
    }
  }
  __syncthreads();
  // Per row: each warp's weight in the normalised output, and the LSE.
  if (static_cast<int>(threadIdx.x) < rows) {
    const int r = static_cast<int>(threadIdx.x);
    float mx = -INFINITY;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, s_m[w][r]);
    float sum = 0.0f;
    for (int w = 0; w < kWarps; ++w) {
      s_f[w][r] = mx == -INFINITY ? 0.0f : exp2f(s_m[w][r] - mx);
      sum += s_l[w][r] * s_f[w][r];
    }
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (int w = 0; w < kWarps; ++w) s_f[w][r] *= inv;
    s_lse[r] = sum > 0.0f ? (mx + log2f(sum)) * kLn2 : -INFINITY;
  }
  __syncthreads();
  const SlotOutput& out = masked ? a.edge : a.open;
  const std::int64_t s_index = masked ? slot - a.masked_from : slot;
  T* o = static_cast<T*>(out.o);
  for (int idx = static_cast<int>(threadIdx.x); idx < rows * a.head_dim_v; idx += kThreads) {
    const int r = idx / a.head_dim_v, d = idx % a.head_dim_v;
    const int row = row0 + r, t = row / g, jj = row % g;
    float x = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) x = fmaf(s_acc[w][r][d], s_f[w][r], x);
    o[s_index * out.o_slot + h * out.o_head + t * out.o_token + jj * out.o_row + d] =
        from_float<T>(x);
    if (d == 0) {
      out.lse[s_index * out.l_slot + h * out.l_head + t * out.l_token + jj * out.l_row] = s_lse[r];
    }
  }
}

// Lets `kernel` use `bytes` of dynamic shared memory (past the default 48 KiB) on the current
// device. The limit belongs to the function in each device's context, and setting it synchronises
// the runtime, so it is set once per function and device.
Status allow_shared_memory(const void* kernel, std::size_t bytes) {
  int device = 0;
  ULYSSES_CUDA_CHECK(cudaGetDevice(&device));
  static std::mutex mu;
  static std::set<std::pair<const void*, int>> done;
  const std::lock_guard<std::mutex> lock(mu);
  if (done.count({kernel, device}) != 0) return Status::ok();
  ULYSSES_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(bytes)));
  done.insert({kernel, device});
  return Status::ok();
}

template <typename T, int NC, int NCV, int RB>
Status launch(const SplitKvArgs& a, int row_blocks, Stream stream) {
  const dim3 grid(static_cast<unsigned>(a.slots), static_cast<unsigned>(a.heads_kv * row_blocks));
  // The ring: kStages x kItems 16-byte pieces per thread.
  constexpr std::size_t smem =
      std::size_t{kStages} * keys_per_step(NC, NCV, RB) * (NC + NCV) * kThreads * 16;
  void (*kernel)(SplitKvArgs) = &split_kv_kernel<T, NC, NCV, RB>;
  ULYSSES_RETURN_IF_ERROR(allow_shared_memory(reinterpret_cast<const void*>(kernel), smem));
  kernel<<<grid, kThreads, smem, static_cast<cudaStream_t>(stream)>>>(a);
  ULYSSES_CUDA_CHECK_LAUNCH();
  return Status::ok();
}

// RB: 2, 4 or 8 rows (at most 4 with 256-wide heads, whose registers per row double).
template <typename T, int NC, int NCV>
Status by_rows(const SplitKvArgs& a, Stream stream) {
  const int R = a.heads_q / a.heads_kv * a.tokens;
  constexpr int kMaxRows = NC == 1 && NCV == 1 ? 8 : 4;
  const int rb = R <= 2 ? 2 : (R <= 4 || kMaxRows == 4 ? 4 : 8);
  const int blocks = (R + rb - 1) / rb;
  if (rb == 2) return launch<T, NC, NCV, 2>(a, blocks, stream);
  if constexpr (kMaxRows == 8) {
    if (rb == 8) return launch<T, NC, NCV, 8>(a, blocks, stream);
  }
  return launch<T, NC, NCV, 4>(a, blocks, stream);
}

template <typename T>
Status by_widths(const SplitKvArgs& a, Stream stream) {
  const bool wide_k = a.head_dim > kSpan, wide_v = a.head_dim_v > kSpan;
  if (wide_k && wide_v) return by_rows<T, 2, 2>(a, stream);
  if (wide_k) return by_rows<T, 2, 1>(a, stream);
  if (wide_v) return by_rows<T, 1, 2>(a, stream);
  return by_rows<T, 1, 1>(a, stream);
}

}  // namespace

Status split_kv_attention(const SplitKvArgs& a, Stream stream) {
  if (const std::string why = split_kv_unsupported(a.dtype, a.head_dim, a.head_dim_v);
      !why.empty()) {
    return unsupported("ulysses::kernels::split_kv_attention: " + why);
  }
  if (a.slots == 0) return Status::ok();
  const int rows = a.heads_q / a.heads_kv * a.tokens;
  if (static_cast<std::int64_t>(a.heads_kv) * ((rows + 1) / 2) > 65535) {
    return unsupported(detail::str_cat("ulysses::kernels::split_kv_attention: ", a.heads_kv,
                                       " KV heads x ", rows,
                                       " query rows each need more than 65535 CTA rows"));
  }
  if (a.dtype == DType::kFloat16) return by_widths<__half>(a, stream);
  return by_widths<__nv_bfloat16>(a, stream);
}

}  // namespace ulysses::kernels
