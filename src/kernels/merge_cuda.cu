// CUDA implementations of the merge operations (see merge.h).
//
// One warp per row (b, s, h) of [B, S, H, D], its lanes over head_dim; strides in elements.
// Element-wise operations (accumulate, convert, zero) are elementwise.h's.
// The sinks' gradient is one cluster of blocks per head
// with a fixed-order tree reduction, so it is deterministic. Accumulators are fp32; data fp32,
// fp16 or bf16.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cooperative_groups.h>
#include <cub/block/block_scan.cuh>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "common/cuda_check.h"
#include "kernels/dtype_access.cuh"
#include "kernels/elementwise.h"
#include "kernels/fast_div.h"
#include "kernels/merge.h"

namespace ulysses::kernels::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 256;

struct View4 {
  void* data;
  int dtype;  // DType value
  std::int64_t n0, n1, n2, n3;
  std::int64_t s0, s1, s2, s3;
};
struct View3 {
  void* data;
  int dtype;
  std::int64_t s0, s1, s2;
};

View4 v4(const TensorView& t) {
  return {t.data,      static_cast<int>(t.dtype),
          t.size(0),   t.size(1),
          t.size(2),   t.size(3),
          t.stride(0), t.stride(1),
          t.stride(2), t.stride(3)};
}
View3 v3(const TensorView& t) {
  return {t.data, static_cast<int>(t.dtype), t.stride(0), t.stride(1), t.stride(2)};
}

// Four fp16 or bf16 values (8 bytes as loaded) as fp32.
__device__ float4 unpack4(uint2 r, int dtype) {
  const unsigned short e[4] = {
      static_cast<unsigned short>(r.x & 0xFFFFu), static_cast<unsigned short>(r.x >> 16),
      static_cast<unsigned short>(r.y & 0xFFFFu), static_cast<unsigned short>(r.y >> 16)};
  float f[4];
  for (int j = 0; j < 4; ++j) {
    f[j] = static_cast<DType>(dtype) == DType::kFloat16
               ? __half2float(__ushort_as_half(e[j]))
               : __bfloat162float(__ushort_as_bfloat16(e[j]));
  }
  return {f[0], f[1], f[2], f[3]};
}

// p[i .. i + 3] as fp32: i a multiple of 4 and the base aligned to 4 elements (one 8 or 16-byte
// load).
__device__ float4 load4(const void* p, int dtype, std::int64_t i) {
  if (static_cast<DType>(dtype) == DType::kFloat32) {
    return *reinterpret_cast<const float4*>(static_cast<const float*>(p) + i);
  }
  return unpack4(*reinterpret_cast<const uint2*>(static_cast<const unsigned short*>(p) + i), dtype);
}

struct Index {
  std::int64_t b, s, h, d;
};
__device__ std::int64_t at4(const View4& t, const Index& x) {
  return x.b * t.s0 + x.s * t.s1 + x.h * t.s2 + x.d * t.s3;
}
__device__ std::int64_t at3(const View3& t, const Index& x) {  // LSE [B, H, S]
  return x.b * t.s0 + x.h * t.s1 + x.s * t.s2;
}

#define ULYSSES_GRID_LOOP(i, n)                                                                    \
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)

// Row-parallel kernels: one warp per row (b, s, h) of [B, S, H, D] (grid-stride over rows), its
// lanes over d, so the row's LSE values are read once per lane and the data accesses are coalesced
// along head_dim. Row indices are 32-bit and split with FastDiv once per row: a block per row with
// 64-bit divisions in every thread cost more than the row's bytes.
struct Rows {
  std::uint32_t count;
  // Row r = (b, mid, inner): heads inner (b, s, h) or, tokens_first, tokens inner (b, h, s), so
  // that a warp's consecutive rows read consecutive LSE values of a head-major [B, H, S] LSE (one
  // 32-byte sector for eight rows instead of eight sectors).
  FastDiv inner, mid;
  bool tokens_first = false;
};
constexpr int kLanes = 32;
constexpr int kRowThreads = 256;  // a row kernel's block: 8 warps

__device__ Index row_of(const Rows& g, std::uint32_t r) {
  std::uint32_t q = 0, i = 0, b = 0, m = 0;
  g.inner.divmod(r, q, i);
  g.mid.divmod(q, b, m);
  return g.tokens_first ? Index{b, i, m, 0} : Index{b, m, i, 0};
}

#define ULYSSES_ROW_LOOP(r, g)                                                            \
  for (std::uint32_t r = (blockIdx.x * blockDim.x + threadIdx.x) / kLanes; r < (g).count; \
       r += gridDim.x * (blockDim.x / kLanes))

__device__ int lane_of_row() { return static_cast<int>(threadIdx.x % kLanes); }

// Piece p of a warp's run of kRows rows cut into 16-byte pieces (8 16-bit elements), per_row a
// row: the row it belongs to (kRows: none, a lane past the run's end), the lane that owns that
// row's offsets and weights (the row, or 0 for no row: shuffles need a valid source) and its first
// element in the row.
struct Piece {
  int row, owner, col;
};
template <int kRows>
__device__ Piece piece_of(int p, int per_row) {
  const int row = p < kRows * per_row ? p / per_row : kRows;
  const int owner = row < kRows ? row : 0;
  return {row, owner, (p - owner * per_row) * 8};
}

__device__ float log_add_exp(float a, float b) {
  if (a == -INFINITY) return b;
  if (b == -INFINITY) return a;
  return fmaxf(a, b) + log1pf(expf(-fabsf(a - b)));
}

// Merge and finalize take a warp's rows kGroupRows at a time (consecutive rows: the heads of one
// token, or the tokens of one head, see Rows), kVec elements per lane per access (4 where every
// view fits fits_vec4(): one 8 or 16-byte access). Every load of a group is issued before any is
// used: lane u reads row u's LSE (and writes it back: no other lane touches it, so in place needs
// no barrier) and hands it to the warp by a shuffle, after the rows' data loads are in flight. On
// one H200, 32k rows x 32 heads x 128 (docs/PERF.md, "Sinks outside cuDNN"): one row per warp, one
// element per lane and a barrier between the LSE and the data took 0.47 ms to finalize in place (a
// copy of O: 0.13 ms) and 0.67 ms to merge an fp32 accumulator with a bf16 block; then 0.37 and
// 0.55 ms, and with head-major LSEs taken tokens first 0.28 and 0.51 ms ("One rank" and the
// finalize probe in docs/PERF.md).
constexpr int kGroupRows = 4;

// A warp's first rows, `rows` at a time (grid-stride).
#define ULYSSES_GROUP_LOOP(r0, g, rows)                                              \
  for (std::uint32_t r0 = (blockIdx.x * blockDim.x + threadIdx.x) / kLanes * (rows); \
       r0 < (g).count; r0 += gridDim.x * (blockDim.x / kLanes) * (rows))

// A lane's data elements of one row as loaded: one element (kVec 1), four 16-bit ones as their raw
// 8 bytes (half the registers of fp32 values, so twice the rows fit in flight), or four fp32.
template <int kVec, bool kHalf>
using RawVec = std::conditional_t<kVec == 1, float, std::conditional_t<kHalf, uint2, float4>>;
template <typename Raw>
__device__ Raw load_raw(const void* p, int dtype, std::int64_t i) {
  if constexpr (std::is_same_v<Raw, uint2>) {
    return *reinterpret_cast<const uint2*>(static_cast<const unsigned short*>(p) + i);
  } else if constexpr (std::is_same_v<Raw, float4>) {
    return load4(p, dtype, i);
  } else {
    return load(p, dtype, i);
  }
}
__device__ void to_floats(float x, int, float* f) { f[0] = x; }
__device__ void to_floats(float4 x, int, float* f) {
  f[0] = x.x, f[1] = x.y, f[2] = x.z, f[3] = x.w;
}
__device__ void to_floats(uint2 x, int dtype, float* f) { to_floats(unpack4(x, dtype), dtype, f); }

// Four data elements (or one) from fp32, rounded to nearest.
template <int kVec>
__device__ void store_vec(void* p, int dtype, std::int64_t i, const float* v) {
  if constexpr (kVec == 4) {
    switch (static_cast<DType>(dtype)) {
      case DType::kFloat16: {
        const __half2 a = __floats2half2_rn(v[0], v[1]), b = __floats2half2_rn(v[2], v[3]);
        *reinterpret_cast<uint2*>(static_cast<__half*>(p) + i) = make_uint2(
            *reinterpret_cast<const unsigned*>(&a), *reinterpret_cast<const unsigned*>(&b));
        break;
      }
      case DType::kBFloat16: {
        const __nv_bfloat162 a = __floats2bfloat162_rn(v[0], v[1]),
                             b = __floats2bfloat162_rn(v[2], v[3]);
        *reinterpret_cast<uint2*>(static_cast<__nv_bfloat16*>(p) + i) = make_uint2(
            *reinterpret_cast<const unsigned*>(&a), *reinterpret_cast<const unsigned*>(&b));
        break;
      }
      default:
        *reinterpret_cast<float4*>(static_cast<float*>(p) + i) =
            make_float4(v[0], v[1], v[2], v[3]);
    }
  } else {
    store(p, dtype, i, v[0]);
  }
}

// Eight fp32 values into 16-bit p[i .. i + 7] as one 16-byte store (i a multiple of 8, the base
// 16-byte aligned), rounded to nearest.
__device__ void store8_16bit(void* p, int dtype, std::int64_t i, const float* v) {
  unsigned w[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    if (static_cast<DType>(dtype) == DType::kFloat16) {
      const __half2 h = __floats2half2_rn(v[2 * j], v[2 * j + 1]);
      w[j] = *reinterpret_cast<const unsigned*>(&h);
    } else {
      const __nv_bfloat162 h = __floats2bfloat162_rn(v[2 * j], v[2 * j + 1]);
      w[j] = *reinterpret_cast<const unsigned*>(&h);
    }
  }
  *reinterpret_cast<uint4*>(static_cast<unsigned short*>(p) + i) =
      make_uint4(w[0], w[1], w[2], w[3]);
}

// The rows r0 .. r0 + kGroupRows - 1 (past the end: row r0 again, `real` false, never stored).
struct RowGroup {
  Index x[kGroupRows];
  bool real[kGroupRows];
};
__device__ RowGroup group_of(const Rows& g, std::uint32_t r0) {
  RowGroup rg;
#pragma unroll
  for (int u = 0; u < kGroupRows; ++u) {
    rg.real[u] = r0 + u < g.count;
    rg.x[u] = row_of(g, rg.real[u] ? r0 + u : r0);
  }
  return rg;
}

// acc = acc exp(la - m) + blk exp(lb - m), lacc = m = log(exp(la) + exp(lb)), row by row; rows
// whose block LSE is -inf (the block saw none of its keys) are left as they are.
template <int kVec>
__global__ void merge_kernel(Rows g, View4 acc, View3 lacc, View4 blk, View3 lblk) {
  const int lane = lane_of_row();
  ULYSSES_GROUP_LOOP(r0, g, kGroupRows) {
    const RowGroup rg = group_of(g, r0);
    float my_la = -INFINITY, my_lb = -INFINITY;  // lane u: row u's
#pragma unroll
    for (int u = 0; u < kGroupRows; ++u) {
      if (lane == u && rg.real[u]) {
        my_la = load(lacc.data, lacc.dtype, at3(lacc, rg.x[u]));
        my_lb = load(lblk.data, lblk.dtype, at3(lblk, rg.x[u]));
      }
    }
    float a[kGroupRows][kVec], b[kGroupRows][kVec];
    auto load_rows = [&](std::int64_t d) {
#pragma unroll
      for (int u = 0; u < kGroupRows; ++u) {
        using Raw = RawVec<kVec, false>;
        to_floats(load_raw<Raw>(acc.data, acc.dtype, at4(acc, rg.x[u]) + d * acc.s3), acc.dtype,
                  a[u]);
        to_floats(load_raw<Raw>(blk.data, blk.dtype, at4(blk, rg.x[u]) + d * blk.s3), blk.dtype,
                  b[u]);
      }
    };
    const std::int64_t d0 = kVec * lane;
    if (d0 < acc.n3) load_rows(d0);
    float wa[kGroupRows], wb[kGroupRows];
    bool keep[kGroupRows];  // the block saw none of the row's keys (or no row)
    float my_m = my_la;
#pragma unroll
    for (int u = 0; u < kGroupRows; ++u) {
      const float la = __shfl_sync(0xffffffffu, my_la, u), lb = __shfl_sync(0xffffffffu, my_lb, u);
      keep[u] = lb == -INFINITY;
      const float m = log_add_exp(la, lb);
      wa[u] = la == -INFINITY ? 0.0f : expf(la - m);
      wb[u] = expf(lb - m);
      if (lane == u) my_m = m;
    }
    for (std::int64_t d = d0; d < acc.n3; d += kVec * kLanes) {
      if (d != d0) load_rows(d);
#pragma unroll
      for (int u = 0; u < kGroupRows; ++u) {
        if (keep[u]) continue;  // uniform across the warp
#pragma unroll
        for (int j = 0; j < kVec; ++j) a[u][j] = a[u][j] * wa[u] + b[u][j] * wb[u];
        store_vec<kVec>(acc.data, acc.dtype, at4(acc, rg.x[u]) + d * acc.s3, a[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < kGroupRows; ++u) {
      if (lane == u && !keep[u]) store(lacc.data, lacc.dtype, at3(lacc, rg.x[u]), my_m);
    }
  }
}

// out = acc exp(la - l), lout = l = log(exp(la) + exp(sink)) (without sinks: a copy), row by row;
// out and lout may be acc and lacc. kRows rows per warp: 8 of 16-bit data (8 bytes per lane and
// row), else 4; a row's offsets are kept, not its indices, to leave registers for them (4 rows of
// 4-element accesses held the warps to 1 KB in flight each and finalize to 1.25 TB/s; 8 rows reach
// 1.44 TB/s at 112 registers, and a third block per SM spills). Rows tokens first (head-major
// LSE: one sector of LSE for eight rows) reach 1.9 TB/s; out of place or without sinks changes
// less than 4%. What held it at half a copy's 4.1 TB/s was the 8-byte access per lane:
// finalize16_kernel below (16 bytes a lane) moves 3.5 TB/s on the same rows (docs/PERF.md).
template <int kVec, bool kHalf, int kRows>
__global__ void __launch_bounds__(kRowThreads)
    finalize_kernel(Rows g, View4 acc, View3 lacc, const float* sinks, std::int64_t sink_stride,
                    int head_offset, View4 out, View3 lout) {
  using Raw = RawVec<kVec, kHalf>;
  const int lane = lane_of_row();
  ULYSSES_GROUP_LOOP(r0, g, kRows) {
    std::int64_t ia[kRows], io[kRows];
    std::uint32_t real = 0;  // bit u: row r0 + u exists (else row r0 again, never stored)
    float my_l = -INFINITY, my_sink = 0.0f;  // lane u: row u's
    std::int64_t my_lout = 0;
#pragma unroll
    for (int u = 0; u < kRows; ++u) {
      const bool is_real = r0 + u < g.count;
      const Index x = row_of(g, is_real ? r0 + u : r0);
      ia[u] = at4(acc, x);
      io[u] = at4(out, x);
      if (is_real) real |= 1u << u;
      if (lane == u) {
        my_l = load(lacc.data, lacc.dtype, at3(lacc, x));
        if (sinks != nullptr) my_sink = sinks[(head_offset + x.h) * sink_stride];
        my_lout = at3(lout, x);
      }
    }
    Raw v[kRows];
    auto load_rows = [&](std::int64_t d) {
#pragma unroll
      for (int u = 0; u < kRows; ++u) v[u] = load_raw<Raw>(acc.data, acc.dtype, ia[u] + d * acc.s3);
    };
    const std::int64_t d0 = kVec * lane;
    if (d0 < acc.n3) load_rows(d0);
    // -inf: padding (real rows see their own key): no sink, O as it is.
    if (sinks != nullptr && my_l != -INFINITY) {
      const float l = log_add_exp(my_l, my_sink);
      my_sink = expf(my_l - l);  // now the row's weight
      my_l = l;
    } else {
      my_sink = 1.0f;
    }
    float w[kRows];
#pragma unroll
    for (int u = 0; u < kRows; ++u) w[u] = __shfl_sync(0xffffffffu, my_sink, u);
    for (std::int64_t d = d0; d < acc.n3; d += kVec * kLanes) {
      if (d != d0) load_rows(d);
#pragma unroll
      for (int u = 0; u < kRows; ++u) {
        if (!(real >> u & 1u)) continue;
        float f[kVec];
        to_floats(v[u], acc.dtype, f);
#pragma unroll
        for (int j = 0; j < kVec; ++j) f[j] *= w[u];
        store_vec<kVec>(out.data, out.dtype, io[u] + d * out.s3, f);
      }
    }
    if (lane < kRows && (real >> lane & 1u)) store(lout.data, lout.dtype, my_lout, my_l);
  }
}

// finalize_kernel for 16-bit acc and out whose rows fit 16-byte accesses (fits_vec8(); the cuDNN
// backend's sink fold, in place): a warp's kRows rows as one run of 16-byte pieces, lane l taking
// pieces l, l + 32, ... (two rows of head_dim 128 per access), kPass of them in flight. Lane u <
// kRows owns row u's LSE, sink weight and offsets and hands them to the lanes that need them by
// shuffles. Same results as finalize_kernel, bit for bit. On one H200, 32k rows x 32 heads x 128
// bf16 in place: 0.154 ms (3.5 TB/s; a copy of O 0.13 ms), against finalize_kernel's 0.285.
template <int kRows>
__global__ void __launch_bounds__(kRowThreads)
    finalize16_kernel(Rows g, View4 acc, View3 lacc, const float* sinks, std::int64_t sink_stride,
                      int head_offset, View4 out, View3 lout) {
  constexpr int kPass = 4;
  constexpr unsigned kAll = 0xffffffffu;
  const int lane = lane_of_row();
  const int per_row = static_cast<int>(acc.n3 / 8), pieces = kRows * per_row;
  ULYSSES_GROUP_LOOP(r0, g, kRows) {
    float my_l = -INFINITY, my_w = 1.0f;  // lane u: row u's
    long long my_ia = 0, my_io = 0;
    std::int64_t my_lout = 0;
    int my_real = 0;
    if (lane < kRows) {
      my_real = r0 + static_cast<std::uint32_t>(lane) < g.count;
      const Index x = row_of(g, my_real ? r0 + static_cast<std::uint32_t>(lane) : r0);
      my_ia = at4(acc, x);
      my_io = at4(out, x);
      my_lout = at3(lout, x);
      my_l = load(lacc.data, lacc.dtype, at3(lacc, x));
      if (sinks != nullptr) my_w = sinks[(head_offset + x.h) * sink_stride];  // the sink, for now
    }
    uint4 v[kPass];
    long long io[kPass];
    Piece pc[kPass];
    auto load_pass = [&](int p0) {
#pragma unroll
      for (int i = 0; i < kPass; ++i) {
        pc[i] = piece_of<kRows>(p0 + i * kLanes + lane, per_row);
        const long long ia = __shfl_sync(kAll, my_ia, pc[i].owner);
        io[i] = __shfl_sync(kAll, my_io, pc[i].owner);
        if (pc[i].row < kRows) {
          v[i] = *reinterpret_cast<const uint4*>(static_cast<const unsigned short*>(acc.data) + ia +
                                                 pc[i].col);
        }
      }
    };
    load_pass(0);
    // -inf: padding (real rows see their own key): no sink, O as it is.
    if (sinks != nullptr && my_l != -INFINITY) {
      const float l = log_add_exp(my_l, my_w);
      my_w = expf(my_l - l);
      my_l = l;
    } else {
      my_w = 1.0f;
    }
    for (int p0 = 0; p0 < pieces; p0 += kPass * kLanes) {
      if (p0 != 0) load_pass(p0);
#pragma unroll
      for (int i = 0; i < kPass; ++i) {
        const float w = __shfl_sync(kAll, my_w, pc[i].owner);
        const int real = __shfl_sync(kAll, my_real, pc[i].owner);
        if (pc[i].row >= kRows || !real) continue;
        float f[8];
        to_floats(make_uint2(v[i].x, v[i].y), acc.dtype, f);
        to_floats(make_uint2(v[i].z, v[i].w), acc.dtype, f + 4);
#pragma unroll
        for (int j = 0; j < 8; ++j) f[j] *= w;
        store8_16bit(out.data, out.dtype, io[i] + pc[i].col, f);
      }
    }
    if (lane < kRows && my_real) store(lout.data, lout.dtype, my_lout, my_l);
  }
}

// One warp per row. The parts' LSE values are read a warp's width at a time (lanes over parts), so
// the maximum and the sum are two reductions rather than a chain of n dependent loads per lane;
// then each lane adds its columns' values in part order, with the weights shuffled from the lanes
// that read them, and many loads issued before the first is used (a decode step merges 16 pieces
// of 32 rows: latency, not bytes, is its cost).
__global__ void merge_stacked_kernel(Rows g, View4 parts, View3 lparts, int n,
                                     std::int64_t o_stride, std::int64_t l_stride,
                                     const float* sinks, std::int64_t sink_stride, int head_offset,
                                     View4 out, View3 lout) {
  constexpr unsigned kAll = 0xffffffffu;
  ULYSSES_ROW_LOOP(r, g) {
    Index x = row_of(g, r);
    const std::int64_t l_at = at3(lparts, x), o_at = at4(parts, x);
    const int lane = lane_of_row();
    auto lse_of = [&](int i) {
      return i < n ? load(lparts.data, lparts.dtype, l_at + i * l_stride) : -INFINITY;
    };
    float m = -INFINITY;
    for (int c = 0; c < n; c += kLanes) m = fmaxf(m, lse_of(c + lane));
    for (int off = kLanes / 2; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(kAll, m, off));
    float sum = 0.0f;
    for (int c = 0; m != -INFINITY && c < n; c += kLanes) {
      const float li = lse_of(c + lane);
      if (li != -INFINITY) sum += expf(li - m);
    }
    for (int off = kLanes / 2; off > 0; off /= 2) sum += __shfl_xor_sync(kAll, sum, off);
    float l = m == -INFINITY ? -INFINITY : m + logf(sum), scale = 0.0f;
    if (m != -INFINITY) {
      scale = 1.0f / sum;
      if (sinks != nullptr) {
        const float with_sink = log_add_exp(l, sinks[(head_offset + x.h) * sink_stride]);
        scale *= expf(l - with_sink);
        l = with_sink;
      }
    }
    // Columns lane + 32 q of each 256-column block, four parts at a time: 32 loads in flight per
    // lane before any is used.
    constexpr int kCols = 8, kParts = 4;
    for (std::int64_t d0 = 0; d0 < out.n3; d0 += kCols * kLanes) {
      float acc[kCols];
#pragma unroll
      for (int q = 0; q < kCols; ++q) acc[q] = 0.0f;
      for (int c = 0; m != -INFINITY && c < n; c += kLanes) {
        // Part c + lane's weight; a part that saw no key (LSE -inf) weighs 0 and is not read.
        const float li = lse_of(c + lane);
        const float w = li == -INFINITY ? 0.0f : expf(li - m);
        const int count = min(kLanes, n - c);
        for (int k0 = 0; k0 < count; k0 += kParts) {
          float wk[kParts], v[kParts][kCols];
#pragma unroll
          for (int k = 0; k < kParts; ++k) {
            wk[k] = __shfl_sync(kAll, w, min(k0 + k, kLanes - 1));
#pragma unroll
            for (int q = 0; q < kCols; ++q) {
              const std::int64_t d = d0 + lane + q * kLanes;
              const bool read = d < out.n3 && k0 + k < count && wk[k] != 0.0f;
              v[k][q] = read ? load(parts.data, parts.dtype,
                                    o_at + (c + k0 + k) * o_stride + d * parts.s3)
                             : 0.0f;
            }
          }
#pragma unroll
          for (int k = 0; k < kParts; ++k) {
#pragma unroll
            for (int q = 0; q < kCols; ++q) {
              if (k0 + k < count) acc[q] += wk[k] * v[k][q];
            }
          }
        }
      }
#pragma unroll
      for (int q = 0; q < kCols; ++q) {
        x.d = d0 + lane + q * kLanes;
        if (x.d < out.n3) store(out.data, out.dtype, at4(out, x), acc[q] * scale);
      }
    }
    if (lane == 0 && lout.data != nullptr) store(lout.data, lout.dtype, at3(lout, x), l);
  }
}

// Up to kTableChunk values per launch, carried in the kernel's arguments.
constexpr int kTableChunk = 1000;
struct TableChunk {
  std::int32_t v[kTableChunk];
};
__global__ void write_table_kernel(TableChunk chunk, int n, std::int32_t* dst) {
  for (int i = static_cast<int>(threadIdx.x); i < n; i += blockDim.x) dst[i] = chunk.v[i];
}

__global__ void fill_lse_kernel(View4 shape, View3 l, float value, std::int64_t n) {
  ULYSSES_GRID_LOOP(i, n) {
    const std::int64_t h = i % shape.n2, s = (i / shape.n2) % shape.n1,
                       b = i / (shape.n2 * shape.n1);
    store(l.data, l.dtype, at3(l, Index{b, s, h, 0}), value);
  }
}

// The sinks' gradient, one head per cluster of `split` blocks (blockIdx.x: the block within the
// head, blockIdx.y: the head), in a fixed order of additions (deterministic): the head's warps
// take the rows a few at a time (kSinkRows; 2 with fp32 values), a warp's lanes run along head_dim
// (coalesced; 4 elements per load when kVec4), each lane sums dO * O of its elements per row, then
// adds exp(sink - lse) times those sums; the lanes' sums meet in a fixed tree, the warps' in order,
// and block 0 of the cluster adds the blocks' sums in order through distributed shared memory
// (Hopper clusters; split = 1 without them). Every load of a group of rows (LSE, O, dO) is issued
// before any is used, so a warp waits for memory once per group (the exp used to wait for the LSE
// before O and dO were asked for). A row with LSE = -inf (no sequence's row: padding, gaps) is left
// out, whatever its O and dO hold (a zero weight times a NaN there would still be NaN). (One thread
// per row reading its head_dim serially made every load touch 32 rows' cache lines; one block per
// head left 100 of 132 SMs idle.)
constexpr int kSinkThreads = 1024;
constexpr int kSinkRows = 4;
constexpr int kSinkSplit = 8;  // blocks per head with clusters (the portable cluster size)

// The end of a sink_grad kernel: each thread's `sum` into *dsink, in a fixed order (lanes by a
// tree, warps in order, the cluster's blocks in order through distributed shared memory).
__device__ void sink_sum_out(float sum, int split, float* dsink) {
  constexpr int kWarps = kSinkThreads / kLanes;
  __shared__ float partial[kWarps];
  __shared__ float block_sum;
  const int lane = lane_of_row(), warp = static_cast<int>(threadIdx.x) / kLanes;
  for (int off = kLanes / 2; off > 0; off /= 2) sum += __shfl_down_sync(0xffffffffu, sum, off);
  if (lane == 0) partial[warp] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.0f;
    for (int i = 0; i < kWarps; ++i) total += partial[i];
    block_sum = total;
  }
  if (split == 1) {
    if (threadIdx.x == 0) *dsink = block_sum;
    return;
  }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();  // every block's sum is in its shared memory
  if (cluster.block_rank() == 0 && threadIdx.x == 0) {
    float total = 0.0f;
    for (int i = 0; i < split; ++i) total += *cluster.map_shared_rank(&block_sum, i);
    *dsink = total;
  }
  cluster.sync();  // keep the blocks' shared memory until block 0 has read it
#endif
}
template <bool kVec4, bool kHalf>
__global__ void __launch_bounds__(kSinkThreads)
    sink_grad_kernel(FastDiv seq, std::uint32_t rows, View4 o, View4 d_o, View3 lse,
                     const float* sinks, std::int64_t sink_stride, int head_offset, float* dsinks,
                     std::int64_t dsink_stride, int split) {
  constexpr int kWarps = kSinkThreads / kLanes;
  // fp32 values of 4 rows would not fit the 64 registers a 1024-thread block leaves a thread.
  constexpr int kRows = kVec4 && !kHalf ? 2 : kSinkRows;
  const std::int64_t h = blockIdx.y;
  const float sink = sinks[(head_offset + h) * sink_stride];
  const int lane = lane_of_row(), warp = static_cast<int>(threadIdx.x) / kLanes;
  const std::uint32_t first = (blockIdx.x * kWarps + static_cast<std::uint32_t>(warp)) * kRows;
  const std::uint32_t step = static_cast<std::uint32_t>(split) * kWarps * kRows;
  float sum = 0.0f;
  for (std::uint32_t r0 = first; r0 < rows; r0 += step) {
    float l[kRows], dot[kRows];
    std::int64_t oa[kRows], da[kRows];
#pragma unroll
    for (int u = 0; u < kRows; ++u) {
      const std::uint32_t r = r0 + static_cast<std::uint32_t>(u);
      std::uint32_t b = 0, s = 0;
      if (r < rows) seq.divmod(r, b, s);  // else row 0: a valid address, left out below
      const Index x{b, s, h, 0};
      l[u] = r < rows ? load(lse.data, lse.dtype, at3(lse, x)) : -INFINITY;
      oa[u] = at4(o, x);
      da[u] = at4(d_o, x);
      dot[u] = 0.0f;
    }
    if constexpr (kVec4 && kHalf) {
      // 16-bit O and dO: the raw 8 bytes of every row first (half the registers of fp32 values).
      for (std::int64_t d = 4 * lane; d < o.n3; d += 4 * kLanes) {
        uint2 a[kRows], c[kRows];
#pragma unroll
        for (int u = 0; u < kRows; ++u) {
          a[u] = *reinterpret_cast<const uint2*>(static_cast<const unsigned short*>(d_o.data) +
                                                 da[u] + d);
          c[u] = *reinterpret_cast<const uint2*>(static_cast<const unsigned short*>(o.data) +
                                                 oa[u] + d);
        }
#pragma unroll
        for (int u = 0; u < kRows; ++u) {
          const float4 x = unpack4(a[u], d_o.dtype), y = unpack4(c[u], o.dtype);
          dot[u] += x.x * y.x + x.y * y.y + x.z * y.z + x.w * y.w;
        }
      }
    } else if constexpr (kVec4) {
      for (std::int64_t d = 4 * lane; d < o.n3; d += 4 * kLanes) {
        float4 a[kRows], c[kRows];
#pragma unroll
        for (int u = 0; u < kRows; ++u) {
          a[u] = load4(d_o.data, d_o.dtype, da[u] + d);
          c[u] = load4(o.data, o.dtype, oa[u] + d);
        }
#pragma unroll
        for (int u = 0; u < kRows; ++u) {
          dot[u] += a[u].x * c[u].x + a[u].y * c[u].y + a[u].z * c[u].z + a[u].w * c[u].w;
        }
      }
    } else {
      for (std::int64_t d = lane; d < o.n3; d += kLanes) {
        float a[kRows], c[kRows];
#pragma unroll
        for (int u = 0; u < kRows; ++u) {
          a[u] = load(d_o.data, d_o.dtype, da[u] + d * d_o.s3);
          c[u] = load(o.data, o.dtype, oa[u] + d * o.s3);
        }
#pragma unroll
        for (int u = 0; u < kRows; ++u) dot[u] += a[u] * c[u];
      }
    }
#pragma unroll
    for (int u = 0; u < kRows; ++u) {
      if (l[u] != -INFINITY) sum -= expf(sink - l[u]) * dot[u];
    }
  }
  sink_sum_out(sum, split, dsinks + (head_offset + h) * dsink_stride);
}

// sink_grad_kernel for 16-bit O and dO whose rows fit 16-byte accesses (fits_vec8()): a warp's
// kRows rows of its head as one run of 16-byte pieces (lane l: pieces l, l + 32, ...), every piece
// of both tensors loaded before any is used. Lane u < kRows owns row u's offsets and weight
// exp(sink - lse) and hands them over by shuffles. Deterministic as sink_grad_kernel (each lane
// adds its pieces in a fixed order), though not bitwise it: the partial sums split differently.
// On one H200, 32k rows x 32 heads x 128 bf16: 0.194 ms (2.8 TB/s), against sink_grad_kernel's
// 0.255.
template <int kRows>
__global__ void __launch_bounds__(kSinkThreads)
    sink_grad16_kernel(FastDiv seq, std::uint32_t rows, View4 o, View4 d_o, View3 lse,
                       const float* sinks, std::int64_t sink_stride, int head_offset, float* dsinks,
                       std::int64_t dsink_stride, int split) {
  constexpr int kWarps = kSinkThreads / kLanes, kPass = 2;
  constexpr unsigned kAll = 0xffffffffu;
  const std::int64_t h = blockIdx.y;
  const float sink = sinks[(head_offset + h) * sink_stride];
  const int lane = lane_of_row(), warp = static_cast<int>(threadIdx.x) / kLanes;
  const int per_row = static_cast<int>(o.n3 / 8), pieces = kRows * per_row;
  const std::uint32_t first = (blockIdx.x * kWarps + static_cast<std::uint32_t>(warp)) * kRows;
  const std::uint32_t step = static_cast<std::uint32_t>(split) * kWarps * kRows;
  float sum = 0.0f;
  for (std::uint32_t r0 = first; r0 < rows; r0 += step) {
    long long my_oa = 0, my_da = 0;
    float my_l = -INFINITY;  // lane u: row u's (-inf: no row, or a row left out)
    if (lane < kRows) {
      const std::uint32_t r = r0 + static_cast<std::uint32_t>(lane);
      std::uint32_t b = 0, s = 0;
      if (r < rows) seq.divmod(r, b, s);  // else row 0: a valid address, left out below
      const Index x{b, s, h, 0};
      if (r < rows) my_l = load(lse.data, lse.dtype, at3(lse, x));
      my_oa = at4(o, x);
      my_da = at4(d_o, x);
    }
    for (int p0 = 0; p0 < pieces; p0 += kPass * kLanes) {
      uint4 a[kPass], c[kPass];
      Piece pc[kPass];
#pragma unroll
      for (int i = 0; i < kPass; ++i) {
        pc[i] = piece_of<kRows>(p0 + i * kLanes + lane, per_row);
        const long long oa = __shfl_sync(kAll, my_oa, pc[i].owner);
        const long long da = __shfl_sync(kAll, my_da, pc[i].owner);
        if (pc[i].row < kRows) {
          a[i] = *reinterpret_cast<const uint4*>(static_cast<const unsigned short*>(d_o.data) + da +
                                                 pc[i].col);
          c[i] = *reinterpret_cast<const uint4*>(static_cast<const unsigned short*>(o.data) + oa +
                                                 pc[i].col);
        }
      }
#pragma unroll
      for (int i = 0; i < kPass; ++i) {
        const float l = __shfl_sync(kAll, my_l, pc[i].owner);
        if (pc[i].row >= kRows || l == -INFINITY) continue;
        float x[8], y[8];
        to_floats(make_uint2(a[i].x, a[i].y), d_o.dtype, x);
        to_floats(make_uint2(a[i].z, a[i].w), d_o.dtype, x + 4);
        to_floats(make_uint2(c[i].x, c[i].y), o.dtype, y);
        to_floats(make_uint2(c[i].z, c[i].w), o.dtype, y + 4);
        float dot = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; ++j) dot += x[j] * y[j];
        sum -= expf(sink - l) * dot;
      }
    }
  }
  sink_sum_out(sum, split, dsinks + (head_offset + h) * dsink_stride);
}

// Blocks per head for sink_grad: kSinkSplit where the device has clusters and the kernel was
// built for them, else 1.
template <typename Kernel>
int sink_split(Kernel kernel) {
  int dev = 0, major = 0;
  cudaFuncAttributes attr{};
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaFuncGetAttributes(&attr, kernel) != cudaSuccess) {
    (void)cudaGetLastError();
    return 1;
  }
  return major >= 9 && attr.binaryVersion >= 90 ? kSinkSplit : 1;
}

// Whether 4-element loads fit a view: head_dim contiguous and every stride and the base on the
// 4-element grid.
// 16-byte accesses of 16-bit rows: 8 elements.
bool fits_vec8(const TensorView& t) {
  return dtype_size(t.dtype) == 2 && t.stride(3) == 1 && t.size(3) % 8 == 0 &&
         t.stride(0) % 8 == 0 && t.stride(1) % 8 == 0 && t.stride(2) % 8 == 0 &&
         reinterpret_cast<std::uintptr_t>(t.data) % 16 == 0;
}
bool fits_vec4(const TensorView& t) {
  const auto e = static_cast<std::uintptr_t>(dtype_size(t.dtype));
  return t.stride(3) == 1 && t.size(3) % 4 == 0 && t.stride(0) % 4 == 0 && t.stride(1) % 4 == 0 &&
         t.stride(2) % 4 == 0 && reinterpret_cast<std::uintptr_t>(t.data) % (4 * e) == 0;
}

// One block: sequences in tiles of kThreads, exclusive scans of the chunk sizes and of the
// non-empty flags (each such sequence's entry) carried across tiles.
__global__ void packed_tables_kernel(const std::int32_t* cu, int n, int non_empty, int ring,
                                     std::int32_t* out) {
  using Scan = cub::BlockScan<std::int32_t, kThreads>;
  __shared__ typename Scan::TempStorage temp;
  std::int32_t carry = 0, entries = 0;
  for (int base = 0; base < n; base += kThreads) {
    const int i = base + static_cast<int>(threadIdx.x);
    std::int32_t len = 0, c = 0, real = 0;
    if (i < n) {
      len = cu[i + 1] - cu[i];
      real = len > 0 ? 1 : 0;
      c = real ? (len + 2 * ring - 1) / (2 * ring) : 0;
    }
    std::int32_t start = 0, total = 0, s = 0, reals = 0;
    Scan(temp).ExclusiveSum(c, start, total);
    __syncthreads();  // temp is reused by the second scan
    Scan(temp).ExclusiveSum(real, s, reals);
    s += entries;
    if (real && s < non_empty) {
      out[s] = carry + start;
      for (int x = 0; x < 2 * ring; ++x) {
        out[static_cast<std::int64_t>(1 + x) * non_empty + s] = min(max(len - x * c, 0), c);
      }
    }
    carry += total;
    entries += reals;
    __syncthreads();  // temp is reused by the next tile
  }
}

// packed_pair_tables(): one thread per sequence.
__global__ void pair_tables_kernel(const std::int32_t* t, int n, int qc, int kc, std::int64_t lo,
                                   std::int64_t hi, PairPart part, std::int32_t* out) {
  for (int s = blockIdx.x * blockDim.x + threadIdx.x; s < n; s += gridDim.x * blockDim.x) {
    const std::int64_t un = n;
    const PairRows r = pair_rows(t[s], t[un + s], t[(1 + qc) * un + s], t[(1 + kc) * un + s],
                                 qc - kc, lo, hi, part);
    out[s] = r.q_begin;
    out[un + s] = r.q_len;
    out[2 * un + s] = r.kv_begin;
    out[3 * un + s] = r.kv_len;
  }
}

// The rows of a [B, S, H, D] view for a row-parallel kernel, tokens first when `lse` ([B, H, S])
// is contiguous along S (see Rows).
Result<Rows> rows_of(const TensorView& t, const TensorView& lse, const char* what) {
  const std::int64_t rows = t.size(0) * t.size(1) * t.size(2);
  if (rows >= (std::int64_t{1} << 31)) {
    return unsupported(detail::str_cat("ulysses::kernels::cuda::", what, ": ", rows,
                                       " rows of [B, S, H] (expected fewer than 2^31)"));
  }
  const bool tokens_first = !lse.empty_view() && lse.stride(2) == 1 && t.size(1) > 1;
  const auto heads = static_cast<std::uint32_t>(t.size(2)),
             seq = static_cast<std::uint32_t>(t.size(1));
  return Rows{static_cast<std::uint32_t>(rows), FastDiv(tokens_first ? seq : heads),
              FastDiv(tokens_first ? heads : seq), tokens_first};
}
// The grid of a row kernel whose warps take `rows_per_warp` rows at a time.
int row_blocks(const Rows& g, int rows_per_warp = 1) {
  const std::int64_t per_block = kRowThreads / kLanes * rows_per_warp;
  const std::int64_t b = (static_cast<std::int64_t>(g.count) + per_block - 1) / per_block;
  return static_cast<int>(b < 1 ? 1 : (b > 65535 * 32 ? 65535 * 32 : b));
}

int blocks(std::int64_t n) {
  const std::int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < 1 ? 1 : (b > 65535 * 16 ? 65535 * 16 : b));
}

Status check(std::initializer_list<const TensorView*> views, const char* what) {
  for (const TensorView* t : views) {
    if (t->dtype != DType::kFloat32 && t->dtype != DType::kFloat16 &&
        t->dtype != DType::kBFloat16) {
      return unsupported(detail::str_cat("ulysses::kernels::cuda::", what, ": dtype ",
                                         dtype_name(t->dtype), " (expected fp32, fp16 or bf16)"));
    }
  }
  return Status::ok();
}

Status same4(const TensorView& a, const TensorView& b, const char* what) {
  if (a.ndim != 4 || b.ndim != 4 || a.shape != b.shape) {
    return internal_error(detail::str_cat("ulysses::kernels::cuda::", what, ": shapes differ (",
                                          a.to_string(), " vs ", b.to_string(), ")"));
  }
  return Status::ok();
}

}  // namespace

Status packed_chunk_tables(const std::int32_t* cu_seqlens, int num_seqs, int non_empty, int ring,
                           std::int32_t* out, Stream stream) {
  if (num_seqs < 1 || non_empty < 1) return Status::ok();
  packed_tables_kernel<<<1, kThreads, 0, stream>>>(cu_seqlens, num_seqs, non_empty, ring, out);
  ULYSSES_CUDA_CHECK_LAUNCH();
  return Status::ok();
}

Status packed_pair_tables(const std::int32_t* chunk_tables, int n, int qc, int kc, std::int64_t lo,
                          std::int64_t hi, PairPart part, std::int32_t* out, Stream stream) {
  if (n < 1) return Status::ok();
  if (qc == kc) return internal_error("packed_pair_tables: a chunk paired with itself");
  const int grid = std::min((n + kThreads - 1) / kThreads, 1024);
  pair_tables_kernel<<<grid, kThreads, 0, stream>>>(chunk_tables, n, qc, kc, lo, hi, part, out);
  ULYSSES_CUDA_CHECK_LAUNCH();
  return Status::ok();
}

Status reset_partial(const TensorView& o_acc, const TensorView& lse_acc, Stream stream) {
  ULYSSES_RETURN_IF_ERROR(zero(o_acc, stream));
  ULYSSES_RETURN_IF_ERROR(check({&lse_acc}, "reset_partial"));
  const std::int64_t n = o_acc.size(0) * o_acc.size(1) * o_acc.size(2);
  fill_lse_kernel<<<blocks(n), kThreads, 0, stream>>>(v4(o_acc), v3(lse_acc), -INFINITY, n);
  ULYSSES_CUDA_CHECK_LAUNCH();
  return Status::ok();
}

Status merge_partial(const TensorView& o_acc, const TensorView& lse_acc, const TensorView& o_blk,
                     const TensorView& lse_blk, Stream stream) {
  ULYSSES_RETURN_IF_ERROR(same4(o_acc, o_blk, "merge_partial"));
  ULYSSES_RETURN_IF_ERROR(check({&o_acc, &lse_acc, &o_blk, &lse_blk}, "merge_partial"));
  ULYSSES_ASSIGN_OR_RETURN(const Rows g, rows_of(o_acc, lse_acc, "merge_partial"));
  const auto kernel = fits_vec4(o_acc) && fits_vec4(o_blk) ? merge_kernel<4> : merge_kernel<1>;
  kernel<<<row_blocks(g, kGroupRows), kRowThreads, 0, stream>>>(g, v4(o_acc), v3(lse_acc),
                                                                v4(o_blk), v3(lse_blk));
  ULYSSES_CUDA_CHECK_LAUNCH();
  return Status::ok();
}

Status finalize_partial(const TensorView& o_acc, const TensorView& lse_acc, const TensorView& sinks,
                        int head_offset, const TensorView& o, const TensorView& lse,
                        Stream stream) {
  ULYSSES_RETURN_IF_ERROR(same4(o_acc, o, "finalize_partial"));
  ULYSSES_RETURN_IF_ERROR(check({&o_acc, &lse_acc, &o, &lse}, "finalize_partial"));
  const auto* sk = sinks.empty_view() ? nullptr : static_cast<const float*>(sinks.data);
  const std::int64_t ss = sinks.empty_view() ? 0 : sinks.stride(0);
  ULYSSES_ASSIGN_OR_RETURN(const Rows g, rows_of(o_acc, lse_acc, "finalize_partial"));
  const bool vec = fits_vec4(o_acc) && fits_vec4(o), half = dtype_size(o_acc.dtype) == 2;
  const auto kernel = fits_vec8(o_acc) && fits_vec8(o) ? finalize16_kernel<8>
                      : !vec                           ? finalize_kernel<1, false, 4>
                      : half                           ? finalize_kernel<4, true, 8>
                                                       : finalize_kernel<4, false, 4>;
  kernel<<<row_blocks(g, vec && half ? 8 : 4), kRowThreads, 0, stream>>>(
      g, v4(o_acc), v3(lse_acc), sk, ss, head_offset, v4(o), v3(lse));
  ULYSSES_CUDA_CHECK_LAUNCH();
  return Status::ok();
}

Status merge_stacked(const TensorView& o_parts, const TensorView& lse_parts, int parts,
                     std::int64_t o_part_stride, std::int64_t lse_part_stride,
                     const TensorView& sinks, int head_offset, const TensorView& o,
                     const TensorView& lse, Stream stream) {
  ULYSSES_RETURN_IF_ERROR(same4(o_parts, o, "merge_stacked"));
  ULYSSES_RETURN_IF_ERROR(check({&o_parts, &lse_parts, &o}, "merge_stacked"));
  if (!lse.empty_view()) ULYSSES_RETURN_IF_ERROR(check({&lse}, "merge_stacked"));
  const auto* sk = sinks.empty_view() ? nullptr : static_cast<const float*>(sinks.data);
  const std::int64_t ss = sinks.empty_view() ? 0 : sinks.stride(0);
  View3 lout =
      lse.empty_view() ? View3{nullptr, static_cast<int>(DType::kFloat32), 0, 0, 0} : v3(lse);
  ULYSSES_ASSIGN_OR_RETURN(const Rows g, rows_of(o, TensorView{}, "merge_stacked"));
  merge_stacked_kernel<<<row_blocks(g), kRowThreads, 0, stream>>>(
      g, v4(o_parts), v3(lse_parts), parts, o_part_stride, lse_part_stride, sk, ss, head_offset,
      v4(o), lout);
  ULYSSES_CUDA_CHECK_LAUNCH();
  return Status::ok();
}

Status write_table(std::span<const std::int32_t> values, std::int32_t* dst, Stream stream) {
  for (std::size_t base = 0; base < values.size(); base += kTableChunk) {
    TableChunk chunk{};
    const int n = static_cast<int>(std::min<std::size_t>(kTableChunk, values.size() - base));
    std::copy_n(values.begin() + static_cast<std::ptrdiff_t>(base), n, chunk.v);
    write_table_kernel<<<1, 256, 0, stream>>>(chunk, n, dst + base);
    ULYSSES_CUDA_CHECK_LAUNCH();
  }
  return Status::ok();
}

Status read_back(const void* src, void* dst, std::size_t bytes, Stream stream) {
  ULYSSES_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
  if (bytes > 0) ULYSSES_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
  return Status::ok();
}

Status accumulate(const TensorView& acc, const TensorView& src, Stream stream) {
  ULYSSES_RETURN_IF_ERROR(same4(acc, src, "accumulate"));
  ULYSSES_RETURN_IF_ERROR(check({&acc, &src}, "accumulate"));
  return convert_elements(acc, src, /*add=*/true, stream);
}

Status convert(const TensorView& dst, const TensorView& src, Stream stream) {
  ULYSSES_RETURN_IF_ERROR(same4(dst, src, "convert"));
  ULYSSES_RETURN_IF_ERROR(check({&dst, &src}, "convert"));
  return convert_elements(dst, src, /*add=*/false, stream);
}

Status zero(const TensorView& dst, Stream stream) {
  ULYSSES_RETURN_IF_ERROR(check({&dst}, "zero"));
  return fill_zero(dst, stream);
}

Status sink_grad(const TensorView& o, const TensorView& d_o, const TensorView& lse,
                 const TensorView& sinks, int head_offset, const TensorView& dsinks,
                 Stream stream) {
  ULYSSES_RETURN_IF_ERROR(same4(o, d_o, "sink_grad"));
  ULYSSES_RETURN_IF_ERROR(check({&o, &d_o, &lse}, "sink_grad"));
  if (sinks.dtype != DType::kFloat32 || dsinks.dtype != DType::kFloat32) {
    return internal_error("ulysses::kernels::cuda::sink_grad: sinks and dsinks must be fp32");
  }
  const std::int64_t rows = o.size(0) * o.size(1);
  if (rows >= (std::int64_t{1} << 31)) {
    return unsupported(detail::str_cat("ulysses::kernels::cuda::sink_grad: ", rows,
                                       " rows of [B, S] (expected fewer than 2^31)"));
  }
  if (o.size(2) == 0) return Status::ok();  // no heads: nothing to write
  const bool vec4 = fits_vec4(o) && fits_vec4(d_o);
  const bool half = dtype_size(o.dtype) == 2 && dtype_size(d_o.dtype) == 2;
  const auto kernel = fits_vec8(o) && fits_vec8(d_o) ? sink_grad16_kernel<kSinkRows>
                      : !vec4                        ? sink_grad_kernel<false, false>
                      : half                         ? sink_grad_kernel<true, true>
                                                     : sink_grad_kernel<true, false>;
  const int split = sink_split(kernel);
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(static_cast<unsigned>(split), static_cast<unsigned>(o.size(2)));
  config.blockDim = dim3(kSinkThreads);
  config.stream = stream;
  cudaLaunchAttribute cluster{};
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = static_cast<unsigned>(split);
  cluster.val.clusterDim.y = cluster.val.clusterDim.z = 1;
  config.attrs = &cluster;
  config.numAttrs = split > 1 ? 1 : 0;
  ULYSSES_CUDA_CHECK(
      cudaLaunchKernelEx(&config, kernel, FastDiv(static_cast<std::uint32_t>(o.size(1))),
                         static_cast<std::uint32_t>(rows), v4(o), v4(d_o), v3(lse),
                         static_cast<const float*>(sinks.data), sinks.stride(0), head_offset,
                         static_cast<float*>(dsinks.data), dsinks.stride(0), split));
  ULYSSES_CUDA_CHECK_LAUNCH();
  return Status::ok();
}

}  // namespace ulysses::kernels::cuda
