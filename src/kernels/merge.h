// ulysses: the arithmetic around blockwise attention (ring attention): merging normalised partial
// outputs by their log-sum-exp, folding attention sinks in once, summing fp32 gradient partials,
// converting between dtypes.
//
// Views: activations [B, S, H, D] and LSE [B, H, S] (natural log, fp32 or fp64), any strides.
// Accumulators are fp32 (fp64 when the data is fp64, on the host). A row whose LSE is -inf has
// seen no key: merges leave it at O = 0, LSE = -inf, never NaN.
//
// Host functions run on the calling thread in FP64; CUDA versions of the same operations take a
// stream. Dispatch is by the device of the first view.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "kernels/packed_pairs.h"
#include "ulysses/status.h"
#include "ulysses/types.h"

namespace ulysses::kernels {

/// o_acc = 0, lse_acc = -inf.
Status reset_partial(const TensorView& o_acc, const TensorView& lse_acc, Stream stream);

/// Merges one block's normalised output into the accumulators, row by row:
///   m = log(exp(lse_acc) + exp(lse_blk)),
///   o_acc = o_acc exp(lse_acc - m) + o_blk exp(lse_blk - m),  lse_acc = m.
Status merge_partial(const TensorView& o_acc, const TensorView& lse_acc, const TensorView& o_blk,
                     const TensorView& lse_blk, Stream stream);

/// The final output: with sinks (fp32 [num_heads_q], indexed head_offset + h; empty view: none)
///   lse = log(exp(lse_acc) + exp(sink)),  o = o_acc exp(lse_acc - lse),
/// else o = o_acc, lse = lse_acc. A row with lse_acc = -inf saw no key: it is padding (every real
/// row sees at least its own key) and stays O = 0, LSE = -inf, sinks or not. o in any float dtype;
/// lse may be lse_acc itself.
Status finalize_partial(const TensorView& o_acc, const TensorView& lse_acc, const TensorView& sinks,
                        int head_offset, const TensorView& o, const TensorView& lse, Stream stream);

/// Merges `parts` normalised partial results at once (decoding: pieces of a cache, then ranks):
/// part i is o_parts shifted by i * o_part_stride elements and lse_parts by i * lse_part_stride,
/// each shaped like o / lse. Row by row, over the parts whose LSE is not -inf,
///   m = log(sum exp(lse_i)),  o = sum o_i exp(lse_i - m),  lse = m,
/// then the sinks folded in as in finalize_partial. A row no part saw (or parts == 0) gets O = 0
/// and LSE = -inf. o in any float dtype; lse may be an empty view.
Status merge_stacked(const TensorView& o_parts, const TensorView& lse_parts, int parts,
                     std::int64_t o_part_stride, std::int64_t lse_part_stride,
                     const TensorView& sinks, int head_offset, const TensorView& o,
                     const TensorView& lse, Stream stream);

/// dst[i] = values[i]: a few host integers written in stream order (device: through kernel
/// arguments, so the host span may be reused at once and the write can be captured in a graph).
Status write_table(std::span<const std::int32_t> values, std::int32_t* dst, Device device,
                   Stream stream);

/// dst[0, bytes) = src[0, bytes), src in `device`'s memory, dst on the host: waits for `stream`
/// first (the host: a plain copy). Not for hot paths.
Status read_back(const void* src, void* dst, std::size_t bytes, Device device, Stream stream);

/// acc += src (acc fp32 or fp64, src any float dtype).
Status accumulate(const TensorView& acc, const TensorView& src, Stream stream);

/// dst = src, converting the dtype (rounded once).
Status convert(const TensorView& dst, const TensorView& src, Stream stream);

/// dst = 0.
Status zero(const TensorView& dst, Stream stream);

/// The sinks' gradient of this shard's rows:
///   dsinks[head_offset + h] = -sum over b, s of exp(sink[head_offset + h] - lse[b, h, s])
///                                               * dot(d_o[b, s, h, :], o[b, s, h, :]),
/// written (not added) for h < H; other entries untouched. Deterministic.
Status sink_grad(const TensorView& o, const TensorView& d_o, const TensorView& lse,
                 const TensorView& sinks, int head_offset, const TensorView& dsinks, Stream stream);

/// Packed sequences in zigzag chunks (ring attention): for the s-th *non-empty* sequence of
/// `cu_seqlens` (num_seqs + 1 real offsets; `non_empty` of them hold tokens, n for short), padded
/// to a multiple of 2 R and cut into 2 R chunks of c_s tokens,
///   out[s]                = c_0 + ... + c_{s-1}   (where its chunk starts inside a half),
///   out[(1 + x) n + s]    = clamp(len_s - x c_s, 0, c_s)   (its real tokens in chunk x),
/// for x < 2 R: (2 R + 1) n values. Empty sequences (repeated offsets, as static-shape loaders pad
/// cu_seqlens) take no rows and get no entry. `cu_seqlens` and `out` on `device`.
Status packed_chunk_tables(const std::int32_t* cu_seqlens, int num_seqs, int non_empty, int ring,
                           std::int32_t* out, Device device, Stream stream);

/// Packed sequences under a sliding window: the VarlenRows of call `part` of the chunk pair
/// (qc, kc), qc != kc, mask band [lo, hi] (kernels/packed_pairs.h), from the n entries of
/// packed_chunk_tables()' `chunk_tables`: out holds 4 rows of n values, q_begin, q_len, kv_begin,
/// kv_len. Both on `device`.
Status packed_pair_tables(const std::int32_t* chunk_tables, int n, int qc, int kc, std::int64_t lo,
                          std::int64_t hi, PairPart part, std::int32_t* out, Device device,
                          Stream stream);

namespace host {
Status packed_chunk_tables(const std::int32_t* cu_seqlens, int num_seqs, int non_empty, int ring,
                           std::int32_t* out);
Status packed_pair_tables(const std::int32_t* chunk_tables, int n, int qc, int kc, std::int64_t lo,
                          std::int64_t hi, PairPart part, std::int32_t* out);
Status reset_partial(const TensorView& o_acc, const TensorView& lse_acc);
Status merge_partial(const TensorView& o_acc, const TensorView& lse_acc, const TensorView& o_blk,
                     const TensorView& lse_blk);
Status finalize_partial(const TensorView& o_acc, const TensorView& lse_acc, const TensorView& sinks,
                        int head_offset, const TensorView& o, const TensorView& lse);
Status merge_stacked(const TensorView& o_parts, const TensorView& lse_parts, int parts,
                     std::int64_t o_part_stride, std::int64_t lse_part_stride,
                     const TensorView& sinks, int head_offset, const TensorView& o,
                     const TensorView& lse);
Status write_table(std::span<const std::int32_t> values, std::int32_t* dst);
Status read_back(const void* src, void* dst, std::size_t bytes);
Status accumulate(const TensorView& acc, const TensorView& src);
Status convert(const TensorView& dst, const TensorView& src);
Status zero(const TensorView& dst);
Status sink_grad(const TensorView& o, const TensorView& d_o, const TensorView& lse,
                 const TensorView& sinks, int head_offset, const TensorView& dsinks);
}  // namespace host

namespace cuda {
Status packed_chunk_tables(const std::int32_t* cu_seqlens, int num_seqs, int non_empty, int ring,
                           std::int32_t* out, Stream stream);
Status packed_pair_tables(const std::int32_t* chunk_tables, int n, int qc, int kc, std::int64_t lo,
                          std::int64_t hi, PairPart part, std::int32_t* out, Stream stream);
Status reset_partial(const TensorView& o_acc, const TensorView& lse_acc, Stream stream);
Status merge_partial(const TensorView& o_acc, const TensorView& lse_acc, const TensorView& o_blk,
                     const TensorView& lse_blk, Stream stream);
Status finalize_partial(const TensorView& o_acc, const TensorView& lse_acc, const TensorView& sinks,
                        int head_offset, const TensorView& o, const TensorView& lse, Stream stream);
Status merge_stacked(const TensorView& o_parts, const TensorView& lse_parts, int parts,
                     std::int64_t o_part_stride, std::int64_t lse_part_stride,
                     const TensorView& sinks, int head_offset, const TensorView& o,
                     const TensorView& lse, Stream stream);
Status write_table(std::span<const std::int32_t> values, std::int32_t* dst, Stream stream);
Status read_back(const void* src, void* dst, std::size_t bytes, Stream stream);
Status accumulate(const TensorView& acc, const TensorView& src, Stream stream);
Status convert(const TensorView& dst, const TensorView& src, Stream stream);
Status zero(const TensorView& dst, Stream stream);
Status sink_grad(const TensorView& o, const TensorView& d_o, const TensorView& lse,
                 const TensorView& sinks, int head_offset, const TensorView& dsinks, Stream stream);
}  // namespace cuda

}  // namespace ulysses::kernels
