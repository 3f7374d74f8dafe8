// ulysses: small device kernels the cuDNN attention backend needs around its graphs (CUDA only).
//
// Views follow LocalAttention's conventions: activations [B, S, H, D], LSE [B, H, S], any strides.
#pragma once

#include <cstdint>
#include <span>

#include "ulysses/attention.h"
#include "ulysses/status.h"
#include "ulysses/types.h"

namespace ulysses::kernels::cuda {

/// From device cu_seqlens[num_seqs + 1]: seq_len[i] (i < padded; 0 past num_seqs) and, for each
/// token stride in `token_strides`, ragged offsets[k][i] = (cu_seqlens[min(i, num_seqs)] -
/// base_row) * stride (i <= padded), written at offsets + k * (padded + 1). Lengths are int32,
/// offsets int64 (elements: a packed tensor may span more than 2^31 of them). base_row: the row
/// the tensors' pointers start at (a run of sequences given to one call, attention/call_parts.h).
Status varlen_metadata(const std::int32_t* cu_seqlens, int num_seqs, int padded,
                       std::int64_t base_row, std::span<const std::int64_t> token_strides,
                       std::int32_t* seq_len, std::int64_t* offsets, Stream stream);

/// The same from VarlenRows (device arrays): seq_len_q[i] = q_len[i], seq_len_kv[i] = kv_len[i] (0
/// past num_seqs, and both 0 when either is), and offsets[k][i] = (sides[k] == 0 ? q_begin[i] -
/// q_base : kv_begin[i] - kv_base) * stride k, at least 0 (a sequence given no rows may start
/// anywhere); entries past num_seqs start where the last sequence ends.
Status varlen_rows_metadata(const VarlenRows& rows, int padded, std::int64_t q_base,
                            std::int64_t kv_base, std::span<const std::int64_t> token_strides,
                            std::span<const int> sides, std::int32_t* seq_len_q,
                            std::int32_t* seq_len_kv, std::int64_t* offsets, Stream stream);

/// Writes zeros to act[:, t, :, :] for t >= first_token (padding rows), any dtype (elementwise.h).
Status zero_tokens_from(const TensorView& act, std::int64_t first_token, Stream stream);

/// Writes -inf to lse[:, :, t] for t >= first_token.
Status fill_lse_from(const TensorView& lse, std::int64_t first_token, Stream stream);

/// dst = src for fp32 [B, H, S] views with any strides.
Status copy_lse(const TensorView& dst, const TensorView& src, Stream stream);

/// dst = src for [B, S, H, D] views of one dtype with any strides (elementwise.h).
Status copy_act(const TensorView& dst, const TensorView& src, Stream stream);

/// dst (fp32, any strides) = src (fp16/bf16, any strides), both [B, S, H, D] (elementwise.h).
Status convert_to_f32(const TensorView& dst, const TensorView& src, Stream stream);

/// The backward of a dense call with one query and one key row: q, o, d_o, dq [B, 1, Hq, D], k,
/// v, dk, dv [B, 1, Hkv, D] (Hq a multiple of Hkv: query head h reads KV head h / (Hq / Hkv)), lse
/// [B, Hq, 1]; any dtype each (fp16, bf16, fp32), any strides. cuDNN's SDPA backward takes no
/// s_q = s_kv = 1 graph. With P = exp(scale q.k - lse) (0 where `visible` is false or lse is
/// -inf: the pair is masked, or the row saw nothing), the softmax backward on the given O and LSE:
/// dV = sum over a KV head's query heads of P dO, dS = P (dO.v - dO.o), dQ = scale dS k, dK = sum
/// of scale dS q. Sums in fp32 in a fixed order (deterministic), each output rounded once.
Status one_key_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& o, const TensorView& d_o, const TensorView& lse,
                        const TensorView& dq, const TensorView& dk, const TensorView& dv,
                        float scale, bool visible, Stream stream);

}  // namespace ulysses::kernels::cuda
