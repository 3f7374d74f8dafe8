// CUDA implementations of the layout operations (see layout.h).
//
// Legend: p peer, s token within a shard (Sl per peer), b batch, c channel of a message row, h
// head, d element of head_dim. Rows (one head_dim vector) are moved in the widest aligned vector
// that divides them (16 bytes when D * sizeof(dtype) % 16 == 0 and pointers/strides allow);
// pack/unpack stream contiguous segments of rows (move_segments below), consecutive lanes on
// consecutive vectors, so both sides are coalesced. Kernels are framework-free: raw pointers,
// strides in elements, a stream.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "common/cuda_check.h"
#include "kernels/layout.h"

namespace ulysses::kernels::cuda {
namespace {

struct HeadMap {
  int begin[kMaxPeers];
};

// Geometry shared by pack and unpack: act[b][s][head][:] <-> msg[p][s][b][c][:]. The work is cut
// into segments, one per (p, s, b) and, unless the activation's heads are dense, per head: a
// segment is contiguous on both sides (`seg_vecs` vectors), so its address is computed once and a
// group of `lanes` threads streams it.
struct SegGeometry {
  std::int64_t peers, seq, batch, head_groups;  // segment space: p, s, b, head group
  std::int64_t act_sb, act_ss, act_sh;          // activation strides (in vectors) of b, s, head
  std::int64_t msg_row_vecs, c_begin_vecs;      // a message row (p, s, b); its first head's start
  std::int64_t vecs_per_row, seg_vecs;          // one head's row; one segment
};

constexpr int kUnroll = 4;  // vectors in flight per thread

// Moves segments [first, segments) in steps of `stride` (a group of kLanes lanes per segment):
// the body of both kernels below. `begin[p]`: peer p's first head.
// Index is the type of the segment decomposition: 32-bit whenever the segment count allows (the
// divisions dominated the old per-vector 64-bit decomposition, which ran at ~0.7 of copy speed).
template <typename Vec, bool kPack, typename Index, int kLanes>
__device__ __forceinline__ void move_range(char* act, char* msg, const SegGeometry& g,
                                           const int* begin, Index first, Index stride) {
  const auto segments = static_cast<Index>(g.peers * g.seq * g.batch * g.head_groups);
  const int lane = static_cast<int>(threadIdx.x % kLanes);
  const auto seg_vecs = static_cast<int>(g.seg_vecs);
  auto* act_v = reinterpret_cast<Vec*>(act);
  auto* msg_v = reinterpret_cast<Vec*>(msg);
  for (Index seg = first; seg < segments; seg += stride) {
    Index r = seg;
    const Index h = r % static_cast<Index>(g.head_groups);
    r /= static_cast<Index>(g.head_groups);
    const Index b = r % static_cast<Index>(g.batch);
    r /= static_cast<Index>(g.batch);
    const Index s = r % static_cast<Index>(g.seq);
    const Index p = r / static_cast<Index>(g.seq);
    const std::int64_t head = begin[p] + static_cast<std::int64_t>(h);
    Vec* a = act_v + (static_cast<std::int64_t>(b) * g.act_sb +
                      static_cast<std::int64_t>(s) * g.act_ss + head * g.act_sh);
    Vec* m = msg_v + (((static_cast<std::int64_t>(p) * g.seq + s) * g.batch + b) * g.msg_row_vecs +
                      g.c_begin_vecs + static_cast<std::int64_t>(h) * g.vecs_per_row);
    Vec* src = kPack ? a : m;
    Vec* dst = kPack ? m : a;
    for (int v = lane; v < seg_vecs; v += kUnroll * kLanes) {
      Vec x[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (v + u * kLanes < seg_vecs) x[u] = src[v + u * kLanes];
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (v + u * kLanes < seg_vecs) dst[v + u * kLanes] = x[u];
      }
    }
  }
}

template <typename Vec, bool kPack, typename Index, int kLanes>
__global__ void move_segments(char* act, char* msg, const __grid_constant__ SegGeometry g,
                              const __grid_constant__ HeadMap map) {
  const auto groups = static_cast<Index>(blockDim.x / kLanes);
  move_range<Vec, kPack, Index, kLanes>(
      act, msg, g, map.begin, static_cast<Index>(blockIdx.x * groups + threadIdx.x / kLanes),
      static_cast<Index>(gridDim.x) * groups);
}

// A batch of moves (move_heads): move j takes blocks [first_block, first_block + blocks).
struct BatchMove {
  char* act;
  char* msg;
  SegGeometry g;
  int begin[kMaxBatchPeers];
  int first_block, blocks;
};
struct Batch {
  BatchMove move[kMaxBatchMoves];
  int n;
};

template <typename Vec, bool kPack, int kLanes>
__global__ void move_batch(const __grid_constant__ Batch batch) {
  int j = 0;
  while (j + 1 < batch.n && static_cast<int>(blockIdx.x) >= batch.move[j + 1].first_block) ++j;
  const BatchMove& mv = batch.move[j];
  const auto groups = static_cast<std::uint32_t>(blockDim.x / kLanes);
  const auto block = static_cast<std::uint32_t>(blockIdx.x) - mv.first_block;
  move_range<Vec, kPack, std::uint32_t, kLanes>(mv.act, mv.msg, mv.g, mv.begin,
                                                block * groups + threadIdx.x / kLanes,
                                                static_cast<std::uint32_t>(mv.blocks) * groups);
}

// Widest vector (bytes) dividing the row, the base pointers and every stride in bytes.
int vector_bytes(std::int64_t row_bytes, const void* a, const void* b,
                 std::initializer_list<std::int64_t> stride_bytes) {
  for (int w : {16, 8, 4, 2, 1}) {
    bool ok = row_bytes % w == 0 && reinterpret_cast<std::uintptr_t>(a) % w == 0 &&
              reinterpret_cast<std::uintptr_t>(b) % w == 0;
    for (std::int64_t s : stride_bytes) ok = ok && s % w == 0;
    if (ok) return w;
  }
  return 1;
}

int grid_for(std::int64_t work, int threads) {
  const std::int64_t blocks = (work + threads - 1) / threads;
  return static_cast<int>(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8);
}

Status check_map(std::span<const int> head_begin, HeadMap& map) {
  if (head_begin.size() > static_cast<std::size_t>(kMaxPeers)) {
    return unsupported(detail::str_cat("ulysses: device layout kernels take at most ", kMaxPeers,
                                       " peers (got ", head_begin.size(), ")"));
  }
  for (std::size_t i = 0; i < head_begin.size(); ++i) map.begin[i] = head_begin[i];
  return Status::ok();
}

// One move's launch geometry: the segments, their vector width and lanes per segment.
struct Planned {
  SegGeometry g;
  char* act;
  char* msg;
  int vector_bytes, lanes;
  std::int64_t segments;  // 0: nothing to move
};

Status plan_move(const TensorView& act, std::span<const int> head_begin, int heads,
                 const MessageLayout& msg, int c_begin, Planned& out) {
  // A head of act spans act.size(3) / msg.head_dim channels (see MessageLayout).
  if (act.ndim != 4 || act.dtype != msg.dtype || msg.head_dim < 1 ||
      act.size(3) % msg.head_dim != 0 || (act.size(3) > 1 && act.stride(3) != 1) ||
      static_cast<int>(head_begin.size()) != msg.peers ||
      c_begin + heads * (act.size(3) / msg.head_dim) > msg.channels) {
    return internal_error("ulysses::kernels::cuda: activation does not fit the message layout");
  }
  const auto e = static_cast<std::int64_t>(dtype_size(act.dtype));
  const std::int64_t row_bytes = act.size(3) * e, unit_bytes = msg.head_dim * e;
  const int w = vector_bytes(row_bytes, act.data, msg.data,
                             {act.stride(0) * e, act.stride(1) * e, act.stride(2) * e, unit_bytes});
  const std::int64_t vw = w / e > 0 ? w / e : 1;  // elements per vector
  const std::int64_t vecs_per_row = row_bytes / w;
  // Dense heads (each head's row follows the previous one's) make a segment of all `heads` rows.
  const bool dense = heads == 1 || act.stride(2) * e == row_bytes;
  out.g = {msg.peers,
           msg.seq_per_peer,
           msg.batch,
           dense ? 1 : heads,
           act.stride(0) / vw,
           act.stride(1) / vw,
           act.stride(2) / vw,
           msg.channels * unit_bytes / w,
           c_begin * unit_bytes / w,
           vecs_per_row,
           dense ? heads * vecs_per_row : vecs_per_row};
  out.act = static_cast<char*>(act.data);
  out.msg = static_cast<char*>(msg.data);
  out.vector_bytes = w;
  out.segments =
      out.g.seg_vecs == 0 ? 0 : out.g.peers * out.g.seq * out.g.batch * out.g.head_groups;
  if (out.g.seg_vecs > std::numeric_limits<int>::max()) {
    return unsupported("ulysses::kernels::cuda: a pack segment exceeds 2^31 vectors");
  }
  // Lanes per segment: a warp for segments of a warp's width or more, else the smallest power of
  // two that covers one (so short rows do not idle most of a warp).
  out.lanes = out.g.seg_vecs >= 32 ? 32 : out.g.seg_vecs > 8 ? 16 : 8;
  return Status::ok();
}

constexpr int kMoveThreads = 256;

// Calls go(static_cast<Vec*>(nullptr)) with Vec the vector type of `w` bytes; with_lanes()
// likewise calls go(std::integral_constant<int, kLanes>{}) with 32, 16 or 8 lanes.
template <typename Go>
void with_vector(int w, Go&& go) {
  switch (w) {
    case 16:
      go(static_cast<uint4*>(nullptr));
      break;
    case 8:
      go(static_cast<uint2*>(nullptr));
      break;
    case 4:
      go(static_cast<unsigned*>(nullptr));
      break;
    case 2:
      go(static_cast<unsigned short*>(nullptr));
      break;
    default:
      go(static_cast<unsigned char*>(nullptr));
  }
}
template <typename Go>
void with_lanes(int lanes, Go&& go) {
  if (lanes == 32) {
    go(std::integral_constant<int, 32>{});
  } else if (lanes == 16) {
    go(std::integral_constant<int, 16>{});
  } else {
    go(std::integral_constant<int, 8>{});
  }
}

template <bool kPack>
Status launch_move(const Planned& m, const HeadMap& map, Stream stream) {
  const std::int64_t groups_per_block = kMoveThreads / m.lanes;
  const int grid = static_cast<int>(
      std::min<std::int64_t>((m.segments + groups_per_block - 1) / groups_per_block, 65535 * 8));
  const bool narrow = m.segments < (std::int64_t{1} << 31);
  with_vector(m.vector_bytes, [&]<typename Vec>(Vec*) {
    with_lanes(m.lanes, [&]<int kLanes>(std::integral_constant<int, kLanes>) {
      if (narrow) {
        move_segments<Vec, kPack, std::uint32_t, kLanes>
            <<<grid, kMoveThreads, 0, stream>>>(m.act, m.msg, m.g, map);
      } else {
        move_segments<Vec, kPack, std::int64_t, kLanes>
            <<<grid, kMoveThreads, 0, stream>>>(m.act, m.msg, m.g, map);
      }
    });
  });
  ULYSSES_CUDA_CHECK_LAUNCH();
  return Status::ok();
}

template <bool kPack>
Status move(const TensorView& act, std::span<const int> head_begin, int heads,
            const MessageLayout& msg, int c_begin, Stream stream) {
  HeadMap map{};
  ULYSSES_RETURN_IF_ERROR(check_map(head_begin, map));
  Planned m{};
  ULYSSES_RETURN_IF_ERROR(plan_move(act, head_begin, heads, msg, c_begin, m));
  if (m.segments == 0) return Status::ok();
  return launch_move<kPack>(m, map, stream);
}

// Moves of one vector width waiting for a batched launch (move_all), with their geometry.
struct PendingBatch {
  const HeadMove* move[kMaxBatchMoves];
  Planned planned[kMaxBatchMoves];
  int n = 0;
};

// Moves every pending move of `p` (rows in `w`-byte vectors) in one launch and empties it. Each
// move gets blocks for its own segments (lanes: the narrowest any move asks for, so every segment
// is covered as in its own launch); the grid stays within one launch's limit.
template <bool kPack>
Status launch_batch(PendingBatch& p, int w, Stream stream) {
  if (p.n == 0) return Status::ok();
  Batch batch{};
  int lanes = 32;
  for (int i = 0; i < p.n; ++i) lanes = std::min(lanes, p.planned[i].lanes);
  const std::int64_t groups_per_block = kMoveThreads / lanes;
  const std::int64_t cap = 65535 * 8 / kMaxBatchMoves;
  int blocks = 0;
  for (int i = 0; i < p.n; ++i) {
    const Planned& m = p.planned[i];
    BatchMove& b = batch.move[batch.n++];
    b.act = m.act;
    b.msg = m.msg;
    b.g = m.g;
    const std::span<const int> begin = p.move[i]->head_begin;
    for (std::size_t q = 0; q < begin.size(); ++q) b.begin[q] = begin[q];
    b.first_block = blocks;
    b.blocks = static_cast<int>(
        std::min<std::int64_t>((m.segments + groups_per_block - 1) / groups_per_block, cap));
    blocks += b.blocks;
  }
  p.n = 0;
  with_vector(w, [&]<typename Vec>(Vec*) {
    with_lanes(lanes, [&]<int kLanes>(std::integral_constant<int, kLanes>) {
      move_batch<Vec, kPack, kLanes><<<blocks, kMoveThreads, 0, stream>>>(batch);
    });
  });
  ULYSSES_CUDA_CHECK_LAUNCH();
  return Status::ok();
}

// Every move of a batch (move_heads()), without allocating: each move is checked before any
// launch; then those a batched launch cannot take (more than kMaxBatchPeers peers, 2^31 segments
// or more) go out one launch each, the others in launches of up to kMaxBatchMoves moves whose rows
// share a vector width (a width's launch goes out when it is full, the rest at the end).
template <bool kPack>
Status move_all(std::span<const HeadMove> moves, Stream stream) {
  for (const HeadMove& mv : moves) {
    Planned m{};
    ULYSSES_RETURN_IF_ERROR(plan_move(mv.act, mv.head_begin, mv.heads, mv.msg, mv.c_begin, m));
    HeadMap map{};
    ULYSSES_RETURN_IF_ERROR(check_map(mv.head_begin, map));
  }
  constexpr int kWidths = 5;  // vectors of 1, 2, 4, 8, 16 bytes
  std::array<PendingBatch, kWidths> pending;
  const auto width_at = [](int w) { return std::countr_zero(static_cast<unsigned>(w)); };
  for (const HeadMove& mv : moves) {
    Planned m{};
    ULYSSES_RETURN_IF_ERROR(plan_move(mv.act, mv.head_begin, mv.heads, mv.msg, mv.c_begin, m));
    if (m.segments == 0) continue;
    if (m.segments >= (std::int64_t{1} << 31) ||
        mv.head_begin.size() > static_cast<std::size_t>(kMaxBatchPeers)) {
      HeadMap map{};
      ULYSSES_RETURN_IF_ERROR(check_map(mv.head_begin, map));
      ULYSSES_RETURN_IF_ERROR(launch_move<kPack>(m, map, stream));
      continue;
    }
    PendingBatch& p = pending[static_cast<std::size_t>(width_at(m.vector_bytes))];
    p.move[p.n] = &mv;
    p.planned[p.n] = m;
    if (++p.n == kMaxBatchMoves) {
      ULYSSES_RETURN_IF_ERROR(launch_batch<kPack>(p, m.vector_bytes, stream));
    }
  }
  for (int i = 0; i < kWidths; ++i) {
    ULYSSES_RETURN_IF_ERROR(
        launch_batch<kPack>(pending[static_cast<std::size_t>(i)], 1 << i, stream));
  }
  return Status::ok();
}

template <typename T>
__device__ T from_float(float x);
template <>
__device__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}

// act[b][s][g][d] = sum over p with map[p] == g (in p order) of msg[p][s][b][first + d] (fp32;
// `row` elements per (p, s, b)).
template <typename T>
__global__ void sum_replicas(const float* msg, T* act, std::int64_t peers, std::int64_t seq,
                             std::int64_t batch, std::int64_t groups, std::int64_t D,
                             std::int64_t row, std::int64_t first, std::int64_t sb, std::int64_t ss,
                             std::int64_t sh, HeadMap map) {
  const std::int64_t total = groups * seq * batch * D;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    std::int64_t r = i;
    const std::int64_t d = r % D;
    r /= D;
    const std::int64_t b = r % batch;
    r /= batch;
    const std::int64_t s = r % seq;
    const std::int64_t g = r / seq;
    float acc = 0.0f;
    for (std::int64_t p = 0; p < peers; ++p) {
      if (map.begin[p] != g) continue;
      acc += msg[((p * seq + s) * batch + b) * row + first + d];
    }
    act[b * sb + s * ss + g * sh + d] = from_float<T>(acc);
  }
}

__global__ void scatter_lse(const float* msg, float* lse, std::int64_t peers, std::int64_t seq,
                            std::int64_t batch, std::int64_t heads, std::int64_t lb,
                            std::int64_t lh, std::int64_t ls, HeadMap map) {
  const std::int64_t total = peers * seq * batch * heads;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    std::int64_t r = i;
    const std::int64_t h = r % heads;
    r /= heads;
    const std::int64_t b = r % batch;
    r /= batch;
    const std::int64_t s = r % seq;
    const std::int64_t p = r / seq;
    lse[b * lb + (map.begin[p] + h) * lh + s * ls] = msg[i];
  }
}

// --- FP8 rows (Payload::kFp8) ----------------------------------------------------------------

template <typename T>
__device__ float to_float(T x);
template <>
__device__ float to_float<float>(float x) {
  return x;
}
template <>
__device__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <>
__device__ float to_float<__half>(__half x) {
  return __half2float(x);
}

// fp8_row_exponent() on the device, from amax's bits: amax = 1.m 2^(E - 127) fits 448 2^k = 1.75
// 2^(k + 8) from k = E - 135 while 1.m <= 1.75 (mantissa field <= 0x600000), else from k = E - 134;
// subnormal amax clamps to -127, zero and non-finite give 0. Same k as the host's frexp.
__device__ int row_exponent(float amax) {
  const unsigned bits = __float_as_uint(amax);
  const int e = static_cast<int>((bits >> 23) & 0xFF);
  if (e == 0xFF || (bits & 0x7FFFFFFF) == 0) return 0;
  if (e == 0) return -127;
  const int k = (bits & 0x7FFFFF) <= 0x600000 ? e - 135 : e - 134;
  return max(-127, min(127, k));
}

// 2^n for n in [-127, 127], exactly (2^-127 is subnormal).
__device__ float exp2_exact(int n) {
  return n == -127 ? __uint_as_float(0x00400000u)
                   : __uint_as_float(static_cast<unsigned>(n + 127) << 23);
}

// The row space of an FP8 pack, (p, s, b, h), and where its rows go.
struct Fp8Geometry {
  std::int64_t peers, seq, batch, heads;  // heads: rows per (p, s, b), head_units per head
  std::int64_t act_sb, act_ss, act_sh;    // activation strides (elements) of b, s, head
  std::int64_t channels, c_begin, head_dim, peer_bytes;
  std::int64_t head_units;  // channels (rows of head_dim values) a head spans
};

// kV elements per vector (8: 16-byte loads of bf16/fp16 rows; 1: any row), kLanes threads per row.
// A row (<= 256 values) fits in the registers of its lanes: kMaxVecs vectors each.
template <int kV>
inline constexpr int kMaxVecs = kV == 1 ? 8 : 1;

// kV elements as they sit in memory: one 16-byte load for 8 bf16/fp16, else one element.
template <typename T, int kV>
struct RawVec {
  using type = std::conditional_t<kV == 8, uint4, T>;
  static_assert(kV == 1 || (kV == 8 && sizeof(T) == 2));
};
template <typename T, int kV>
__device__ float element(const typename RawVec<T, kV>::type& raw, int e) {
  return to_float(reinterpret_cast<const T*>(&raw)[e]);
}

// Rows each lane group moves per step: their loads are issued together, so that several are in
// flight per thread (one row per step ran at ~0.5 of copy speed).
constexpr int kFp8Rows = 4;

// One group of kLanes lanes per row, kFp8Rows rows per group and step: the row's largest |value|
// (max over the group by shuffles; NaN never wins, as on the host), its exponent k, codes =
// E4M3(x * 2^-k), exponent byte k + 127. Groups of a warp advance together so that every lane
// reaches every shuffle. Index: the row decomposition's type (32-bit whenever the rows allow).
template <typename T, int kV, int kLanes, typename Index>
__global__ void __launch_bounds__(256, 4)
    pack_rows_fp8(const T* act, unsigned char* msg, Fp8Geometry g, HeadMap map) {
  constexpr int kGroups = 32 / kLanes;
  constexpr auto kStep = static_cast<Index>(kGroups * kFp8Rows);  // rows per warp and step
  const auto rows = static_cast<Index>(g.peers * g.seq * g.batch * g.heads);
  const auto warp = static_cast<Index>((blockIdx.x * blockDim.x + threadIdx.x) / 32);
  const auto warps = static_cast<Index>(gridDim.x * blockDim.x / 32);
  const int lane = static_cast<int>(threadIdx.x % kLanes);
  const int group = static_cast<int>(threadIdx.x % 32) / kLanes;
  const int vecs = static_cast<int>(g.head_dim / kV);
  const std::int64_t rows_per_peer = g.seq * g.batch * g.channels;
  for (Index first = warp * kStep; first < rows; first += warps * kStep) {
    typename RawVec<T, kV>::type x[kFp8Rows][kMaxVecs<kV>];
    float amax[kFp8Rows];
    std::int64_t codes_at[kFp8Rows], exponent_at[kFp8Rows];  // byte offsets into msg
    bool valid[kFp8Rows];
#pragma unroll
    for (int j = 0; j < kFp8Rows; ++j) {
      const Index row = first + static_cast<Index>(group * kFp8Rows + j);
      valid[j] = row < rows;
      Index r = valid[j] ? row : Index{0};
      const Index h = r % static_cast<Index>(g.heads);  // head h / units, its channel h % units
      r /= static_cast<Index>(g.heads);
      const Index b = r % static_cast<Index>(g.batch);
      r /= static_cast<Index>(g.batch);
      const Index s = r % static_cast<Index>(g.seq);
      const Index p = r / static_cast<Index>(g.seq);
      const auto units = static_cast<Index>(g.head_units);
      const T* src = act + static_cast<std::int64_t>(b) * g.act_sb +
                     static_cast<std::int64_t>(s) * g.act_ss +
                     (map.begin[p] + static_cast<std::int64_t>(h / units)) * g.act_sh +
                     static_cast<std::int64_t>(h % units) * g.head_dim;
      const std::int64_t msg_row =
          (static_cast<std::int64_t>(s) * g.batch + b) * g.channels + g.c_begin + h;
      codes_at[j] = static_cast<std::int64_t>(p) * g.peer_bytes + msg_row * g.head_dim;
      exponent_at[j] =
          static_cast<std::int64_t>(p) * g.peer_bytes + rows_per_peer * g.head_dim + msg_row;
      amax[j] = 0.0f;
#pragma unroll
      for (int i = 0; i < kMaxVecs<kV>; ++i) {
        const int v = lane + i * kLanes;
        if (valid[j] && v < vecs) {
          x[j][i] = *reinterpret_cast<const typename RawVec<T, kV>::type*>(src + v * kV);
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kFp8Rows; ++j) {
#pragma unroll
      for (int i = 0; i < kMaxVecs<kV>; ++i) {
        const int v = lane + i * kLanes;
        if (valid[j] && v < vecs) {
#pragma unroll
          for (int e = 0; e < kV; ++e) amax[j] = fmaxf(amax[j], fabsf(element<T, kV>(x[j][i], e)));
        }
      }
#pragma unroll
      for (int offset = kLanes / 2; offset > 0; offset /= 2) {
        amax[j] = fmaxf(amax[j], __shfl_xor_sync(0xffffffffu, amax[j], offset, kLanes));
      }
    }
#pragma unroll
    for (int j = 0; j < kFp8Rows; ++j) {
      if (!valid[j]) continue;
      const int k = row_exponent(amax[j]);
      const float inv_scale = exp2_exact(-k);  // a power of two: x * inv_scale is exact
      unsigned char* codes = msg + codes_at[j];
#pragma unroll
      for (int i = 0; i < kMaxVecs<kV>; ++i) {
        const int v = lane + i * kLanes;
        if (v >= vecs) continue;
        if constexpr (kV == 8) {
          __nv_fp8x2_storage_t c[4];
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            c[e] = __nv_cvt_float2_to_fp8x2(
                make_float2(element<T, kV>(x[j][i], 2 * e) * inv_scale,
                            element<T, kV>(x[j][i], 2 * e + 1) * inv_scale),
                __NV_SATFINITE, __NV_E4M3);
          }
          *reinterpret_cast<uint2*>(codes + v * kV) = *reinterpret_cast<const uint2*>(c);
        } else {
          codes[v] = __nv_cvt_float_to_fp8(element<T, kV>(x[j][i], 0) * inv_scale, __NV_SATFINITE,
                                           __NV_E4M3);
        }
      }
      if (lane == 0) msg[exponent_at[j]] = static_cast<unsigned char>(k + 127);
    }
  }
}

// out[row][:] = code * 2^k for every row of every peer's message: one group of kLanes lanes per
// row, kFp8Rows rows per group and step.
template <typename T, int kV, int kLanes, typename Index>
__global__ void dequantize_rows(const unsigned char* msg, T* out, std::int64_t rows64,
                                std::int64_t rows_per_peer, std::int64_t head_dim,
                                std::int64_t peer_bytes) {
  const auto rows = static_cast<Index>(rows64);
  const auto rpp = static_cast<Index>(rows_per_peer);
  const auto groups = static_cast<Index>(gridDim.x * (blockDim.x / kLanes));
  const auto group = static_cast<Index>(blockIdx.x * (blockDim.x / kLanes) + threadIdx.x / kLanes);
  const int lane = static_cast<int>(threadIdx.x % kLanes);
  const int vecs = static_cast<int>(head_dim / kV);
  for (Index first = group * kFp8Rows; first < rows; first += groups * kFp8Rows) {
    unsigned char c[kFp8Rows][kMaxVecs<kV>][kV];
    float scale[kFp8Rows];
#pragma unroll
    for (int j = 0; j < kFp8Rows; ++j) {
      const Index row = first + static_cast<Index>(j);
      if (row >= rows) continue;
      const auto p = static_cast<std::int64_t>(row / rpp),
                 lr = static_cast<std::int64_t>(row % rpp);
      const unsigned char* peer = msg + p * peer_bytes;
      const unsigned char* codes = peer + lr * head_dim;
      scale[j] = exp2_exact(static_cast<int>(peer[rows_per_peer * head_dim + lr]) - 127);
#pragma unroll
      for (int i = 0; i < kMaxVecs<kV>; ++i) {
        const int v = lane + i * kLanes;
        if (v >= vecs) continue;
        if constexpr (kV == 8) {
          *reinterpret_cast<uint2*>(c[j][i]) = *reinterpret_cast<const uint2*>(codes + v * kV);
        } else {
          c[j][i][0] = codes[v];
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kFp8Rows; ++j) {
      const Index row = first + static_cast<Index>(j);
      if (row >= rows) continue;
      T* dst = out + static_cast<std::int64_t>(row) * head_dim;
#pragma unroll
      for (int i = 0; i < kMaxVecs<kV>; ++i) {
        const int v = lane + i * kLanes;
        if (v >= vecs) continue;
        T y[kV];
#pragma unroll
        for (int e = 0; e < kV; ++e) {
          __nv_fp8_e4m3 code;
          code.__x = c[j][i][e];
          y[e] = from_float<T>(static_cast<float>(code) * scale[j]);
        }
        if constexpr (kV == 8 && sizeof(T) == 2) {
          *reinterpret_cast<uint4*>(dst + v * kV) = *reinterpret_cast<const uint4*>(y);
        } else {
#pragma unroll
          for (int e = 0; e < kV; ++e) dst[v * kV + e] = y[e];
        }
      }
    }
  }
}

// Calls go.template operator()<kV, kLanes>() for rows of T: 16-byte vectors (kV = 8; a warp, or
// the smallest of 16 / 8 lanes that covers the row) when `wide` and T is 2 bytes, else single
// elements on a warp.
template <typename T, typename Go>
void for_row_shape(bool wide, std::int64_t head_dim, Go&& go) {
  if constexpr (sizeof(T) == 2) {
    if (wide) {
      const std::int64_t vecs = head_dim / 8;
      if (vecs > 16) {
        go.template operator()<8, 32>();
      } else if (vecs > 8) {
        go.template operator()<8, 16>();
      } else {
        go.template operator()<8, 8>();
      }
      return;
    }
  }
  go.template operator()<1, 32>();
}

// Blocks of kThreads for `rows` rows, kFp8Rows per group of `lanes`.
int fp8_grid(std::int64_t rows, int threads, int lanes) {
  const std::int64_t per_block = threads / lanes * kFp8Rows;
  return static_cast<int>(std::min<std::int64_t>((rows + per_block - 1) / per_block, 65535 * 8));
}

// Calls f(T*) with the activation dtype's device type (bf16, fp16, fp32).
template <typename F>
Status with_float_type(DType dtype, std::string_view api, F&& f) {
  switch (dtype) {
    case DType::kBFloat16:
      f(static_cast<__nv_bfloat16*>(nullptr));
      return Status::ok();
    case DType::kFloat16:
      f(static_cast<__half*>(nullptr));
      return Status::ok();
    case DType::kFloat32:
      f(static_cast<float*>(nullptr));
      return Status::ok();
    default:
      return unsupported(detail::str_cat("ulysses::kernels::cuda::", api, ": dtype ",
                                         dtype_name(dtype), " (expected bf16, fp16 or fp32)"));
  }
}

}  // namespace

Status pack_heads(const TensorView& act, std::span<const int> head_begin, int heads,
                  const MessageLayout& msg, int c_begin, Stream stream) {
  return move<true>(act, head_begin, heads, msg, c_begin, stream);
}

Status unpack_heads(const MessageLayout& msg, int c_begin, std::span<const int> head_begin,
                    int heads, const TensorView& act, Stream stream) {
  return move<false>(act, head_begin, heads, msg, c_begin, stream);
}

Status move_heads(bool pack, std::span<const HeadMove> moves, Stream stream) {
  return pack ? move_all<true>(moves, stream) : move_all<false>(moves, stream);
}

Status unpack_sum_replicas(const MessageLayout& msg, int c_begin, std::span<const int> head_begin,
                           const TensorView& act, Stream stream) {
  HeadMap map{};
  ULYSSES_RETURN_IF_ERROR(check_map(head_begin, map));
  if (msg.dtype != DType::kFloat32 || act.ndim != 4 || msg.head_dim < 1 ||
      act.size(3) % msg.head_dim != 0 || c_begin + act.size(3) / msg.head_dim > msg.channels) {
    return internal_error("ulysses::kernels::cuda::unpack_sum_replicas: geometry mismatch");
  }
  const std::int64_t work = act.size(2) * msg.seq_per_peer * msg.batch * act.size(3);
  if (work == 0) return Status::ok();
  const int grid = grid_for(work, 256);
  const auto* m = static_cast<const float*>(msg.data);
  auto args = [&](auto* out) {
    sum_replicas<<<grid, 256, 0, stream>>>(m, out, msg.peers, msg.seq_per_peer, msg.batch,
                                           act.size(2), act.size(3), msg.channels * msg.head_dim,
                                           c_begin * msg.head_dim, act.stride(0), act.stride(1),
                                           act.stride(2), map);
  };
  switch (act.dtype) {
    case DType::kFloat32:
      args(static_cast<float*>(act.data));
      break;
    case DType::kBFloat16:
      args(static_cast<__nv_bfloat16*>(act.data));
      break;
    case DType::kFloat16:
      args(static_cast<__half*>(act.data));
      break;
    default:
      return unsupported(detail::str_cat("ulysses: replicated KV gradients on a GPU in dtype ",
                                         dtype_name(act.dtype), " (expected fp32, bf16 or fp16)"));
  }
  ULYSSES_CUDA_CHECK_LAUNCH();
  return Status::ok();
}

Status unpack_lse(const MessageLayout& msg, std::span<const int> head_begin, const TensorView& lse,
                  Stream stream) {
  HeadMap map{};
  ULYSSES_RETURN_IF_ERROR(check_map(head_begin, map));
  if (lse.ndim != 3 || msg.dtype != DType::kFloat32 || lse.dtype != DType::kFloat32) {
    return internal_error("ulysses::kernels::cuda::unpack_lse: geometry mismatch");
  }
  const std::int64_t work = msg.peers * msg.seq_per_peer * msg.batch * msg.channels;
  if (work == 0) return Status::ok();
  scatter_lse<<<grid_for(work, 256), 256, 0, stream>>>(
      static_cast<const float*>(msg.data), static_cast<float*>(lse.data), msg.peers,
      msg.seq_per_peer, msg.batch, msg.channels, lse.stride(0), lse.stride(1), lse.stride(2), map);
  ULYSSES_CUDA_CHECK_LAUNCH();
  return Status::ok();
}

Status pack_heads_fp8(const TensorView& act, std::span<const int> head_begin, int heads,
                      const Fp8MessageLayout& msg, int c_begin, Stream stream) {
  HeadMap map{};
  ULYSSES_RETURN_IF_ERROR(check_map(head_begin, map));
  // A head spans act.size(3) / head_dim channels (rows), each scaled on its own.
  if (act.ndim != 4 || msg.head_dim < 1 || act.size(3) % msg.head_dim != 0 ||
      (act.size(3) > 1 && act.stride(3) != 1) || static_cast<int>(head_begin.size()) != msg.peers ||
      msg.head_dim > 256 || c_begin + heads * (act.size(3) / msg.head_dim) > msg.channels) {
    return internal_error("ulysses::kernels::cuda::pack_heads_fp8: geometry mismatch");
  }
  const std::int64_t units = act.size(3) / msg.head_dim;
  const Fp8Geometry g{msg.peers,
                      msg.seq_per_peer,
                      msg.batch,
                      heads * units,
                      act.stride(0),
                      act.stride(1),
                      act.stride(2),
                      msg.channels,
                      c_begin,
                      msg.head_dim,
                      static_cast<std::int64_t>(msg.peer_bytes()),
                      units};
  const std::int64_t rows = g.peers * g.seq * g.batch * g.heads;
  if (rows == 0 || g.head_dim == 0) return Status::ok();
  const auto e = static_cast<std::int64_t>(dtype_size(act.dtype));
  // 16-byte loads when rows, strides and the base allow (and the codes' 8-byte stores then do).
  const bool wide = e == 2 && vector_bytes(g.head_dim * e, act.data, act.data,
                                           {g.act_sb * e, g.act_ss * e, g.act_sh * e}) == 16;
  constexpr int kThreads = 256;
  auto* m = static_cast<unsigned char*>(msg.data);
  Status status = with_float_type(act.dtype, "pack_heads_fp8", [&]<typename T>(T*) {
    const auto* a = static_cast<const T*>(act.data);
    for_row_shape<T>(wide, g.head_dim, [&]<int kV, int kLanes>() {
      const int grid = fp8_grid(rows, kThreads, kLanes);
      if (rows < (std::int64_t{1} << 31)) {
        pack_rows_fp8<T, kV, kLanes, std::uint32_t><<<grid, kThreads, 0, stream>>>(a, m, g, map);
      } else {
        pack_rows_fp8<T, kV, kLanes, std::int64_t><<<grid, kThreads, 0, stream>>>(a, m, g, map);
      }
    });
  });
  ULYSSES_RETURN_IF_ERROR(status);
  ULYSSES_CUDA_CHECK_LAUNCH();
  return Status::ok();
}

Status dequantize_fp8(const Fp8MessageLayout& src, const MessageLayout& dst, Stream stream) {
  if (dst.peers != src.peers || dst.seq_per_peer != src.seq_per_peer || dst.batch != src.batch ||
      dst.channels != src.channels || dst.head_dim != src.head_dim) {
    return internal_error("ulysses::kernels::cuda::dequantize_fp8: geometry mismatch");
  }
  const std::int64_t rows_per_peer = src.rows_per_peer(), rows = src.peers * rows_per_peer;
  if (rows == 0 || src.head_dim == 0) return Status::ok();
  const auto e = static_cast<std::int64_t>(dtype_size(dst.dtype));
  const bool wide = e == 2 && src.head_dim % 8 == 0 &&
                    reinterpret_cast<std::uintptr_t>(dst.data) % 16 == 0 &&
                    reinterpret_cast<std::uintptr_t>(src.data) % 8 == 0;
  constexpr int kThreads = 256;
  const auto* m = static_cast<const unsigned char*>(src.data);
  const auto peer_bytes = static_cast<std::int64_t>(src.peer_bytes());
  Status status = with_float_type(dst.dtype, "dequantize_fp8", [&]<typename T>(T*) {
    auto* out = static_cast<T*>(dst.data);
    for_row_shape<T>(wide, src.head_dim, [&]<int kV, int kLanes>() {
      const int grid = fp8_grid(rows, kThreads, kLanes);
      if (rows < (std::int64_t{1} << 31)) {
        dequantize_rows<T, kV, kLanes, std::uint32_t>
            <<<grid, kThreads, 0, stream>>>(m, out, rows, rows_per_peer, src.head_dim, peer_bytes);
      } else {
        dequantize_rows<T, kV, kLanes, std::int64_t>
            <<<grid, kThreads, 0, stream>>>(m, out, rows, rows_per_peer, src.head_dim, peer_bytes);
      }
    });
  });
  ULYSSES_RETURN_IF_ERROR(status);
  ULYSSES_CUDA_CHECK_LAUNCH();
  return Status::ok();
}

}  // namespace ulysses::kernels::cuda
