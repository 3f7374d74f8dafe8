// ulysses: helpers to cut a sequence into per-rank shards and put it back together.
//
// Ring and hybrid shard in zigzag order (ParallelConfig); the functions taking a ParallelConfig
// handle every strategy. Ulysses gives rank r the contiguous token range [r * n / cp, (r + 1) * n /
// cp) of every sequence (kBSHD: of each of the `batch` sequences; kTHD: of the whole packed token
// stream, so one packed sequence may span ranks; masks stay right because they use global
// positions).
//
// Host-only header: no CUDA, NCCL or cuDNN include.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "ulysses/communicator.h"
#include "ulysses/config.h"
#include "ulysses/status.h"
#include "ulysses/types.h"

namespace ulysses {

/// Index of the sequence dimension of an activation view: 1 for kBSHD [B, S, H, D], 0 for kTHD [T,
/// H, D].
int sequence_dim(Layout layout);

/// A view (no copy) of rank `rank`'s shard of a global activation, lse ([B, H, S] or [H, T])
/// excluded. InvalidArgument when the sequence length is not divisible by cp or rank is out of
/// range.
Result<TensorView> shard_view(const TensorView& global, Layout layout, int cp, int rank);

/// Like shard_view() for an LSE tensor: [B, H, S] (kBSHD) or [H, T] (kTHD), sliced along the last
/// dim.
Result<TensorView> shard_lse_view(const TensorView& global_lse, Layout layout, int cp, int rank);

/// Copies every element of `src` into `dst` (same shape and dtype, any strides; host memory).
Status copy_tensor(const TensorView& dst, const TensorView& src);

/// Gathers every rank's shard into `global` on every rank (host communicators): one all-gather of
/// the shards into `scratch` (cp * shard bytes, host), then a strided copy into `global`.
Status gather_sequence(Communicator& comm, const TensorView& shard, const TensorView& global,
                       Layout layout, void* scratch, Stream stream);

/// Position ids of rank `rank`'s tokens, e.g. for rotary embeddings: for kBSHD the global position
/// r * S/cp + i (the same for each batch entry); for kTHD the position inside each token's own
/// packed sequence, and 0 for padding past cu_seqlens.back(). `seqlen` is the global length.
Result<std::vector<std::int32_t>> shard_position_ids(Layout layout, std::int64_t seqlen,
                                                     std::span<const std::int32_t> cu_seqlens,
                                                     int cp, int rank);

// ---------------------------------------------------------------------------------------------------
// Every strategy (ring and hybrid hold non-contiguous token ranges: see ParallelConfig)
// ---------------------------------------------------------------------------------------------------

/// A run of global token positions [begin, end).
struct TokenRange {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  bool operator==(const TokenRange&) const = default;
};

/// Packed sequences (kTHD) under ring and hybrid cut per sequence (parallel.packed_per_sequence()):
/// every sequence is padded to a multiple of 2 * ring_size() so that it cuts into 2R zigzag chunks
/// of its own. Sequence s of `cu_seqlens` (its real lengths) then lies at global rows [offsets[s],
/// offsets[s] + length), padding up to offsets[s + 1]; rows past offsets.back() up to the plan's
/// seqlen are padding too. Returns those n + 1 offsets; for ulysses, allgather and
/// PackedSharding::kStream, cu_seqlens itself (no padding between sequences).
Result<std::vector<std::int32_t>> packed_sequence_offsets(const ParallelConfig& parallel,
                                                          std::span<const std::int32_t> cu_seqlens);

/// The token ranges of a `seqlen`-token sequence that rank `rank` holds under `parallel`, in the
/// order they are stored in its shard. InvalidArgument when seqlen is not a multiple of
/// parallel.sequence_multiple() or rank is out of range.
///
/// Packed sequences under ring or hybrid cut per sequence (`cu_seqlens` given; see
/// packed_sequence_offsets()): each padded sequence, and the tail after the last, is cut into 2R
/// chunks of its own; ring index x owns H_x, the concatenation of chunk x of every segment
/// (seqlen / 2R rows), and rank (j, u) holds piece u of U of H_j, then of H_{2R-1-j}. Ulysses
/// ignores cu_seqlens (contiguous shards), and so do allgather and ring or hybrid with
/// PackedSharding::kStream: they shard the packed stream in zigzag chunks like one sequence (Llama
/// 3's document masking: a chunk boundary may cut a document).
Result<std::vector<TokenRange>> shard_token_ranges(const ParallelConfig& parallel,
                                                   std::int64_t seqlen, int rank,
                                                   std::span<const std::int32_t> cu_seqlens = {});

/// Copies rank `rank`'s tokens of `global` into `shard` (host memory, any strides). `seq_dim` is
/// the token dimension of both: sequence_dim(layout) for activations, the last dim for an LSE.
/// `cu_seqlens`: packed sequences (kTHD), as in shard_token_ranges().
Status copy_shard(const TensorView& global, const TensorView& shard, int seq_dim,
                  const ParallelConfig& parallel, int rank,
                  std::span<const std::int32_t> cu_seqlens = {});

/// The inverse of copy_shard(): writes `shard` into rank `rank`'s positions of `global`.
Status place_shard(const TensorView& shard, const TensorView& global, int seq_dim,
                   const ParallelConfig& parallel, int rank,
                   std::span<const std::int32_t> cu_seqlens = {});

/// Position ids of rank `rank`'s tokens, in shard order: global positions (kBSHD), or with
/// `cu_seqlens` the position inside each token's own packed sequence (0 for padding).
Result<std::vector<std::int32_t>> shard_position_ids(const ParallelConfig& parallel,
                                                     std::int64_t seqlen, int rank,
                                                     std::span<const std::int32_t> cu_seqlens = {});

/// gather_sequence() for any strategy: every rank's shard into `global` on every rank (host).
Status gather_sequence(Communicator& comm, const TensorView& shard, const TensorView& global,
                       int seq_dim, const ParallelConfig& parallel, void* scratch, Stream stream,
                       std::span<const std::int32_t> cu_seqlens = {});

// ---------------------------------------------------------------------------------------------------
// Load balance of packed batches
// ---------------------------------------------------------------------------------------------------

/// The attention work each rank does: the (query, key) position pairs its kernel calls leave
/// visible under `attention`'s masks (causal, windows; inside each sequence; its other fields are
/// not read, but for the head counts). A rank that splits heads (ulysses, hybrid) counts its share
/// of its group's pairs, its share of the query heads (uneven where the group, cp or
/// ulysses_degree ranks, is below num_heads_kv and does not divide it; 1 / group size when the
/// head counts are 0), so the cp entries sum to the unsharded total. Empty `cu_seqlens`: one
/// `seqlen`-token sequence (per batch entry); else a packed batch of that many tokens laid out as
/// `parallel` cuts it (packed_sequence_offsets()).
///
/// Ulysses splits heads, so every rank does 1/cp of the work (heads split unevenly: its heads'
/// share; 12 heads over 8 ranks: max / mean 2 / 1.5), and zigzag balances a single causal
/// sequence; but a packed stream cut into zigzag chunks like one sequence (allgather, and ring or
/// hybrid with PackedSharding::kStream) gives each rank what the documents in its chunks hold: a
/// chunk late in a long document sees many keys, one at a document's start few. On P GPUs the
/// slowest rank sets the step, so max / mean of these entries is what such a layout costs (the
/// kernel's per-row work is the same on every rank). balance_packed_sequences() evens it out.
Result<std::vector<double>> attention_pairs_by_rank(const ParallelConfig& parallel,
                                                    const AttentionConfig& attention,
                                                    std::int64_t seqlen,
                                                    std::span<const std::int32_t> cu_seqlens = {});

/// A packed batch with its sequences in another order.
struct PackedOrder {
  /// order[k]: the index (into the given cu_seqlens) of the sequence placed k-th.
  std::vector<std::int32_t> order;
  /// The reordered batch's offsets: cu_seqlens of the sequences in `order`.
  std::vector<std::int32_t> cu_seqlens;
};

/// An order of a packed batch's sequences that evens out attention_pairs_by_rank() on the packed
/// stream layouts (allgather; ring and hybrid with PackedSharding::kStream): the largest rank's
/// pairs as small as the search finds (every order when there are at most 8 sequences, else a
/// local search of swaps and moves from several starts: a few tens of ms on one core up to
/// 20,000 sequences, 0.2 s at 100,000), ties broken towards even ranks. The sequences of a
/// packed batch are independent, so a data loader may concatenate them in any order: build the
/// batch (tokens, labels, cu_seqlens) in this order on every rank. Deterministic (same input,
/// same order on every rank); the given order when no other is better, and for layouts where
/// order changes nothing (ulysses, per-sequence sharding, one sequence).
Result<PackedOrder> balance_packed_sequences(const ParallelConfig& parallel,
                                             const AttentionConfig& attention, std::int64_t seqlen,
                                             std::span<const std::int32_t> cu_seqlens);

/// Checks global cu_seqlens for `total_tokens` packed tokens: starts at 0, never decreases, last <=
/// total.
Status validate_cu_seqlens(std::span<const std::int32_t> cu_seqlens, std::int64_t total_tokens,
                           std::string_view api);

/// Packed-batch padding: the number of tokens to allocate so that the stream divides evenly by cp
/// (and, when page_size > 0, fills whole pages: a multiple of lcm(cp, page_size)). The sequences
/// keep their cu_seqlens; tokens past cu_seqlens.back() are padding that attention masks out.
Result<std::int64_t> padded_token_count(std::span<const std::int32_t> cu_seqlens, int cp,
                                        int page_size = 0);

/// Copies a packed [T, H, D] tensor into a padded [T_padded, H, D] one and zero-fills the tail
/// (host).
Status pad_packed_tokens(const TensorView& src, const TensorView& dst);

}  // namespace ulysses
