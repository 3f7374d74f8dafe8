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
#include <cuda_runtime.h>

#include <algorithm>
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
  std::int64_t msg_channels, c_begin;
  std::int64_t vecs_per_row, seg_vecs;
};

constexpr int kUnroll = 4;  // vectors in flight per thread

// Index is the type of the segment decomposition: 32-bit whenever the segment count allows (the
// divisions dominated the old per-vector 64-bit decomposition, which ran at ~0.7 of copy speed).
template <typename Vec, bool kPack, typename Index, int kLanes>
__global__ void move_segments(char* act, char* msg, SegGeometry g, HeadMap map) {
  const auto segments = static_cast<Index>(g.peers * g.seq * g.batch * g.head_groups);
  const auto groups_in_grid = static_cast<Index>(gridDim.x * (blockDim.x / kLanes));
  const int lane = static_cast<int>(threadIdx.x % kLanes);
  const auto seg_vecs = static_cast<int>(g.seg_vecs);
  auto* act_v = reinterpret_cast<Vec*>(act);
  auto* msg_v = reinterpret_cast<Vec*>(msg);
  for (Index seg = static_cast<Index>(blockIdx.x * (blockDim.x / kLanes) + threadIdx.x / kLanes);
       seg < segments; seg += groups_in_grid) {
    Index r = seg;
    const Index h = r % static_cast<Index>(g.head_groups);
    r /= static_cast<Index>(g.head_groups);
    const Index b = r % static_cast<Index>(g.batch);
    r /= static_cast<Index>(g.batch);
    const Index s = r % static_cast<Index>(g.seq);
    const Index p = r / static_cast<Index>(g.seq);
    const std::int64_t head = map.begin[p] + static_cast<std::int64_t>(h);
    Vec* a = act_v + (static_cast<std::int64_t>(b) * g.act_sb +
                      static_cast<std::int64_t>(s) * g.act_ss + head * g.act_sh);
    Vec* m = msg_v + ((((static_cast<std::int64_t>(p) * g.seq + s) * g.batch + b) * g.msg_channels +
                       g.c_begin + h) *
                      g.vecs_per_row);
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

template <bool kPack>
Status move(const TensorView& act, std::span<const int> head_begin, int heads,
            const MessageLayout& msg, int c_begin, Stream stream) {
  HeadMap map{};
  ULYSSES_RETURN_IF_ERROR(check_map(head_begin, map));
  if (act.ndim != 4 || act.dtype != msg.dtype || act.size(3) != msg.head_dim ||
      (act.size(3) > 1 && act.stride(3) != 1) || static_cast<int>(head_begin.size()) != msg.peers) {
    return internal_error("ulysses::kernels::cuda: activation does not fit the message layout");
  }
  const auto e = static_cast<std::int64_t>(dtype_size(act.dtype));
  const std::int64_t row_bytes = msg.head_dim * e;
  const int w = vector_bytes(row_bytes, act.data, msg.data,
                             {act.stride(0) * e, act.stride(1) * e, act.stride(2) * e});
  const std::int64_t vw = w / e > 0 ? w / e : 1;  // elements per vector
  const std::int64_t vecs_per_row = row_bytes / w;
  // Dense heads (each head's row follows the previous one's) make a segment of all `heads` rows.
  const bool dense = heads == 1 || act.stride(2) * e == row_bytes;
  SegGeometry g{msg.peers,
                msg.seq_per_peer,
                msg.batch,
                dense ? 1 : heads,
                act.stride(0) / vw,
                act.stride(1) / vw,
                act.stride(2) / vw,
                msg.channels,
                c_begin,
                vecs_per_row,
                dense ? heads * vecs_per_row : vecs_per_row};
  const std::int64_t segments = g.peers * g.seq * g.batch * g.head_groups;
  if (segments == 0 || g.seg_vecs == 0) return Status::ok();
  if (g.seg_vecs > std::numeric_limits<int>::max()) {
    return unsupported("ulysses::kernels::cuda: a pack segment exceeds 2^31 vectors");
  }
  auto* a = static_cast<char*>(act.data);
  auto* m = static_cast<char*>(msg.data);
  // Lanes per segment: a warp for segments of a warp's width or more, else the smallest power of
  // two that covers one (so short rows do not idle most of a warp).
  const int lanes = g.seg_vecs >= 32 ? 32 : g.seg_vecs > 8 ? 16 : 8;
  constexpr int kThreads = 256;
  const std::int64_t groups_per_block = kThreads / lanes;
  const int grid = static_cast<int>(
      std::min<std::int64_t>((segments + groups_per_block - 1) / groups_per_block, 65535 * 8));
  const bool narrow = segments < (std::int64_t{1} << 31);
  auto launch = [&]<typename Vec>(Vec*) {
    auto go = [&]<int kLanes>(std::integral_constant<int, kLanes>) {
      if (narrow) {
        move_segments<Vec, kPack, std::uint32_t, kLanes>
            <<<grid, kThreads, 0, stream>>>(a, m, g, map);
      } else {
        move_segments<Vec, kPack, std::int64_t, kLanes>
            <<<grid, kThreads, 0, stream>>>(a, m, g, map);
      }
    };
    if (lanes == 32) {
      go(std::integral_constant<int, 32>{});
    } else if (lanes == 16) {
      go(std::integral_constant<int, 16>{});
    } else {
      go(std::integral_constant<int, 8>{});
    }
  };
  switch (w) {
    case 16:
      launch(static_cast<uint4*>(nullptr));
      break;
    case 8:
      launch(static_cast<uint2*>(nullptr));
      break;
    case 4:
      launch(static_cast<unsigned*>(nullptr));
      break;
    case 2:
      launch(static_cast<unsigned short*>(nullptr));
      break;
    default:
      launch(static_cast<unsigned char*>(nullptr));
  }
  ULYSSES_CUDA_CHECK_LAUNCH();
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

// act[b][s][g][d] = sum over p with map[p] == g (in p order) of msg[p][s][b][c_begin][d] (fp32).
template <typename T>
__global__ void sum_replicas(const float* msg, T* act, std::int64_t peers, std::int64_t seq,
                             std::int64_t batch, std::int64_t groups, std::int64_t D,
                             std::int64_t channels, std::int64_t c_begin, std::int64_t sb,
                             std::int64_t ss, std::int64_t sh, HeadMap map) {
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
      acc += msg[(((p * seq + s) * batch + b) * channels + c_begin) * D + d];
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

}  // namespace

Status pack_heads(const TensorView& act, std::span<const int> head_begin, int heads,
                  const MessageLayout& msg, int c_begin, Stream stream) {
  return move<true>(act, head_begin, heads, msg, c_begin, stream);
}

Status unpack_heads(const MessageLayout& msg, int c_begin, std::span<const int> head_begin,
                    int heads, const TensorView& act, Stream stream) {
  return move<false>(act, head_begin, heads, msg, c_begin, stream);
}

Status unpack_sum_replicas(const MessageLayout& msg, int c_begin, std::span<const int> head_begin,
                           const TensorView& act, Stream stream) {
  HeadMap map{};
  ULYSSES_RETURN_IF_ERROR(check_map(head_begin, map));
  if (msg.dtype != DType::kFloat32 || act.ndim != 4 || act.size(3) != msg.head_dim) {
    return internal_error("ulysses::kernels::cuda::unpack_sum_replicas: geometry mismatch");
  }
  const std::int64_t work = act.size(2) * msg.seq_per_peer * msg.batch * msg.head_dim;
  if (work == 0) return Status::ok();
  const int grid = grid_for(work, 256);
  const auto* m = static_cast<const float*>(msg.data);
  auto args = [&](auto* out) {
    sum_replicas<<<grid, 256, 0, stream>>>(m, out, msg.peers, msg.seq_per_peer, msg.batch,
                                           act.size(2), msg.head_dim, msg.channels, c_begin,
                                           act.stride(0), act.stride(1), act.stride(2), map);
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
      return unsupported(detail::str_cat("ulysses: replicated KV gradients in ",
                                         dtype_name(act.dtype), " (got ", dtype_name(act.dtype),
                                         ", expected fp32, bf16 or fp16)"));
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

}  // namespace ulysses::kernels::cuda
