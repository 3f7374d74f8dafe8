// Split-KV attention (split_kv.h) on tensor cores: one CTA per (slot, KV head, block of 16 query
// rows, or 8 when a KV head has at most 8), eight warps.
//
// Each warp takes every eighth tile of 16 keys of the slot (tiles aligned to 16 rows of the
// sequence's own rows, so the first and last may hold rows of neighbours, which are masked). A
// tile's K and V rows come into the warp's own ring in shared memory kStages - 1 tiles ahead of
// the one it computes (split_kv_layout.h): on Hopper, by one lane, as tensor copies (TMA) of
// 16 x 64 boxes, 128-byte swizzled so that ldmatrix reads them without bank conflicts; where no
// tensor map can describe the cache (paged with pages that are not whole tiles; no row count),
// as one bulk copy per row (lane k K's row k, lane 16 + k V's) into rows padded by 16 bytes; both
// complete on the ring slot's barrier. Before Hopper with cp.async, 16 bytes per instruction. Per
// tile, with 16 rows, S = Q K^T is 2 x head_dim / 16 mma.sync m16n8k16 (Q's fragments stay in
// registers; K's come from ldmatrix), an online softmax in base 2 updates the rows' maxima and sums
// (rows gq and gq + 8 of the fragment layout, four lanes per row), and O += P V is head_dim_v / 8
// more, P taken straight from S's accumulators (rounded to the data's dtype, as flash attention
// does) and V through ldmatrix.trans. With 8 rows the same runs transposed, keys as the mma's M:
// S^T = K Q^T (head_dim / 16 mma, rows 2 tq and 2 tq + 1 per lane, eight lanes per row) and O^T +=
// V^T P^T (head_dim_v / 16), P^T's fragments from S^T's accumulators through movmatrix. At the end
// the eight warps' rows merge in shared memory in warp order, so the result does not depend on
// timing.
#include <cuda.h>  // CUtensorMap (the runtime fetches the driver's encoder: no libcuda link)
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <type_traits>
#include <utility>

#include "common/cuda_check.h"
#include "kernels/fast_div.h"
#include "kernels/split_kv.h"
#include "kernels/split_kv_layout.h"

namespace ulysses::kernels {
namespace {

using namespace split_kv_layout;
constexpr int kThreads = kWarps * 32;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Hopper and later copy tiles with tensor or bulk copies (completing on a barrier); earlier GPUs
// with cp.async, 16 bytes per instruction. The ring budget follows: the image for a GPU before
// Hopper is built with the older one, and the host sizes the launch by the device's compute
// capability (split_kv_layout.h).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
constexpr bool kBulkCopies = false;
constexpr int kArchMajor = 8;
#else
constexpr bool kBulkCopies = true;
constexpr int kArchMajor = 9;
#endif

template <typename T>
__device__ inline T from_float(float x) {
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(x);
  } else {
    return __float2bfloat16_rn(x);
  }
}

// Two values as one 32-bit register of the mma's A operand (lo in the low half).
template <typename T>
__device__ inline std::uint32_t pack(float lo, float hi) {
  if constexpr (std::is_same_v<T, __half>) {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const std::uint32_t*>(&v);
  } else {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const std::uint32_t*>(&v);
  }
}
template <typename T>
__device__ inline std::uint32_t pack(T lo, T hi) {
  const std::uint16_t l = *reinterpret_cast<const std::uint16_t*>(&lo);
  const std::uint16_t h = *reinterpret_cast<const std::uint16_t*>(&hi);
  return static_cast<std::uint32_t>(l) | (static_cast<std::uint32_t>(h) << 16);
}

// 2^x in one instruction (ex2.approx, flushing subnormals: a weight below 2^-126 of the row's
// largest changes no sum), where exp2f adds a few for subnormal results.
__device__ inline float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// An 8 x 8 matrix of 16-bit values, one register (row lane / 4, columns 2 (lane % 4) and the
// next) per lane, transposed.
__device__ inline std::uint32_t transpose8x8(std::uint32_t x) {
  std::uint32_t y;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
}

// c += a b, m16n8k16, fp32 accumulators.
template <typename T>
__device__ inline void mma(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                           std::uint32_t b1) {
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ inline unsigned shared_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// Four 8x8 matrices of 16-bit elements; lane i gives the address of row i % 8 of matrix i / 8.
__device__ inline void ldmatrix_x4(std::uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row)));
}
__device__ inline void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row)));
}

// 16 bytes from global to shared memory, asynchronously, bypassing L1: the cache is read once.
[[maybe_unused]] __device__ inline void copy_async(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared_address(dst)), "l"(src)
               : "memory");
}
[[maybe_unused]] __device__ inline void commit_copies() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int kPending>
__device__ inline void wait_copies() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// A ring stage's barrier (sm_90): one arrival per phase, plus the bytes its copies bring.
[[maybe_unused]] __device__ inline void barrier_init(std::uint64_t* bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(shared_address(bar)) : "memory");
}
[[maybe_unused]] __device__ inline void barrier_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
[[maybe_unused]] __device__ inline void barrier_invalidate(std::uint64_t* bar) {
  asm volatile("mbarrier.inval.shared::cta.b64 [%0];\n" ::"r"(shared_address(bar)) : "memory");
}
// Arrives on the barrier, announcing `bytes` of copies that complete this phase.
[[maybe_unused]] __device__ inline void barrier_expect(std::uint64_t* bar, unsigned bytes) {
  asm volatile(
      "mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(shared_address(bar)),
      "r"(bytes)
      : "memory");
}
[[maybe_unused]] __device__ inline bool barrier_done(std::uint64_t* bar, unsigned parity) {
  unsigned done = 0;
  asm volatile(
      "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, "
      "0, p;\n}\n"
      : "=r"(done)
      : "r"(shared_address(bar)), "r"(parity)
      : "memory");
  return done != 0;
}
// Orders this thread's earlier shared memory accesses before later bulk copies into them.
[[maybe_unused]] __device__ inline void fence_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// `bytes` (a multiple of 16) from global to shared memory, completing on `bar`.
[[maybe_unused]] __device__ inline void copy_bulk(void* dst, const void* src, unsigned bytes,
                                                  std::uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::
          "r"(shared_address(dst)),
      "l"(src), "r"(bytes), "r"(shared_address(bar))
      : "memory");
}

// A box of the tensor map (3D: columns, rows, heads) at (x, y, z) to shared memory, completing on
// `bar` with the box's bytes (zeros where it leaves the tensor).
[[maybe_unused]] __device__ inline void copy_tensor(void* dst, const CUtensorMap* map, int x, int y,
                                                    int z, std::uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, "
      "{%2, %3, %4}], [%5];\n" ::"r"(shared_address(dst)),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(x), "r"(y), "r"(z), "r"(shared_address(bar))
      : "memory");
}

// NK / NV: head_dim <= 16 NK, head_dim_v <= 16 NV (both multiples of 16). R: query rows per CTA,
// 16 (the mma's M: S = Q K^T, O += P V) or 8 (transposed, keys as M: S^T = K Q^T, O^T += V^T P^T,
// half the mma of 16 rows for blocks of at most 8 real rows, e.g. GQA 4 with one new token).
// kPaged: the cache is paged (SplitKvArgs::page_size > 0); `page` divides by the page size.
// kTensor: tiles arrive as tensor copies through `tk` (K) and `tv` (V); else row by row.
template <typename T, int NK, int NV, int R, bool kPaged, bool kTensor>
__global__ void __launch_bounds__(kThreads)
    split_kv_kernel(const SplitKvArgs a, const FastDiv page, const __grid_constant__ CUtensorMap tk,
                    const __grid_constant__ CUtensorMap tv) {
  constexpr bool kT = R == 8;  // transposed
  // The host launches tensor copies from compute capability 9 on only; an older GPU's image keeps
  // the row layout for them (never run).
  constexpr bool kTma = kTensor && kBulkCopies;
  constexpr int kStages = stages(NK, NV, ring_bytes(kArchMajor, R, kTma, kPaged), kTma);
  constexpr int kKRow = padded(NK), kVRow = padded(NV);
  constexpr int kTileElems = tile_bytes(NK, NV, kTma) / 2;
  constexpr int kVAt = kTma ? kTile * 16 * NK : kTile * kKRow;  // V's rows in a tile
  extern __shared__ uint4 smem_raw[];

  // Blocks in slot order (a slot's KV heads and row blocks adjacent): the hardware starts blocks
  // in index order, so slots that read nothing (padding of the batch's or a device layout's fixed
  // slot count, which sit after a sequence's pieces) start after the pieces before them.
  const int g = a.heads_q / a.heads_kv;
  const int per_slot = a.heads_kv * ((g * a.tokens + R - 1) / R);
  const int slot = static_cast<int>(blockIdx.x) / per_slot;
  const int hr = static_cast<int>(blockIdx.x) % per_slot;
  const int h = hr % a.heads_kv;
  const int row0 = hr / a.heads_kv * R;
  const int rows = min(R, g * a.tokens - row0);
  const std::int64_t kv_row = a.table[slot];
  const int kv_len = a.table[a.slots + slot];
  const int b = a.table[2 * a.slots + slot];
  const std::int64_t delta =
      static_cast<std::int64_t>(static_cast<std::uint32_t>(a.table[3 * a.slots + slot])) |
      (static_cast<std::int64_t>(a.table[4 * a.slots + slot]) << 32);
  const bool masked = slot >= a.masked_from;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int gq = lane >> 2, tq = lane & 3;  // the mma fragments' row and column group
  const int kchunks = a.head_dim / 16, vchunks = a.head_dim_v / 16;

  // This thread's two query rows (R = 16: gq, gq + 8; R = 8: 2 tq, 2 tq + 1): their query token,
  // and whether they exist.
  int tok[2];
  bool live[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int rr = kT ? 2 * tq + i : gq + 8 * i;
    live[i] = rr < rows;
    tok[i] = live[i] ? (row0 + rr) / g : 0;
  }
  // Query row `rr` of the block, columns col and col + 1, packed; zero past head_dim and rows.
  auto q_pair = [&](int rr, int col, bool c_ok) -> std::uint32_t {
    if (rr >= rows || !c_ok) return 0;
    const int row = row0 + rr;
    const T* qp = static_cast<const T*>(a.q) + b * a.q_batch + (row / g) * a.q_token +
                  (h * g + row % g) * a.q_head + col;
    return pack<T>(qp[0], qp[1]);
  };
  // Q's fragments. R = 16, A operand: register k of chunk c holds row gq + 8 (k & 1), columns
  // 16 c + 2 tq + 8 (k >> 1) and the next. R = 8, B operand (Q^T): register k holds row gq,
  // columns 16 c + 2 tq + 8 k and the next.
  std::uint32_t qa[NK][kT ? 2 : 4];
#pragma unroll
  for (int c = 0; c < NK; ++c) {
    if constexpr (kT) {
#pragma unroll
      for (int k = 0; k < 2; ++k) qa[c][k] = q_pair(gq, 16 * c + 2 * tq + 8 * k, c < kchunks);
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        qa[c][k] = q_pair(gq + 8 * (k & 1), 16 * c + 2 * tq + 8 * (k >> 1), c < kchunks);
      }
    }
  }

  // R = 16: o[n] holds columns 8 n + 2 tq (+1) of rows gq (k 0, 1) and gq + 8 (k 2, 3).
  // R = 8: o[c] holds O^T, columns 16 c + gq (k 0, 1) and + 8 (k 2, 3) of rows 2 tq (+1).
  constexpr int kOFrags = kT ? NV : 2 * NV;
  float o[kOFrags][4];
#pragma unroll
  for (int n = 0; n < kOFrags; ++n) {
#pragma unroll
    for (int k = 0; k < 4; ++k) o[n][k] = 0.0f;
  }
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const float scale = a.scale * kLog2e;

  const T* const kb = static_cast<const T*>(a.k) + h * a.k_head;
  const T* const vb = static_cast<const T*>(a.v) + h * a.v_head;
  std::uint64_t* const bars = reinterpret_cast<std::uint64_t*>(smem_raw) + warp * kMaxStages;
  char* const raw = reinterpret_cast<char*>(smem_raw);
  unsigned ring_at = kBarrierBytes;
  if constexpr (kTma) {
    ring_at +=
        (kSwizzleAlign - shared_address(raw + kBarrierBytes) % kSwizzleAlign) % kSwizzleAlign;
  }
  T* const ring = reinterpret_cast<T*>(raw + ring_at) + warp * kStages * kTileElems;
  // Element (key, col) of a tile's K or V rows (col a multiple of 8 plus an offset below 8): rows
  // `pitch` apart, or (tensor copies) boxes of 16 rows x 64 columns, the 16-byte chunk c of row
  // key at chunk c ^ (key % 8) (the 128-byte swizzle).
  auto at = [](const T* tile, int key, int col, int pitch) -> const T* {
    if constexpr (kTma) {
      return tile + (col / kBoxCols) * (kTile * kBoxCols) + key * kBoxCols +
             (((col / 8) % 8) ^ (key % 8)) * 8 + col % 8;
    } else {
      return tile + key * pitch + col;
    }
  };
  // Tiles start at multiples of 16 of the sequence's own rows (so that pages of a multiple of 16
  // rows hold whole tiles, and a step's bits do not depend on where the rows lie): the slot's key
  // j sits at position lead + j of its tiles, and a tile's positions outside the slot are masked.
  const int lead = static_cast<int>((kPaged ? kv_row : kv_row - b * a.seq_pitch) % kTile);
  const int tiles = kv_len > 0 ? (lead + kv_len + kTile - 1) / kTile : 0;
  const int mine = tiles > warp ? (tiles - warp + kWarps - 1) / kWarps : 0;  // this warp's tiles
  if constexpr (kBulkCopies) {
    if (lane == 0) {
      for (int st = 0; st < kStages; ++st) barrier_init(bars + st);
      barrier_init_fence();
    }
    __syncwarp();
  }
  // Paged: the cache row of the slot's key j, that row of sequence b looked up in b's pages.
  // (Looking it up a tile ahead of its copies measured no faster: docs/PERF.md.)
  auto paged_row = [&](int j) -> std::int64_t {
    std::uint32_t q, r;
    page.divmod(static_cast<std::uint32_t>(kv_row + j), q, r);
    return static_cast<std::int64_t>(a.pages[b * a.page_stride + q]) * a.page_pitch + r;
  };
  // Tile i of this warp (the slot's tile warp + 8 i) into its ring slot: K then V rows.
  auto issue = [&](int i) {
    T* const kt = ring + (i % kStages) * kTileElems;
    T* const vt = kt + kVAt;
    const int key0 = (warp + kWarps * i) * kTile - lead;  // the slot's key at position 0
    // The cache row of the slot's key j.
    auto row_of = [&](int j) -> std::int64_t {
      if constexpr (kPaged) {
        return paged_row(j);
      } else {
        return kv_row + j;
      }
    };
    if constexpr (kTma) {
      // One lane copies the tile's boxes: K's head_dim / 64, then V's, rounded up (zeros past the
      // widths and past the cache's rows); positions outside the slot become zeros after they land.
      fence_async_shared();  // the lanes' reads and zeros of this slot before the copies
      __syncwarp();
      if (lane == 0) {
        const int nbk = (a.head_dim + kBoxCols - 1) / kBoxCols,
                  nbv = (a.head_dim_v + kBoxCols - 1) / kBoxCols;
        std::uint64_t* const bar = bars + i % kStages;
        barrier_expect(bar, static_cast<unsigned>((nbk + nbv) * kBoxBytes));
        const int y = static_cast<int>(row_of(key0));  // < 2^31: the host checks the rows
        for (int c = 0; c < nbk; ++c) {
          copy_tensor(kt + c * kTile * kBoxCols, &tk, c * kBoxCols, y, h, bar);
        }
        for (int c = 0; c < nbv; ++c) {
          copy_tensor(vt + c * kTile * kBoxCols, &tv, c * kBoxCols, y, h, bar);
        }
      }
    } else if constexpr (kBulkCopies) {
      // Lane k copies K row k, lane 16 + k V row k, one bulk copy each; positions outside the
      // slot are zeros (P = 0 times a NaN would still be NaN).
      const int lo = max(0, -key0), hi = min(kTile, kv_len - key0);  // positions holding keys
      const unsigned kbytes = static_cast<unsigned>(a.head_dim) * 2,
                     vbytes = static_cast<unsigned>(a.head_dim_v) * 2;
      std::uint64_t* const bar = bars + i % kStages;
      fence_async_shared();  // the lanes' reads of this slot (synced above) before the copies
      if (lane == 0) barrier_expect(bar, static_cast<unsigned>(hi - lo) * (kbytes + vbytes));
      const bool is_k = lane < kTile;
      const int key = is_k ? lane : lane - kTile;
      T* const dst = is_k ? kt + key * kKRow : vt + key * kVRow;
      const unsigned bytes = is_k ? kbytes : vbytes;
      if (key >= lo && key < hi) {
        const std::int64_t row = row_of(key0 + key);
        copy_bulk(dst, is_k ? kb + row * a.k_row : vb + row * a.v_row, bytes, bar);
      } else {
        for (unsigned x = 0; x < bytes / 16; ++x) {
          reinterpret_cast<uint4*>(dst)[x] = make_uint4(0, 0, 0, 0);
        }
      }
    } else {
      for (int p = lane; p < kTile * 2 * NK; p += 32) {
        const int key = p / (2 * NK), piece = p % (2 * NK);
        if (piece >= 2 * kchunks) continue;
        T* dst = kt + key * kKRow + piece * 8;
        if (const int j = key0 + key; j >= 0 && j < kv_len) {
          copy_async(dst, kb + row_of(j) * a.k_row + piece * 8);
        } else {
          *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
        }
      }
      for (int p = lane; p < kTile * 2 * NV; p += 32) {
        const int key = p / (2 * NV), piece = p % (2 * NV);
        if (piece >= 2 * vchunks) continue;
        T* dst = vt + key * kVRow + piece * 8;
        if (const int j = key0 + key; j >= 0 && j < kv_len) {
          copy_async(dst, vb + row_of(j) * a.v_row + piece * 8);
        } else {
          // Past the slot: zeros, since P = 0 times a NaN would still be NaN.
          *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
        }
      }
    }
  };
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (i < mine) issue(i);
    if constexpr (!kBulkCopies) commit_copies();
  }

  for (int i = 0; i < mine; ++i) {
    __syncwarp();  // every lane is done reading the slot the next issue overwrites
    if (i + kStages - 1 < mine) issue(i + kStages - 1);
    if constexpr (kBulkCopies) {
      while (!barrier_done(bars + i % kStages, static_cast<unsigned>(i / kStages) & 1u)) {
      }
    } else {
      commit_copies();
      wait_copies<kStages - 1>();
    }
    __syncwarp();  // and every lane's copies (and zeros) of tile i have landed
    const T* const kt = ring + (i % kStages) * kTileElems;
    const T* const vt = kt + kVAt;
    const int key0 = (warp + kWarps * i) * kTile - lead;
    if constexpr (kTma) {
      // Positions outside the slot: V's rows become zeros (P = 0 times a NaN would still be
      // NaN); K's scores are masked below. A row of a box is 8 chunks of 16 bytes.
      if (key0 < 0 || key0 + kTile > kv_len) {
        const int chunks = (a.head_dim_v + kBoxCols - 1) / kBoxCols * kTile * 8;
        for (int p = lane; p < chunks; p += 32) {
          if (const int j = key0 + p / 8 % kTile; j < 0 || j >= kv_len) {
            reinterpret_cast<uint4*>(const_cast<T*>(vt))[p] = make_uint4(0, 0, 0, 0);
          }
        }
        __syncwarp();
      }
    }

    // R = 16, S = Q K^T: s[n] holds keys 8 n + 2 tq (+1) of rows gq (k 0, 1) and gq + 8 (k 2,
    // 3). R = 8, S^T = K Q^T: s[0] holds keys gq (k 0, 1) and gq + 8 (k 2, 3) of rows 2 tq (+1).
    float s[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
    for (int c = 0; c < NK; ++c) {
      if (c < kchunks) {
        const int mi = lane / 8, rr = lane % 8;
        std::uint32_t bk[4];
        if constexpr (kT) {
          // K as the A operand: keys 0-7 / dims 16 c + 0-7, keys 8-15 / 0-7, 0-7 / 8-15, 8-15 /
          // 8-15.
          ldmatrix_x4(bk, at(kt, (mi & 1) * 8 + rr, 16 * c + (mi >> 1) * 8, kKRow));
          mma<T>(s[0], bk, qa[c][0], qa[c][1]);
        } else {
          // Matrices: keys 0-7 / dims 16 c + 0-7, keys 0-7 / + 8-15, keys 8-15 / 0-7, 8-15 /
          // 8-15.
          ldmatrix_x4(bk, at(kt, (mi >> 1) * 8 + rr, 16 * c + (mi & 1) * 8, kKRow));
          mma<T>(s[0], qa[c], bk[0], bk[1]);
          mma<T>(s[1], qa[c], bk[2], bk[3]);
        }
      }
    }
    // Scale into base 2, mask, and the online softmax of rows gq and gq + 8. A whole tile of an
    // open slot needs no mask (rows past the block hold finite values that nothing reads).
    const bool plain = !masked && key0 >= 0 && key0 + kTile <= kv_len;
    float mx[2] = {m[0], m[1]};
    constexpr int kSFrags = kT ? 1 : 2;
#pragma unroll
    for (int n = 0; n < kSFrags; ++n) {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        // The value's row (0: this thread's first, 1: its second) and key.
        const int i2 = kT ? (k & 1) : (k >> 1);
        const int j = kT ? key0 + gq + 8 * (k >> 1) : key0 + 8 * n + 2 * tq + (k & 1);
        bool seen = plain || (live[i2] && j >= 0 && j < kv_len);
        if (masked && seen) {
          const std::int64_t d = delta + tok[i2] - j;
          seen = (a.window_right < 0 || d >= -a.window_right) &&
                 (a.window_left < 0 || d <= a.window_left);
        }
        s[n][k] = seen ? s[n][k] * scale : -INFINITY;
        mx[i2] = fmaxf(mx[i2], s[n][k]);
      }
    }
    float alpha[2];
#pragma unroll
    for (int i2 = 0; i2 < 2; ++i2) {
      // Over the lanes that hold the row's other keys: the four of a gq (R = 16), the eight of a
      // tq (R = 8).
      if constexpr (kT) {
        mx[i2] = fmaxf(mx[i2], __shfl_xor_sync(0xffffffffu, mx[i2], 4));
        mx[i2] = fmaxf(mx[i2], __shfl_xor_sync(0xffffffffu, mx[i2], 8));
        mx[i2] = fmaxf(mx[i2], __shfl_xor_sync(0xffffffffu, mx[i2], 16));
      } else {
        mx[i2] = fmaxf(mx[i2], __shfl_xor_sync(0xffffffffu, mx[i2], 1));
        mx[i2] = fmaxf(mx[i2], __shfl_xor_sync(0xffffffffu, mx[i2], 2));
      }
      alpha[i2] = mx[i2] == -INFINITY ? 1.0f : fast_exp2(m[i2] - mx[i2]);
      m[i2] = mx[i2];
      l[i2] *= alpha[i2];
    }
#pragma unroll
    for (int n = 0; n < kSFrags; ++n) {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int i2 = kT ? (k & 1) : (k >> 1);
        s[n][k] = mx[i2] == -INFINITY ? 0.0f : fast_exp2(s[n][k] - mx[i2]);
        l[i2] += s[n][k];
      }
    }
    // O's rescale, unless no row's maximum moved (most tiles once the maxima settle).
    if (!__all_sync(0xffffffffu, alpha[0] == 1.0f && alpha[1] == 1.0f)) {
#pragma unroll
      for (int n = 0; n < kOFrags; ++n) {
        o[n][0] *= alpha[0];
        o[n][1] *= alpha[kT ? 1 : 0];
        o[n][2] *= alpha[kT ? 0 : 1];
        o[n][3] *= alpha[1];
      }
    }
    if constexpr (kT) {
      // P^T as the B operand: keys 2 tq (+1) and 8 + 2 tq (+1) of row gq — S^T's 8 x 8 halves
      // (key gq, rows 2 tq, 2 tq + 1 per lane) transposed in registers.
      const std::uint32_t pb[2] = {transpose8x8(pack<T>(s[0][0], s[0][1])),
                                   transpose8x8(pack<T>(s[0][2], s[0][3]))};
      // O^T += V^T P^T, 16 columns of V (rows of O^T) at a time: matrices dims 16 c + 0-7 / keys
      // 0-7, dims + 8-15 / keys 0-7, dims 0-7 / keys 8-15, 8-15 / 8-15, transposed from V's rows.
#pragma unroll
      for (int c = 0; c < NV; ++c) {
        if (c < vchunks) {
          const int mi = lane / 8, rr = lane % 8;
          std::uint32_t av[4];
          ldmatrix_x4_trans(av, at(vt, (mi >> 1) * 8 + rr, 16 * c + (mi & 1) * 8, kVRow));
          mma<T>(o[c], av, pb[0], pb[1]);
        }
      }
    } else {
      // P as the A operand: keys 2 tq (+1) of rows gq / gq + 8, then keys 8 + 2 tq.
      const std::uint32_t pa[4] = {pack<T>(s[0][0], s[0][1]), pack<T>(s[0][2], s[0][3]),
                                   pack<T>(s[1][0], s[1][1]), pack<T>(s[1][2], s[1][3])};
      // O += P V, 16 columns of V at a time: matrices keys 0-7 / dims 16 c + 0-7, keys 8-15 /
      // 0-7, keys 0-7 / 8-15, keys 8-15 / 8-15, transposed.
#pragma unroll
      for (int c = 0; c < NV; ++c) {
        if (c < vchunks) {
          const int mi = lane / 8, rr = lane % 8;
          std::uint32_t bv[4];
          ldmatrix_x4_trans(bv, at(vt, (mi & 1) * 8 + rr, 16 * c + (mi >> 1) * 8, kVRow));
          mma<T>(o[2 * c], pa, bv[0], bv[1]);
          mma<T>(o[2 * c + 1], pa, bv[2], bv[3]);
        }
      }
    }
  }

  if constexpr (kBulkCopies) {
    __syncwarp();
    if (lane == 0) {
      for (int st = 0; st < kStages; ++st) barrier_invalidate(bars + st);
    }
  }
  // The rows' sums over their lanes (four, or eight transposed); then the warps merge in shared
  // memory (the ring's bytes: every copy has landed and been read).
#pragma unroll
  for (int i2 = 0; i2 < 2; ++i2) {
    if constexpr (kT) {
      l[i2] += __shfl_xor_sync(0xffffffffu, l[i2], 4);
      l[i2] += __shfl_xor_sync(0xffffffffu, l[i2], 8);
      l[i2] += __shfl_xor_sync(0xffffffffu, l[i2], 16);
    } else {
      l[i2] += __shfl_xor_sync(0xffffffffu, l[i2], 1);
      l[i2] += __shfl_xor_sync(0xffffffffu, l[i2], 2);
    }
  }
  constexpr int kOCols = NV * 16 + 4;                     // a row of O in the merge, padded
  float* const s_o = reinterpret_cast<float*>(smem_raw);  // [warp][row][kOCols]
  float* const s_m = s_o + kWarps * kRows * kOCols;       // [warp][row]
  float* const s_l = s_m + kWarps * kRows;
  float* const s_f = s_l + kWarps * kRows;  // each warp's weight per row
  float* const s_lse = s_f + kWarps * kRows;
  __syncthreads();
#pragma unroll
  for (int n = 0; n < kOFrags; ++n) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int rr = kT ? 2 * tq + (k & 1) : gq + 8 * (k >> 1);
      const int col = kT ? 16 * n + gq + 8 * (k >> 1) : 8 * n + 2 * tq + (k & 1);
      s_o[(warp * kRows + rr) * kOCols + col] = o[n][k];
    }
  }
  if (kT ? gq == 0 : tq == 0) {
#pragma unroll
    for (int i2 = 0; i2 < 2; ++i2) {
      const int rr = kT ? 2 * tq + i2 : gq + 8 * i2;
      s_m[warp * kRows + rr] = m[i2];
      s_l[warp * kRows + rr] = l[i2];
    }
  }
  __syncthreads();
  if (static_cast<int>(threadIdx.x) < rows) {
    const int r = static_cast<int>(threadIdx.x);
    float mxr = -INFINITY;
    for (int w = 0; w < kWarps; ++w) mxr = fmaxf(mxr, s_m[w * kRows + r]);
    float sum = 0.0f;
    for (int w = 0; w < kWarps; ++w) {
      const float f = mxr == -INFINITY ? 0.0f : exp2f(s_m[w * kRows + r] - mxr);
      s_f[w * kRows + r] = f;
      sum += s_l[w * kRows + r] * f;
    }
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (int w = 0; w < kWarps; ++w) s_f[w * kRows + r] *= inv;
    s_lse[r] = sum > 0.0f ? (mxr + log2f(sum)) * kLn2 : -INFINITY;
  }
  __syncthreads();
  const SlotOutput& out = masked ? a.edge : a.open;
  const std::int64_t s_index = masked ? slot - a.masked_from : slot;
  T* const op = static_cast<T*>(out.o);
  for (int idx = static_cast<int>(threadIdx.x); idx < rows * a.head_dim_v; idx += kThreads) {
    const int r = idx / a.head_dim_v, d = idx % a.head_dim_v;
    const int row = row0 + r, t = row / g, jj = row % g;
    float x = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w)
      x = fmaf(s_o[(w * kRows + r) * kOCols + d], s_f[w * kRows + r], x);
    op[s_index * out.o_slot + h * out.o_head + t * out.o_token + jj * out.o_row + d] =
        from_float<T>(x);
    if (d == 0) {
      out.lse[s_index * out.l_slot + h * out.l_head + t * out.l_token + jj * out.l_row] = s_lse[r];
    }
  }
}

// The dynamic shared memory a CTA for these head widths, query rows, tile layout and cache takes
// on `device` (its rings follow the compute capability), or why the device cannot give it.
Result<std::size_t> shared_memory_on(int device, int head_dim, int head_dim_v, int rows,
                                     bool tensor, bool paged) {
  int major = 0, optin = 0;
  ULYSSES_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  ULYSSES_CUDA_CHECK(
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (std::string why =
          split_kv_shared_memory_unsupported(head_dim, head_dim_v, major, optin, device);
      !why.empty()) {
    return unsupported(std::move(why));
  }
  return shared_bytes(k_blocks(head_dim), v_blocks(head_dim_v),
                      ring_bytes(major, rows, tensor, paged), tensor);
}

// Lets `kernel` use the dynamic shared memory it needs on `device`. The limit belongs to the
// function in each device's context, and setting it synchronises the runtime, so it is set once
// per function and device.
Result<std::size_t> allow_shared_memory(const void* kernel, int device, int head_dim,
                                        int head_dim_v, int rows, bool tensor, bool paged) {
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, std::size_t> done;
  const std::lock_guard<std::mutex> lock(mu);
  if (const auto it = done.find({kernel, device}); it != done.end()) return it->second;
  ULYSSES_ASSIGN_OR_RETURN(const std::size_t bytes,
                           shared_memory_on(device, head_dim, head_dim_v, rows, tensor, paged));
  ULYSSES_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(bytes)));
  done.emplace(std::pair{kernel, device}, bytes);
  return bytes;
}

// The driver's cuTensorMapEncodeTiled (the runtime hands it out, so nothing links libcuda), or null
// where the driver has none.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      static_cast<void>(cudaGetLastError());  // not sticky; the launch copies rows instead
      return PFN_cuTensorMapEncodeTiled_v12000{};
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encode;
}

// A tensor map of K or V: columns [0, width), rows [0, rows), KV heads; boxes of 16 rows x 64
// columns, 128-byte swizzled (split_kv_layout.h). False where the driver describes no such map
// (then the launch copies rows).
bool tensor_map(CUtensorMap& map, DType dtype, const void* base, int width, std::int64_t rows,
                int heads, std::int64_t row_stride, std::int64_t head_stride) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  if (encode == nullptr) return false;
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(width), static_cast<cuuint64_t>(rows),
                              static_cast<cuuint64_t>(heads)};
  // One KV head: its stride is never stepped, but must be a valid one.
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(row_stride) * 2,
                                 static_cast<cuuint64_t>(heads > 1 ? head_stride : row_stride) * 2};
  const cuuint32_t box[3] = {kBoxCols, kTile, 1}, steps[3] = {1, 1, 1};
  return encode(&map,
                dtype == DType::kFloat16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                         : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                3, const_cast<void*>(base), dims, strides, box, steps,
                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// Query rows per CTA: 8 (the transposed kernel) when a KV head's rows fit, else 16.
int rows_per_cta(const SplitKvArgs& a) {
  return a.heads_q / a.heads_kv * a.tokens <= 8 ? 8 : kRows;
}

using Kernel = void (*)(SplitKvArgs, FastDiv, CUtensorMap, CUtensorMap);
template <typename T, int NK, int NV, int R>
Kernel kernel_for(bool paged, bool tensor) {
  if (paged) {
    return tensor ? &split_kv_kernel<T, NK, NV, R, true, true>
                  : &split_kv_kernel<T, NK, NV, R, true, false>;
  }
  return tensor ? &split_kv_kernel<T, NK, NV, R, false, true>
                : &split_kv_kernel<T, NK, NV, R, false, false>;
}

template <typename T, int NK, int NV>
Status launch(const SplitKvArgs& a, Stream stream) {
  const int r = rows_per_cta(a);
  const int row_blocks = (a.heads_q / a.heads_kv * a.tokens + r - 1) / r;
  // One dimension, slot-major (the kernel's first lines).
  const dim3 grid(static_cast<unsigned>(a.slots) * static_cast<unsigned>(a.heads_kv * row_blocks));
  const bool paged = a.page_size > 0;
  int device = 0, major = 0;
  ULYSSES_CUDA_CHECK(cudaGetDevice(&device));
  ULYSSES_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  // Tensor copies: Hopper on, rows known and addressable by int32 coordinates, and (paged) pages
  // of whole tiles.
  CUtensorMap tk{}, tv{};
  const bool tensor =
      major >= 9 && a.rows > 0 && a.rows <= std::numeric_limits<std::int32_t>::max() &&
      (!paged || a.page_size % kTile == 0) &&
      tensor_map(tk, a.dtype, a.k, a.head_dim, a.rows, a.heads_kv, a.k_row, a.k_head) &&
      tensor_map(tv, a.dtype, a.v, a.head_dim_v, a.rows, a.heads_kv, a.v_row, a.v_head);
  const Kernel kernel = r == 8 ? kernel_for<T, NK, NV, 8>(paged, tensor)
                               : kernel_for<T, NK, NV, kRows>(paged, tensor);
  Result<std::size_t> smem = allow_shared_memory(reinterpret_cast<const void*>(kernel), device,
                                                 a.head_dim, a.head_dim_v, r, tensor, paged);
  if (!smem.is_ok()) {
    return Status(smem.status().code(),
                  "ulysses::kernels::split_kv_attention: " + smem.status().message());
  }
  kernel<<<grid, kThreads, *smem, static_cast<cudaStream_t>(stream)>>>(
      a, FastDiv(static_cast<std::uint32_t>(a.page_size)), tk, tv);
  ULYSSES_CUDA_CHECK_LAUNCH();
  return Status::ok();
}

// Template widths (register arrays sized to fit), as split_kv_layout.h maps them: 64, 128, 192 or
// 256 for K, 64, 128 or 256 for V.
template <typename T, int NK>
Status by_value_width(const SplitKvArgs& a, Stream stream) {
  switch (v_blocks(a.head_dim_v)) {
    case 4:
      return launch<T, NK, 4>(a, stream);
    case 8:
      return launch<T, NK, 8>(a, stream);
    default:
      return launch<T, NK, 16>(a, stream);
  }
}

template <typename T>
Status by_widths(const SplitKvArgs& a, Stream stream) {
  switch (k_blocks(a.head_dim)) {
    case 4:
      return by_value_width<T, 4>(a, stream);
    case 8:
      return by_value_width<T, 8>(a, stream);
    case 12:
      return by_value_width<T, 12>(a, stream);
    default:
      return by_value_width<T, 16>(a, stream);
  }
}

}  // namespace

Status cuda::split_kv_attention(const SplitKvArgs& a, Stream stream) {
  if (const std::string why = split_kv_unsupported(a.dtype, a.head_dim, a.head_dim_v);
      !why.empty()) {
    return unsupported("ulysses::kernels::split_kv_attention: " + why);
  }
  if (a.slots == 0) return Status::ok();
  // (Blocks of 8 rows where those fit: at most twice these.)
  const std::int64_t row_blocks = (a.heads_q / a.heads_kv * a.tokens + kRows - 1) / kRows;
  if (static_cast<std::int64_t>(a.slots) * a.heads_kv * row_blocks * 2 >
      std::numeric_limits<std::int32_t>::max()) {
    return unsupported(detail::str_cat("ulysses::kernels::split_kv_attention: ", a.slots,
                                       " slots x ", a.heads_kv, " KV heads x ", row_blocks,
                                       " blocks of 16 query rows need more than 2^31 - 1 CTAs"));
  }
  if (a.dtype == DType::kFloat16) return by_widths<__half>(a, stream);
  return by_widths<__nv_bfloat16>(a, stream);
}

namespace {
// One warp per sequence: its lanes share the sequence's open pieces and unused slots.
__global__ void decode_slot_table_kernel(DecodeSlotTableArgs a) {
  const int thread = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  const int b = thread / 32;
  if (b < a.batch) write_decode_slots(a, b, thread % 32, 32);
}
}  // namespace

Status cuda::decode_slot_table(const DecodeSlotTableArgs& a, Stream stream) {
  if (a.batch == 0) return Status::ok();
  constexpr int kSequencesPerBlock = 4;
  decode_slot_table_kernel<<<(a.batch + kSequencesPerBlock - 1) / kSequencesPerBlock,
                             32 * kSequencesPerBlock, 0, static_cast<cudaStream_t>(stream)>>>(a);
  ULYSSES_CUDA_CHECK_LAUNCH();
  return Status::ok();
}

std::int64_t split_kv_auto_keys(int device) {
  int khz = 0, bits = 0;
  if (cudaDeviceGetAttribute(&khz, cudaDevAttrMemoryClockRate, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&bits, cudaDevAttrGlobalMemoryBusWidth, device) != cudaSuccess) {
    cudaGetLastError();  // unknown: the rule's default, not an error of the plan
    return split_kv_auto_keys_for(0);
  }
  // Two transfers per clock (DDR / HBM).
  return split_kv_auto_keys_for(2.0 * khz * 1e3 * bits / 8);
}

std::string split_kv_device_unsupported(int head_dim, int head_dim_v, int device) {
  Result<std::size_t> bytes = shared_memory_on(device, head_dim, head_dim_v, kRows, false, false);
  return bytes.is_ok() ? std::string{} : bytes.status().message();
}

}  // namespace ulysses::kernels
