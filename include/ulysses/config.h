// ulysses: plain configuration structs. Each has validate(), which returns an InvalidArgument
// Status naming the field, its value and the constraint.
//
// Host-only header: no CUDA, NCCL or cuDNN include.
#pragma once

#include <optional>
#include <string_view>

#include "ulysses/status.h"

namespace ulysses {

/// What one attention layer computes, independent of how it is parallelised.
///
/// Masks are in *global* token positions (for packed batches: positions inside each sequence), so
/// the same config gives the same math on 1 or on P ranks. Query i may see key j when
///   - causal:        j <= i
///   - window_left:   j >= i - window_left   (-1 = unbounded)
///   - window_right:  j <= i + window_right  (-1 = unbounded)
/// With causal = true, window_right must be -1 or 0 (causal already bounds the right side).
///
/// Sinks (GPT-OSS style): each query head h has a learnable logit sink[h] that joins the softmax
/// denominator, exp(sink[h]), and contributes no value. Its gradient is dSinks[h].
struct AttentionConfig {
  int num_heads_q = 0;   // query heads, a multiple of num_heads_kv; at most kMaxHeads
  int num_heads_kv = 0;  // key/value heads (== num_heads_q: MHA, 1: MQA, else GQA)
  /// Of Q and K (and V, O unless head_dim_v says otherwise): 1..kMaxHeadDim; backends may
  /// require more (cuDNN: a multiple of 8).
  int head_dim = 0;
  /// Of V, O (and dV, dO) when it differs from head_dim (MLA, DeepSeek-V2/V3: head_dim 192,
  /// head_dim_v 128); 0: head_dim. Every strategy and decoding; FP8 payloads scale rows of
  /// gcd(head_dim, head_dim_v) values. cuDNN: packed (thd) training needs cuDNN 9.19 and head_dim
  /// up to 192.
  int head_dim_v = 0;
  std::optional<float> softmax_scale;  // default 1/sqrt(head_dim)
  bool causal = false;
  int window_left = -1;
  int window_right = -1;
  bool sinks = false;

  static constexpr int kMaxHeadDim = 256;
  /// Most query heads (the plans count heads and head channels in int).
  static constexpr int kMaxHeads = 65536;

  float scale() const;
  /// head_dim of V and O: head_dim_v, or head_dim when that is 0.
  int value_dim() const { return head_dim_v > 0 ? head_dim_v : head_dim; }
  /// Whether V and O are narrower or wider than Q and K.
  bool mixed_dims() const { return value_dim() != head_dim; }
  Status validate() const;
};

/// How the ranks of one sequence share the work.
enum class Strategy : int {
  kUlysses = 0,  // all-to-all sequence <-> heads (DeepSpeed-Ulysses)
  kRing = 1,     // K/V blocks circulate around the ranks; partial outputs merge by log-sum-exp
  kHybrid = 2,   // Ulysses inside groups of adjacent ranks, ring across the groups
  /// Every rank gathers the K/V rows its queries see (all heads) and runs the kernel on its own
  /// queries against them; dK/dV partials go back to their owners and are summed there
  /// (TransformerEngine's all_gather context parallelism, Llama 3's). No head constraint: any
  /// number of query and KV heads, any cp.
  kAllGather = 3,
};
std::string_view strategy_name(Strategy strategy);
Result<Strategy> parse_strategy(std::string_view name);

/// How a packed batch (Layout::kTHD: sequences one after another, cu_seqlens) is cut into the
/// zigzag chunks of ring and hybrid (sharding.h: shard_token_ranges()).
enum class PackedSharding : int {
  /// Ring and hybrid: kPerSequence. Ulysses and allgather: kStream (all they do).
  kDefault = 0,
  /// Ring and hybrid only: every sequence padded to a multiple of 2R and cut into 2R chunks of its
  /// own (TransformerEngine's THD ring layout; packed_sequence_offsets()). Causal work is balanced
  /// inside every sequence, but a short sequence becomes 2R short pieces in every kernel call.
  kPerSequence = 1,
  /// The packed stream cut like one sequence (Llama 3's document masking): zigzag chunks of
  /// seqlen / 2R tokens, a chunk boundary may cut a sequence, no padding between sequences. Whole
  /// sequences stay whole inside a chunk: the kernel calls hold fewer, longer pieces, and a pair of
  /// different chunks shares at most one sequence. Ulysses' contiguous shards are this too.
  kStream = 2,
};
std::string_view packed_sharding_name(PackedSharding sharding);
Result<PackedSharding> parse_packed_sharding(std::string_view name);

/// Parallel layout of one attention call.
///
/// Which tokens a rank holds depends on the strategy (sharding.h: shard_token_ranges()):
///   ulysses  one contiguous run of S/cp tokens;
///   ring     zigzag: the sequence in 2 cp chunks, rank r holds chunks r and 2cp-1-r (so causal
///            work is balanced);
///   hybrid   U x R: rank r = j U + u (j: ring index, u: index in its Ulysses group) holds piece u
///            (of U) of zigzag chunks j and 2R-1-j of 2R chunks;
///   allgather zigzag, as ring.
/// Packed batches (kTHD) are cut as the stream of tokens they are (contiguous for ulysses, zigzag
/// chunks for the others), except that ring and hybrid by default cut every sequence into 2R
/// chunks of its own (packed_sharding).
/// With cp = 1 every strategy computes the same attention with nothing to send; ring, hybrid and
/// allgather plans then run as Ulysses' one-rank plan (no copies where the caller's tensors are
/// aligned; docs/DESIGN.md, "One rank"), except with fp8 payloads and, for ring and hybrid,
/// packed batches cut per sequence, whose shards and rounding differ.
struct ParallelConfig {
  Strategy strategy = Strategy::kUlysses;
  int cp = 1;  // ranks sharing one sequence (context-parallel degree); equals the communicator size
  /// kHybrid only: ranks per Ulysses group U (adjacent ranks); the cp / U groups form the ring.
  /// 0 for the other strategies.
  int ulysses_degree = 0;
  /// Packed batches only (kTHD): how ring and hybrid cut the packed stream into zigzag chunks
  /// (PackedSharding). kStream ran ring 1.1-3.5x faster than kPerSequence on one H200 (device
  /// loopback, docs/PERF.md), at up to a quarter more memory per rank. kPerSequence is refused for
  /// ulysses and allgather.
  PackedSharding packed_sharding = PackedSharding::kDefault;

  /// Ranks that exchange heads by all-to-all: cp (ulysses), 1 (ring, allgather), ulysses_degree
  /// (hybrid).
  int ulysses_size() const;
  /// Ranks around the ring: cp / ulysses_size().
  int ring_size() const { return cp / ulysses_size(); }
  /// What the global sequence length must be a multiple of: cp (ulysses) or 2 cp (zigzag: ring,
  /// hybrid, allgather).
  int sequence_multiple() const;
  /// Whether packed sequences are padded and cut into chunks of their own (ring or hybrid with
  /// PackedSharding kDefault or kPerSequence), rather than the packed stream as one sequence.
  bool packed_per_sequence() const;

  Status validate() const;
};

}  // namespace ulysses
