// ulysses: the local attention kernel interface, and the distributed attention plan built on it.
//
// Two layers:
//
//  * LocalAttention is an ordinary attention kernel: it sees the *full* sequence for a slice of the
//  heads
//    and knows nothing of parallelism. ulysses ships an FP64 host reference (reference.h) and, on
//    GPUs, a cuDNN backend; users can plug in their own.
//
//  * DistributedAttention is a plan: created once per shape (collectively, on every rank of the cp
//    group), it validates everything, agrees on the configuration across ranks and sizes the
//    buffers. forward()/backward() then only move data and call the kernel.
//
// Ulysses, per layer (P ranks, each holding S/P tokens of every head):
//
//        rank 0          rank 1                        rank 0            rank 1
//     +---------+     +---------+    all-to-all     +---------+       +---------+
//     | s 0..3  |     | s 4..7  |   (Q, K, V in     | s 0..7  |       | s 0..7  |
//     | h 0..3  |     | h 0..3  |    one message)   | h 0..1  |       | h 2..3  |
//     +---------+     +---------+   ------------->  +---------+       +---------+
//                                                        | local attention, full sequence
//     O for s 0..3 <------------- all-to-all ------- O for h 0..1 ...
//
// Host-only header: no CUDA, NCCL or cuDNN include.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "ulysses/communicator.h"
#include "ulysses/config.h"
#include "ulysses/status.h"
#include "ulysses/types.h"

namespace ulysses {

// ---------------------------------------------------------------------------------------------------
// Local attention kernels
// ---------------------------------------------------------------------------------------------------

/// The problem one local kernel call solves: all `seqlen` positions for heads
/// [head_offset_q, head_offset_q + num_heads_q_local) of `config.num_heads_q` query heads (and the
/// matching key/value heads). Per-head parameters (sinks) are indexed with the *global* head index
/// head_offset_q + h, so they are right on every rank.
struct LocalProblem {
  AttentionConfig config;  // global head counts, scale, masks, sinks
  DType dtype =
      DType::kBFloat16;  // of q, k, v, o, do, dq (and dk, dv unless grad_kv_dtype says else)
  std::int64_t batch = 1;
  std::int64_t seqlen =
      0;                // full sequence length (kBSHD), or all packed tokens incl. padding (varlen)
  bool varlen = false;  // packed batch: batch == 1, cu_seqlens given with each call
  int head_offset_q = 0;
  int num_heads_q_local = 0;
  int head_offset_kv = 0;
  int num_heads_kv_local = 0;
  /// dtype of dk/dv written by backward: `dtype`, or kFloat32 when ulysses sums partial dK/dV of a
  /// KV head that several ranks share (and for ring blocks).
  DType grad_kv_dtype = DType::kBFloat16;
  /// Backward writes dq in fp32 instead of `dtype` (ring blocks: partials summed in fp32).
  bool grad_q_fp32 = false;
  /// Forward writes o in fp32 instead of `dtype` (ring blocks: partial outputs merged unrounded).
  bool out_fp32 = false;
  /// Backward adds this call's dq (dk and dv) to what the view holds, a running sum in
  /// grad_q_dtype() (grad_kv_dtype), instead of overwriting it: ring blocks join the sums without
  /// a staging buffer. Set only for kernels whose accumulates_grads() is true.
  bool accumulate_dq = false;
  bool accumulate_dkv = false;

  // Blocks of a longer sequence (ring attention). A whole sequence leaves all three at their
  // defaults.
  /// Key/value rows when they differ from the query rows; 0: seqlen.
  std::int64_t seqlen_kv = 0;
  /// Global position of query row 0 minus that of key row 0. Masks compare key row j with query
  /// row i + diagonal_offset (causal: j <= i + diagonal_offset). Not with varlen.
  std::int64_t diagonal_offset = 0;
  /// The keys of this call are only part of each query's keys: backward must use the given o and
  /// lse (the statistics of the whole row) rather than recompute them from this block.
  bool partial_keys = false;
  /// varlen only: the sequences are given as VarlenRows (args.rows: query and key rows of each
  /// sequence, which may differ and leave gaps) instead of cu_seqlens.
  bool varlen_rows = false;
  /// varlen_rows only: each sequence's diagonal runs through the bottom-right corner of its
  /// block (FlashAttention's causal convention): query row q_begin[s] + i is at position
  /// i + (kv_len[s] - q_len[s]) + diagonal_offset instead of i + diagonal_offset. One call then
  /// holds sequences whose queries are the last rows of key ranges of different lengths
  /// (all-gather with packed batches). A kernel that does not implement it refuses it in
  /// check_support().
  bool bottom_right = false;
  /// backward() will run on this problem too (plans: PlanConfig::training). false: forward only,
  /// so check_support() need not require what only backward needs, nor workspace_bytes() cover
  /// backward's scratch.
  bool backward = true;

  std::int64_t kv_len() const { return seqlen_kv > 0 ? seqlen_kv : seqlen; }
  DType grad_q_dtype() const { return grad_q_fp32 ? DType::kFloat32 : dtype; }
  DType out_dtype() const { return out_fp32 ? DType::kFloat32 : dtype; }

  /// The whole problem on one device: every head, grad_kv_dtype == dtype.
  static LocalProblem unsharded(const AttentionConfig& config, DType dtype, std::int64_t batch,
                                std::int64_t seqlen, bool varlen = false);
};

/// The packed sequences of a varlen call when queries and keys lie in different rows (blocks of
/// packed sequences in ring attention): sequence s has query rows [q_begin[s], q_begin[s] +
/// q_len[s]) and key/value rows [kv_begin[s], kv_begin[s] + kv_len[s]); the ranges of one side do
/// not overlap and ascend. Masks use positions inside each sequence: query row q_begin[s] + i is at
/// position i + diagonal_offset, key row kv_begin[s] + j at position j. Rows outside every
/// sequence are written as O, dQ, dK, dV = 0 and LSE = -inf. Host spans always; the same numbers in
/// device memory for a device kernel.
struct VarlenRows {
  std::span<const std::int32_t> q_begin, q_len, kv_begin, kv_len;
  const std::int32_t* q_begin_device = nullptr;
  const std::int32_t* q_len_device = nullptr;
  const std::int32_t* kv_begin_device = nullptr;
  const std::int32_t* kv_len_device = nullptr;
  int num_seqs() const { return static_cast<int>(q_begin.size()); }
};

/// Views for one forward call. Activations are [batch, seqlen, heads, head_dim] with any strides
/// (keys and values: kv_len() rows).
struct LocalForwardArgs {
  TensorView q;      // [B, S, num_heads_q_local, D]
  TensorView k;      // [B, S_kv, num_heads_kv_local, D]
  TensorView v;      // [B, S_kv, num_heads_kv_local, D]
  TensorView sinks;  // [config.num_heads_q] fp32, every head; empty unless config.sinks
  TensorView o;      // out: [B, S, num_heads_q_local, D]; fp32 when problem.out_fp32
  TensorView lse;    // out: [B, num_heads_q_local, S] fp32, natural log; empty if not wanted
  std::span<const std::int32_t> cu_seqlens;  // varlen: [num_seqs + 1] host copy, global positions
  const std::int32_t* cu_seqlens_device = nullptr;  // varlen on a device: the same in device memory
  VarlenRows rows;                                  // varlen_rows: replaces cu_seqlens
  void* workspace = nullptr;  // workspace_bytes(problem) bytes on the kernel's device
};

/// Views for one backward call. o and lse are what forward produced.
struct LocalBackwardArgs {
  TensorView q, k, v, o, lse, d_o;
  TensorView sinks;   // as in forward
  TensorView dq;      // out (in-out: accumulate_dq): like q; fp32 when problem.grad_q_fp32
  TensorView dk;      // out (in-out: accumulate_dkv): like k, dtype problem.grad_kv_dtype
  TensorView dv;      // out (in-out: accumulate_dkv): like v, dtype problem.grad_kv_dtype
  TensorView dsinks;  // out: [config.num_heads_q] fp32; the kernel writes only its heads' entries
  std::span<const std::int32_t> cu_seqlens;
  const std::int32_t* cu_seqlens_device = nullptr;
  VarlenRows rows;
  void* workspace = nullptr;
};

/// An attention kernel for the full sequence and a slice of heads.
///
/// Contract: a kernel must compute each head independently of the others present (so that running a
/// subset of heads gives the same numbers as running all of them), honour the masks in the
/// positions it is given (0..seqlen-1, or positions within each packed sequence), write zeros to O
/// and dQ/dK/dV (add nothing to them under accumulate_dq/accumulate_dkv) and -inf to LSE for rows
/// outside every packed sequence (past cu_seqlens.back(), or outside VarlenRows), and enqueue its
/// work on `stream` without synchronising the device.
class LocalAttention {
 public:
  virtual ~LocalAttention() = default;

  virtual std::string_view name() const = 0;
  /// Device whose memory the kernel reads and writes.
  virtual Device device() const = 0;
  /// Whether forward writes the softmax log-sum-exp (ring attention needs it to merge blocks).
  virtual bool provides_lse() const = 0;
  virtual bool supports_backward() const = 0;
  /// Whether backward honours LocalProblem::accumulate_dq and accumulate_dkv. Ring attention then
  /// needs fewer per-block gradient buffers; a kernel that returns false gets them.
  virtual bool accumulates_grads() const { return false; }
  /// Whether two calls on `problem`'s shape should run at the same time on different streams,
  /// each with its own workspace: true only if that is safe (no state shared between calls but
  /// read-only state) and worth a second workspace (a call too small to fill the device loses
  /// efficiency in its tail). Ulysses' head chunks (PlanConfig::overlap_chunks) then alternate
  /// between two streams, so one chunk's call fills the GPU while the previous one drains. Asked
  /// at plan creation (which sizes the workspaces) and before every call; a kernel that returns
  /// false gets its calls one after another on the caller's stream.
  virtual bool concurrent_calls(const LocalProblem& problem) const {
    (void)problem;
    return false;
  }
  /// OK if the kernel can run `problem`; otherwise kUnsupported naming the feature.
  virtual Status check_support(const LocalProblem& problem) const = 0;
  /// Scratch bytes one call needs (0 if none).
  virtual std::size_t workspace_bytes(const LocalProblem& problem) const {
    (void)problem;
    return 0;
  }
  virtual Status forward(const LocalProblem& problem, const LocalForwardArgs& args,
                         Stream stream) = 0;
  virtual Status backward(const LocalProblem& problem, const LocalBackwardArgs& args,
                          Stream stream) = 0;
  /// Memory the kernel holds now on its device outside the workspaces its callers pass: buffers
  /// that a call needed beyond workspace_bytes() and kept for the next one (grow-only, so steady
  /// state allocates nothing), at their current size. The cuDNN backend: a packed batch's graph
  /// that needs more workspace than its shape's canonical graph, compact dK/dV for gradients bound
  /// for wider rows, staging for views past 2^31 elements. Not the libraries' own memory (cuDNN's
  /// handle and built graphs) nor the driver's. Allocators that cannot see it (a framework's
  /// caching allocator) can count it from here.
  virtual std::size_t held_bytes() const { return 0; }
  /// Frees what held_bytes() counts, in stream order on `stream`: after the work already enqueued
  /// there, which must include (or be ordered after) every call that used those buffers. A later
  /// call that needs one allocates it again. For a one-off batch that grew them: steady state
  /// needs no release.
  virtual Status release_held(Stream stream) {
    (void)stream;
    return Status::ok();
  }
};

// ---------------------------------------------------------------------------------------------------
// Distributed attention
// ---------------------------------------------------------------------------------------------------

/// What forward keeps in `saved` for backward (training). Every strategy.
enum class SavedActivations : int {
  /// The head-sharded Q, K, V, O and LSE the kernel read and wrote (saved_bytes() is about the size
  /// of this rank's q, k, v and o): backward exchanges only dO in and dQ, dK, dV out.
  kHeadSharded = 0,
  /// Only the kernel's LSE (a few MiB; ring and hybrid with sinks also the fp32 O): backward takes
  /// this rank's q, k, v and o again (BackwardArgs) and exchanges (Ulysses, hybrid) or packs
  /// (ring) them with dO. A training framework then keeps one copy of the layer's q, k, v, o (its
  /// own, which its autograd holds anyway) instead of a second, head-sharded one, for one more
  /// all-to-all of Q, K, V and O per step. Ulysses with overlap_chunks = K: the exchange buffers
  /// are those of chunks_in_flight head chunks, not of all of them.
  kLseOnly = 1,
};
std::string_view saved_activations_name(SavedActivations saved);
Result<SavedActivations> parse_saved_activations(std::string_view name);  // "heads" | "lse"

/// What the activations that travel to the ranks computing on them carry. Ulysses: the inbound
/// exchanges, Q, K, V in forward (and again in backward with kLseOnly) and dO in backward. Ring
/// and hybrid: the K/V blocks that travel the ring, forward and backward (the hybrid's Ulysses
/// exchange inside a group stays native: groups are meant to sit on one node's fast links, the ring
/// across slower ones). All-gather: the K/V chunks gathered in forward (and again in backward with
/// kLseOnly). O, the LSE and the gradients (all-gather's fp32 dK/dV partials too) always travel in
/// the plan's dtype.
enum class Payload : int {
  /// The plan's dtype: every result bitwise equal to one GPU running the whole sequence.
  kNative = 0,
  /// FP8 E4M3 codes with one scale per (token, head) row of head_dim values (with head_dim_v !=
  /// head_dim: per row of gcd(head_dim, head_dim_v) values, a head's rows scaled each on its own,
  /// 3 rows of 64 for a 192-wide head): the smallest power of
  /// two that brings the row's largest |value| to E4M3's range (<= 448), stored as one exponent
  /// byte (OCP MX's E8M0). Scaling is exact and every value keeps E4M3's 3 mantissa bits (relative
  /// error <= 2^-4; values under ~2^-14 of their row's largest lose bits, under ~2^-18 become 0).
  /// Those exchanges then carry (head_dim + 1) / (head_dim * sizeof(dtype)) of the native bytes:
  /// 0.50 for bf16 at head_dim 128. The receiving rank turns the rows back into the plan's dtype
  /// before the kernel reads them: results are exactly those of kNative on inputs rounded that way
  /// (straight-through: gradients are those of the rounded Q, K, V, for the rounded dO; ring and
  /// hybrid, and all-gather, round K and V only, and use the rounded K and V on the rank that owns
  /// them too, so every query sees the same keys). Ulysses' workspace stays within ~1% of native's
  /// (head-sharded saves with overlap_chunks > 1: + half of one dO-sized buffer); ring's holds the
  /// two ring buffers at half size plus one KV block to decode into (the same bytes as native's two
  /// ring buffers, and half a block more with a single ring step); all-gather's adds its own two
  /// chunks and each arriving one as FP8 rows. A row holding an infinity
  /// travels unscaled with the infinity saturated to 448; NaN stays NaN. Device plans need bf16,
  /// fp16 or fp32.
  kFp8 = 1,
};
std::string_view payload_name(Payload payload);
Result<Payload> parse_payload(std::string_view name);  // "native" | "fp8"

/// Everything that fixes a plan. Must be identical on every rank of the group (create() checks).
/// A tensor it describes holds at most 2^48 elements (batch * seqlen * heads * head_dim: far past
/// any device, so that the plans' size arithmetic fits in int64).
struct PlanConfig {
  AttentionConfig attention;
  ParallelConfig parallel;
  Layout layout = Layout::kBSHD;
  DType dtype = DType::kBFloat16;
  std::int64_t batch = 1;  // kBSHD: sequences per step; kTHD: must be 1
  std::int64_t seqlen =
      0;  // global: tokens per sequence (kBSHD) or packed tokens incl. padding (kTHD)
  /// Keep what backward needs between forward and backward, in the caller's `saved` buffer of
  /// saved_bytes() (see saved_activations). false: inference, nothing is kept.
  bool training = true;
  /// Pipeline the exchanges with the kernel: split each rank's heads into this many chunks (by KV
  /// head) and exchange chunk c + 1 while the kernel runs on chunk c (on GPUs the exchanges then
  /// run on a side stream; with a kernel whose concurrent_calls() is true, such as cuDNN's on
  /// unpacked batches too small to fill the GPU, consecutive chunks' calls alternate between two
  /// streams, each with its own kernel workspace, so splitting the heads costs the kernel no
  /// efficiency). 1: no pipeline.
  /// At most the fewest KV heads a rank owns (num_heads_kv / cp, rounded down); 1 when
  /// cp > num_heads_kv. Chunks need not be equal. Only the first chunk's inbound exchange and the
  /// last chunk's returning one are not hidden behind a kernel call, so from K = 3 on the first
  /// and last chunk are the small ones (max(1, n / (2 (K - 1))) of a rank's n KV heads each, about
  /// half a middle chunk; 4 KV heads in 3 chunks: 1, 2, 1); K = 2 halves them, the first one more
  /// where n is odd. Results are bitwise the same
  /// for every value (heads are independent). With cp = 1 (native payload) nothing travels and
  /// the plan makes one kernel call for every head whatever this says; its kernel then reads and
  /// writes the caller's tensors in place where they are aligned as its own buffers would be
  /// (docs/DESIGN.md, "One rank").
  int overlap_chunks = 1;
  /// false (default): Ulysses' backward reuses `saved` as scratch once its kernel has read it (dQ,
  /// dK, dV come back into it), which takes one dQ-sized buffer off the backward's peak. Backward
  /// then consumes `saved`: a second backward() on it before another forward() is refused
  /// (kInvalidArgument). true: `saved` is left intact, so backward may run again on the same
  /// forward (e.g. a graph retained for a second backward). Ring and hybrid never write `saved` in
  /// backward.
  bool backward_keeps_saved = false;
  /// Training: what forward keeps for backward (see SavedActivations).
  SavedActivations saved_activations = SavedActivations::kHeadSharded;
  /// Ulysses with overlap_chunks > 1, for kLseOnly and for inference (training = false): head
  /// chunks whose exchange buffers exist at once. 2: chunk c + 1 travels while chunk c computes;
  /// 1: chunks run one after another with the least memory. Values above overlap_chunks act as
  /// overlap_chunks. 1 or 2.
  int chunks_in_flight = 2;
  /// The format of the activations that travel: Ulysses' inbound exchanges (Q, K, V and dO), ring's
  /// K/V blocks; see Payload.
  Payload payload = Payload::kNative;

  Status validate() const;
};

/// One rank's inputs and outputs for forward. Activations are this rank's contiguous shard of the
/// sequence: [batch, seqlen/cp, heads, head_dim] (kBSHD) or [seqlen/cp, heads, head_dim] (kTHD),
/// any strides with head_dim contiguous: heads of a wider fused-projection row, or Megatron's
/// [seqlen/cp, batch, heads, head_dim] memory seen with the sequence stride outermost (sbhd).
struct ForwardArgs {
  TensorView q;      // [.., num_heads_q, head_dim]
  TensorView k;      // [.., num_heads_kv, head_dim]
  TensorView v;      // [.., num_heads_kv, head_dim]
  TensorView sinks;  // [num_heads_q] fp32 (every head, same on all ranks) when attention.sinks
  TensorView o;      // out, like q
  TensorView
      lse;  // optional out: [batch, num_heads_q, seqlen/cp] (kBSHD) or [num_heads_q, seqlen/cp]
  /// kTHD: global, host, same on every rank. Ulysses, allgather, and ring/hybrid with
  /// PackedSharding::kStream: offsets of the packed sequences in the token stream. Ring/hybrid cut
  /// per sequence (the default): the sequences' real lengths; each lies at its padded offset
  /// (packed_sequence_offsets() in sharding.h), the padding between them is masked.
  /// Empty sequences (repeated offsets) are allowed anywhere and in any number.
  std::span<const std::int32_t> cu_seqlens;
  const std::int32_t* cu_seqlens_device =
      nullptr;                // kTHD with a device kernel: same values on device
  void* workspace = nullptr;  // workspace_bytes(), on the communicator's device
  void* saved = nullptr;      // training: saved_bytes(), kept untouched until backward
};

/// One rank's inputs and outputs for backward, after forward() with the same `saved` buffer.
struct BackwardArgs {
  TensorView d_o;     // like ForwardArgs::o
  TensorView sinks;   // as in forward
  TensorView dq;      // out, like q
  TensorView dk;      // out, like k
  TensorView dv;      // out, like v
  TensorView dsinks;  // out when attention.sinks: [num_heads_q] fp32, complete on every rank
  std::span<const std::int32_t> cu_seqlens;
  const std::int32_t* cu_seqlens_device = nullptr;
  void* workspace = nullptr;
  void* saved = nullptr;
  /// SavedActivations::kLseOnly only (not read otherwise): this rank's q, k, v and o of the
  /// matching forward, unchanged since, like ForwardArgs::q, k, v, o.
  TensorView q, k, v, o;
};

/// A context-parallel attention plan for one rank.
///
/// Collective: create(), forward() and backward() must be called by every rank of `comm` in the
/// same order. Argument errors that only depend on the PlanConfig are caught in create() on every
/// rank (the configs are compared across ranks, and a difference is kConfigMismatch everywhere).
/// Per-call views are checked against the plan before any data moves; a rank whose views are wrong
/// returns kInvalidArgument at once and its peers get kTimeout (or the device backend's error)
/// rather than hang.
///
/// CUDA graphs: with an NCCL communicator, forward() and backward() enqueue device work only (no
/// host synchronisation, no allocation after the first call with a given shape), so a step can be
/// captured into a CUDA graph on the caller's stream after one eager warm-up step and replayed;
/// the graph reads and writes the pointers of the captured calls, and what the host arguments said
/// then is baked in: a packed batch with other cu_seqlens needs its own capture (tests: Ulysses
/// with and without head chunks and kLseOnly, ring and hybrid; with one GPU, one rank: no hops).
/// Not with the peer-copy or device loopback communicators, whose ranks hand events to each other
/// across host threads.
class DistributedAttention {
 public:
  virtual ~DistributedAttention() = default;

  /// Checks, without communicating, whether this rank could run `config` with `comm` and `kernel`.
  static Status check_support(const PlanConfig& config, const Communicator& comm,
                              const LocalAttention& kernel);

  /// Validates, agrees on the config across the ranks of `comm` (one all-gather), sizes buffers.
  /// `comm` and `kernel` must outlive the plan.
  static Result<std::unique_ptr<DistributedAttention>> create(const PlanConfig& config,
                                                              Communicator& comm,
                                                              LocalAttention& kernel);

  virtual const PlanConfig& config() const = 0;
  /// Scratch for one forward or backward call, on the communicator's device. Ulysses at cp = 1
  /// (and the strategies that run its one-rank plan): what the kernel needs on the caller's views
  /// in place; a call whose views are not aligned for that (docs/DESIGN.md, "One rank") copies
  /// through buffers the plan allocates once, in stream order on the first such call, and keeps.
  /// Per rank: ring and all-gather ranks make different kernel calls (windows, causal chunks), so
  /// each rank allocates what its own plan asks.
  virtual std::size_t workspace_bytes() const = 0;
  /// What training keeps from forward to backward (0 when !training).
  virtual std::size_t saved_bytes() const = 0;
  /// Memory the plan holds now on the communicator's device outside the caller's workspace and
  /// saved buffers: Ulysses' one-rank copy buffers once a call with unaligned views needed them
  /// (see workspace_bytes()); 0 otherwise. Not its kernel's (LocalAttention::held_bytes(); a
  /// kernel may serve several plans) nor the communicator's (NCCL's own buffers).
  virtual std::size_t held_bytes() const { return 0; }
  /// Frees what held_bytes() counts, in stream order on `stream` (after the plan's calls enqueued
  /// there); a later call that needs them allocates them again. Rank-local: not collective.
  virtual Status release_held(Stream stream) {
    (void)stream;
    return Status::ok();
  }

  /// Enqueues forward on `stream`. Inputs may be reused once the stream reaches this point.
  virtual Status forward(const ForwardArgs& args, Stream stream) = 0;
  /// Enqueues backward on `stream`; needs the `saved` buffer of the matching forward (consumed
  /// unless PlanConfig::backward_keeps_saved).
  virtual Status backward(const BackwardArgs& args, Stream stream) = 0;
};

}  // namespace ulysses
