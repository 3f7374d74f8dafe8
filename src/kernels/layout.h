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
// An activation view is [B, Sl, H, Da] with any strides (head_dim contiguous). `head_begin[p]` is
// the first head of the activation that belongs to peer p's channels from c_begin on. A channel is
// D = MessageLayout::head_dim elements, and a head spans Da / D of them (Da a multiple of D): one,
// except where a row mixes heads of two widths (Q|K|V rows with head_dim_v != head_dim, whose
// channels are then gcd(head_dim, head_dim_v) wide).
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

/// msg[p][s][b][c_begin + h k .. + k][:] = act[b][s][head_begin[p] + h][:] for h < heads, every p
/// (k = Da / D channels per head).
Status pack_heads(const TensorView& act, std::span<const int> head_begin, int heads,
                  const MessageLayout& msg, int c_begin, Stream stream);

/// act[b][s][head_begin[p] + h][:] = msg[p][s][b][c_begin + h k .. + k][:] for h < heads, every p.
/// Requires the destination heads of different peers to be disjoint.
Status unpack_heads(const MessageLayout& msg, int c_begin, std::span<const int> head_begin,
                    int heads, const TensorView& act, Stream stream);

/// One pack_heads or unpack_heads call of a batch (move_heads): its arguments.
struct HeadMove {
  TensorView act;
  std::span<const int> head_begin;
  int heads = 0;
  MessageLayout msg;
  int c_begin = 0;
};

/// pack_heads (pack) or unpack_heads for every move, with the same results as one call each. On
/// a GPU the moves go out in as few launches as they allow: one per kMaxBatchMoves moves whose rows
/// move in vectors of one width (each over kMaxBatchPeers peers or fewer; a move over more goes
/// out alone). The moves run concurrently, so none may write what another reads or writes. At 8k
/// tokens a pack of one head chunk's Q, K and V is ~1-4 us of bytes per tensor, as short as a
/// launch's own cost, so one launch instead of three (and one per peer run) shortens the critical
/// path.
Status move_heads(bool pack, std::span<const HeadMove> moves, Stream stream);

/// Most moves and peers a batched launch takes (move_heads).
inline constexpr int kMaxBatchMoves = 16;
inline constexpr int kMaxBatchPeers = 32;

/// Sums replicated partials: act[b][s][g][:] = sum over p with head_begin[p] == g (in p order,
/// fp32) of msg[p][s][b][c_begin .. + k][:] for the one head at c_begin; msg is fp32 (on the host
/// also fp64, summed in fp64: fp64 plans' partials), act any float dtype.
Status unpack_sum_replicas(const MessageLayout& msg, int c_begin, std::span<const int> head_begin,
                           const TensorView& act, Stream stream);

/// LSE: msg[p][s][b][h] (fp32, C = heads) -> lse[b][head_begin[p] + h][s] for the [B, H, Sl] view.
Status unpack_lse(const MessageLayout& msg, std::span<const int> head_begin, const TensorView& lse,
                  Stream stream);

/// A message of FP8 rows (Payload::kFp8): msg[p][s][b][c][:] as E4M3 codes, each row with one
/// power-of-two scale 2^(e - 127) kept as its biased exponent e (one byte, E8M0). Peer p's message
/// starts at data + p * peer_bytes(): the codes [Sl][B][C][D], then the exponents [Sl][B][C],
/// padded to 16 bytes, so it is contiguous and an exchange moves it whole.
struct Fp8MessageLayout {
  void* data = nullptr;
  int peers = 1;
  std::int64_t seq_per_peer = 0;  // Sl
  std::int64_t batch = 1;
  int channels = 0;  // C
  std::int64_t head_dim = 0;

  std::int64_t rows_per_peer() const { return seq_per_peer * batch * channels; }
  std::size_t peer_bytes() const {
    const auto bytes = static_cast<std::size_t>(rows_per_peer() * (head_dim + 1));
    return (bytes + 15) / 16 * 16;
  }
};

/// The scale exponent k of a row whose largest |value| is `amax`: the smallest k in [-127, 127]
/// with amax <= 448 * 2^k (0 for a row of zeros or a non-finite amax). Host and device agree.
int fp8_row_exponent(double amax);

/// pack_heads into FP8 rows: the same row mapping (a head of Da values spans Da / head_dim rows);
/// each row is divided by its 2^k and rounded to E4M3 (nearest even, saturating).
Status pack_heads_fp8(const TensorView& act, std::span<const int> head_begin, int heads,
                      const Fp8MessageLayout& msg, int c_begin, Stream stream);

/// Every row of `src` back to dst's dtype, code * 2^k rounded once: dst[p][s][b][c][:] with the
/// same geometry (dst.channels == src.channels). On `device`.
Status dequantize_fp8(const Fp8MessageLayout& src, const MessageLayout& dst, Device device,
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
Status move_heads(bool pack, std::span<const HeadMove> moves);
Status pack_heads_fp8(const TensorView& act, std::span<const int> head_begin, int heads,
                      const Fp8MessageLayout& msg, int c_begin);
Status dequantize_fp8(const Fp8MessageLayout& src, const MessageLayout& dst);
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
Status move_heads(bool pack, std::span<const HeadMove> moves, Stream stream);
Status pack_heads_fp8(const TensorView& act, std::span<const int> head_begin, int heads,
                      const Fp8MessageLayout& msg, int c_begin, Stream stream);
Status dequantize_fp8(const Fp8MessageLayout& src, const MessageLayout& dst, Stream stream);
}  // namespace cuda

}  // namespace ulysses::kernels
