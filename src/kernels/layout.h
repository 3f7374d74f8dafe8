// ulysses: the data movement around the all-to-alls (pack before, unpack after).
//
// Legend: P ranks, Sl = S / P tokens per shard, B batch, C channels (heads) per row of a message, D
// head_dim. A message buffer for the sequence->heads exchange is laid out
//
//     msg[p][s][b][c][d]      p: peer (destination when sending, source when receiving)
//
// so the receive side, read as [S = P * Sl][B][C][D], is the full sequence in plain token order:
// the local kernel reads Q, K and V from it through strides, with no further copy.
//
// An activation view is [B, Sl, H, D] with any strides (head_dim contiguous). `head_begin[p]` is
// the first head of the activation that belongs to peer p's channels [c_begin, c_begin + heads).
//
// Host functions here run on the calling thread; CUDA versions of the same operations take a
// stream.
#pragma once

#include <cstdint>
#include <span>

#include "ulysses/status.h"
#include "ulysses/types.h"

namespace ulysses::kernels {

/// The message buffer geometry: msg[p][s][b][c][d] with `channels` = C (elements of `dtype`).
struct MessageLayout {
  void* data = nullptr;
  DType dtype = DType::kBFloat16;
  int peers = 1;
  std::int64_t seq_per_peer = 0;  // Sl
  std::int64_t batch = 1;
  int channels = 0;  // C
  std::int64_t head_dim = 0;
};

/// msg[p][s][b][c_begin + h][:] = act[b][s][head_begin[p] + h][:] for h < heads, every p.
Status pack_heads(const TensorView& act, std::span<const int> head_begin, int heads,
                  const MessageLayout& msg, int c_begin, Stream stream);

/// act[b][s][head_begin[p] + h][:] = msg[p][s][b][c_begin + h][:] for h < heads, every p.
/// Requires the destination heads of different peers to be disjoint.
Status unpack_heads(const MessageLayout& msg, int c_begin, std::span<const int> head_begin,
                    int heads, const TensorView& act, Stream stream);

/// Sums replicated partials: act[b][s][g][:] = sum over p with head_begin[p] == g (in p order,
/// fp32) of msg[p][s][b][c_begin][:] for the single channel c_begin; msg is fp32, act any float
/// dtype.
Status unpack_sum_replicas(const MessageLayout& msg, int c_begin, std::span<const int> head_begin,
                           const TensorView& act, Stream stream);

/// LSE: msg[p][s][b][h] (fp32, C = heads) -> lse[b][head_begin[p] + h][s] for the [B, H, Sl] view.
Status unpack_lse(const MessageLayout& msg, std::span<const int> head_begin, const TensorView& lse,
                  Stream stream);

/// Largest peer count the device kernels take (head maps travel as kernel parameters).
inline constexpr int kMaxPeers = 256;

// Backend implementations (same contracts; no device dispatch).
namespace host {
Status pack_heads(const TensorView& act, std::span<const int> head_begin, int heads,
                  const MessageLayout& msg, int c_begin);
Status unpack_heads(const MessageLayout& msg, int c_begin, std::span<const int> head_begin,
                    int heads, const TensorView& act);
Status unpack_sum_replicas(const MessageLayout& msg, int c_begin, std::span<const int> head_begin,
                           const TensorView& act);
Status unpack_lse(const MessageLayout& msg, std::span<const int> head_begin, const TensorView& lse);
}  // namespace host

namespace cuda {
Status pack_heads(const TensorView& act, std::span<const int> head_begin, int heads,
                  const MessageLayout& msg, int c_begin, Stream stream);
Status unpack_heads(const MessageLayout& msg, int c_begin, std::span<const int> head_begin,
                    int heads, const TensorView& act, Stream stream);
Status unpack_sum_replicas(const MessageLayout& msg, int c_begin, std::span<const int> head_begin,
                           const TensorView& act, Stream stream);
Status unpack_lse(const MessageLayout& msg, std::span<const int> head_begin, const TensorView& lse,
                  Stream stream);
}  // namespace cuda

}  // namespace ulysses::kernels
