// ulysses: decoding (inference) with a KV cache sharded by sequence across the cp group.
//
// After a context-parallel prefill every rank holds the keys and values of its own tokens: the
// cache of one long sequence is spread over the ranks and never moves. Each decode step, every rank
// has the same few new query tokens (the model runs them redundantly, or tensor-parallel), and
//
//   1. attends them to its own cache rows with the ordinary local kernel, cut into pieces so that
//      even one query token fills the GPU (flash-decoding: the keys are split, not the queries);
//   2. merges its pieces by log-sum-exp into one partial result (fp32 O and LSE);
//   3. all-gathers the partials (a few KiB per query token) and merges them.
//
// Every rank ends with the same O (and LSE): attention of the new tokens over the whole cache, with
// masks in global positions and sinks counted once. Nothing but the partials crosses a link: the
// cache is read where it lies, so a step costs about the longest rank's cache read plus one
// latency-bound all-gather.
//
//        rank 0                 rank 1                       every rank
//     q (same) x keys 0..3   q (same) x keys 4..7, 8    ->  all-gather (O, LSE)  ->  merge  ->  O
//
// Where new tokens' keys go is the caller's choice (e.g. appended on the rank with the shortest
// cache, or round robin): each rank describes its cache rows as segments of consecutive positions
// (a prefill shard, then appended tokens), which may differ from rank to rank and step to step.
//
// A rank's cache may be paged, as in vLLM or FlashInfer (DecodeConfig::page_size): a pool of
// fixed-size pages shared by the batch's sequences, and a page table per sequence mapping its rows
// (those the segments name) to pages of the pool. Pages may be anywhere in the pool and shared by
// several sequences (a common prefix). The built-in kernel looks the pages up as it reads them.
//
// Host-only header: no CUDA, NCCL or cuDNN include.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "ulysses/attention.h"
#include "ulysses/communicator.h"
#include "ulysses/config.h"
#include "ulysses/status.h"
#include "ulysses/types.h"

namespace ulysses {

/// Rows [row, row + rows) of a rank's cache hold the keys and values of global positions
/// [position, position + rows), in order.
struct CacheSegment {
  std::int64_t row = 0;
  std::int64_t rows = 0;
  std::int64_t position = 0;
};

/// What runs the pieces of a decode step (DecodeConfig::split_kernel).
enum class DecodeKernel {
  /// The LocalAttention given to create() where it can run the pieces, else the built-in kernel
  /// (where that can: a CUDA device, bf16 or fp16, head_dim and head_dim_v multiples of 16 up to
  /// 256, caches whose rows start on 16-byte boundaries). With the library's cuDNN backend the
  /// built-in kernel runs every step on GPUs whose peak memory bandwidth is at most 4 TB/s (on an
  /// H100 it took 2-18% less GPU time than cuDNN in every shape measured, 128k to 1M keys, and a
  /// fraction of the host time); on faster memory (an H200) the steps that read at most
  /// 262144 keys on a rank, and cuDNN the longer ones: there the built-in kernel took less GPU time
  /// up to 192k keys in every shape measured and tied at 256k for one sequence, and cuDNN was 4-5%
  /// faster at 512k and 1M keys for one sequence (docs/PERF.md). A kernel of the caller's own
  /// always runs when it can.
  kAuto,
  /// The LocalAttention given to create() (e.g. cuDNN): the open pieces in one varlen call, each
  /// group of edge pieces in one masked call, each piece with its own copy of the query rows.
  kLocal,
  /// The built-in kernel only: one launch for every piece on tensor cores, reading q and the cache
  /// in place (no copies, no cuDNN graphs: nothing is built on a first step or when a growing
  /// cache crosses a power of two), less than half of cuDNN's host time per step. create() returns
  /// kUnsupported where it cannot run, forward() kInvalidArgument for a cache that is not 16-byte
  /// aligned.
  kBuiltIn,
};

/// "auto", "local" or "built_in".
std::string_view decode_kernel_name(DecodeKernel k);

/// Everything that fixes a decode plan. Must be identical on every rank (create() checks). q, o
/// and a rank's cache hold at most 2^48 elements each (batch * rows * heads * head_dim).
struct DecodeConfig {
  /// Heads, head_dim (and head_dim_v: V and O heads may be narrower or wider than Q and K heads, as
  /// with MLA's 192 / 128), scale, causal, windows and sinks, in global positions as for training.
  /// Query token i of a step sits at position query_position + i: causal lets it see keys up to
  /// there (so with several new tokens their own keys must be in a cache); window_left w keeps only
  /// the last w + 1 positions, which also bounds the work (keys outside every window are not read).
  AttentionConfig attention;
  /// Ranks holding the cache: the communicator's size.
  int cp = 1;
  /// Of q, the cache and o (the kernel's dtype).
  DType dtype = DType::kBFloat16;
  /// Sequences decoded together. By default they share one position layout (the same segments and
  /// query position); DecodeArgs::segment_offsets and query_positions give each its own.
  std::int64_t batch = 1;
  /// New tokens per sequence per step: 1 for plain decoding; more for speculative verification or
  /// chunked prefill against a sharded cache.
  std::int64_t query_tokens = 1;
  /// Rows of each rank's cache buffer per sequence (its capacity): k_cache and v_cache are
  /// [batch, cache_rows, num_heads_kv, head_dim] and [.., head_dim_v].
  std::int64_t cache_rows = 0;
  /// Most segments a rank passes to one forward() call.
  int max_segments = 2;
  /// Keys visible to every query are cut into pieces of at least this many rows, so that one query
  /// token still gives the kernel pieces x heads independent rows to spread over the GPU (1024:
  /// half the GPU time of 4096 at 8k cached tokens on an H200, the same from 128k up; PERF.md).
  std::int64_t min_split_rows = 1024;
  /// Most pieces the keys visible to every query are cut into, per rank and sequence (rounding
  /// may add one per segment; the <= 2 masked edge pieces per segment that a window or several
  /// query tokens need come on top). 1: no splitting. 16 fills an H200 from one token at Hkv = 8
  /// (docs/PERF.md).
  int max_splits = 16;
  /// What runs the pieces (the merges and the all-gather are the same either way).
  DecodeKernel split_kernel = DecodeKernel::kAuto;
  /// 0: each sequence's cache is its own run of cache_rows rows (DecodeArgs::k_cache is [batch,
  /// cache_rows, ..]). > 0: the caches are paged, pages of page_size rows: k_cache and v_cache are
  /// pools [num_pages, page_size, num_heads_kv, head_dim] (any num_pages), and row r of sequence b
  /// is row r % page_size of page DecodeArgs::page_table[b][r / page_size]; cache_rows (a whole
  /// number of pages) is then the rows a sequence's table can map. Paged caches run in the
  /// built-in kernel (split_kernel auto or built_in; on the host too): the LocalAttention interface
  /// reads rows, not pages.
  std::int64_t page_size = 0;
  /// Steps that a CUDA graph can replay while the caches grow (serving engines capture their decode
  /// steps). false: forward() plans each step's pieces on the host from DecodeArgs::segments, so a
  /// captured step replays the layout it was captured with. true: forward() enqueues a kernel that
  /// plans them on the device, when the step runs, from the layout in device memory
  /// (DecodeArgs::segments_device, query_positions_device), into a fixed number of slots per
  /// sequence: min(max_splits, cache_rows / min_split_rows) + max_segments open pieces, and
  /// max_segments + 1 edges when query_tokens > 1 (slots a step leaves unused read nothing and run
  /// last). Run one step eagerly, capture one, then rewrite the arrays (and the page table) at the
  /// same addresses before each replay. Runs in the built-in kernel only (split_kernel auto or
  /// built_in; create() returns kUnsupported where it cannot run). The pieces are a host layout's:
  /// with one query token the same bits. forward() cannot check the arrays' contents without
  /// waiting for the device: there a segment outside [0, cache_rows) counts as empty and query
  /// positions are clamped to [0, 2^60], so nothing outside the cache is read;
  /// check_device_layout() reads them back and checks them as forward() checks a host layout.
  bool device_layout = false;

  Status validate() const;
};

/// One rank's views for one decode step. Activations have head_dim contiguous, any other strides.
struct DecodeArgs {
  TensorView q;  // [batch, query_tokens, num_heads_q, head_dim]: the same on every rank
  /// [batch, cache_rows, num_heads_kv, head_dim]: this rank's cache. With batch > 1 its sequences
  /// must lie a whole number of rows apart (strides[0] = m strides[1], m >= cache_rows, the same m
  /// for k_cache and v_cache), e.g. one contiguous buffer or a slice of a longer one.
  /// Paged (page_size > 0): the pool, [num_pages, page_size, num_heads_kv, head_dim], its pages a
  /// whole number of rows apart in the same way (m >= page_size).
  TensorView k_cache;
  TensorView v_cache;  // like k_cache, heads of head_dim_v
  /// Paged caches: [batch, cache_rows / page_size] int32, row-major, in host memory: sequence b's
  /// row r lies in page page_table[b * (cache_rows / page_size) + r / page_size] of the pool. The
  /// entries of pages that hold segment rows must lie in [0, num_pages); others are not read.
  std::span<const std::int32_t> page_table;
  /// Optional: the same table already on the communicator's device (e.g. the serving engine's);
  /// null: forward() copies page_table into its workspace each step.
  const std::int32_t* page_table_device = nullptr;
  /// Which rows of this rank's cache hold keys, and their positions (rows in ascending order, not
  /// overlapping; at most max_segments; may be empty). A position must be held by one rank only.
  /// With segment_offsets: every sequence's segments, one after another.
  std::span<const CacheSegment> segments;
  /// Global position of query token 0 (the same on every rank).
  std::int64_t query_position = 0;
  /// Optional, batch > 1 with sequences of different lengths (continuous batching): sequence b's
  /// segments are segments[segment_offsets[b] .. segment_offsets[b + 1]) (batch + 1 ascending
  /// entries from 0 to segments.size(); each sequence at most max_segments), in the rows of its own
  /// cache [b, :, :, :]. Empty: every sequence uses all of `segments`.
  std::span<const std::int64_t> segment_offsets;
  /// Optional: query token 0's position per sequence ([batch], the same on every rank), instead of
  /// query_position for all.
  std::span<const std::int64_t> query_positions;
  /// DecodeConfig::device_layout: the layout on the communicator's device, read when the step
  /// runs (segments, segment_offsets and query_positions stay empty; page_table too, and a paged
  /// cache's table is page_table_device). [batch, max_segments, 3] int64, contiguous: segment i of
  /// sequence b is (row, rows, position) at entries (b max_segments + i) 3 + {0, 1, 2}, in the
  /// rows of its own cache as CacheSegment; unused entries have rows = 0.
  const std::int64_t* segments_device = nullptr;
  /// DecodeConfig::device_layout: [batch] int64 on the device, query token 0's position per
  /// sequence.
  const std::int64_t* query_positions_device = nullptr;
  TensorView sinks;  // [num_heads_q] fp32 when attention.sinks (the same on every rank)
  TensorView o;      // out: [batch, query_tokens, num_heads_q, head_dim_v], the same on every rank
  TensorView lse;    // optional out: [batch, num_heads_q, query_tokens] fp32, natural log
  void* workspace = nullptr;  // workspace_bytes(), on the communicator's device
};

/// A decode plan for one rank of the cp group.
///
/// Collective: create() and forward() must be called by every rank of `comm` in the same order.
/// forward() checks its views and segments before any data moves; a rank whose arguments are wrong
/// returns kInvalidArgument at once and its peers get kTimeout (or the device backend's error)
/// rather than hang. A query token that sees no key at all (outside every window, or an empty
/// cache) gets O = 0 and LSE = -inf.
///
/// A LocalAttention that runs pieces needs provides_lse(). The cuDNN backend builds a graph per
/// power-of-two bucket of the pieces' lengths, so a growing cache builds a new graph only when a
/// piece crosses a power of two; the built-in kernel builds nothing and needs no workspace of its
/// own. forward() enqueues device work only (no host synchronisation; allocation only when a new
/// bucket needs more cuDNN workspace).
class DistributedDecode {
 public:
  virtual ~DistributedDecode() = default;

  /// Validates, agrees on the config across the ranks of `comm` (one all-gather), sizes the
  /// workspace. `comm` and `kernel` must outlive the plan.
  static Result<std::unique_ptr<DistributedDecode>> create(const DecodeConfig& config,
                                                           Communicator& comm,
                                                           LocalAttention& kernel);

  virtual const DecodeConfig& config() const = 0;
  /// Scratch for one forward() call, on the communicator's device.
  virtual std::size_t workspace_bytes() const = 0;
  /// Enqueues one decode step on `stream`.
  virtual Status forward(const DecodeArgs& args, Stream stream) = 0;
  /// DecodeConfig::device_layout: waits for `stream`, copies the layout (and page_table_device) to
  /// the host and checks args as forward() checks a host layout, naming the first bad entry; ok
  /// where forward() would take it. For tests and debugging: it synchronises, so not inside a
  /// captured step. Local: no other rank takes part.
  virtual Status check_device_layout(const DecodeArgs& args, Stream stream) = 0;
};

}  // namespace ulysses
