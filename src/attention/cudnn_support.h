// ulysses: what the cuDNN backend's SDPA graphs take, by cuDNN version and GPU architecture. Host
// code (no cuDNN call), so the CPU tests cover every version and architecture; CudnnAttention's
// check_support() is these rules applied to the running cuDNN and its device.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "ulysses/attention.h"

namespace ulysses::detail {

/// The cuDNN library and GPU a call runs on.
struct CudnnTarget {
  int version = 0;   // cudnnGetVersion(): major * 10000 + minor * 100 + patch (9.19.0: 91900)
  int cc_major = 0;  // compute capability major: 8 Ampere/Ada, 9 Hopper, 10+ Blackwell
};

/// LocalAttention::name() of the cuDNN backend (create_cudnn_attention).
inline constexpr std::string_view kCudnnKernelName = "cudnn-sdpa";

/// Elements of a view cuDNN 9.19's backward addresses correctly from its base: past it, K (for dQ)
/// and O, dO (for rowsum(dO * O)) are read with 32-bit offsets, and dQ, dK came out wrong.
inline constexpr std::int64_t kCudnnIndexLimit = std::int64_t{1} << 31;

/// cuDNN's diagonal band for the problem's masks (top-left aligned, or bottom-right when
/// LocalProblem::bottom_right): keys j of query i with i - left < j <= i + right are visible.
/// Causal is right 0, window_left w is left w + 1, window_right w is right w; diagonal_offset d
/// shifts both (right + d, left - d). `ok`: cuDNN can express it (right >= 0, left >= 1).
struct CudnnBand {
  bool has_right = false, has_left = false, ok = true;
  std::int64_t right = 0, left = 0;
};
CudnnBand cudnn_band(const LocalProblem& problem);

/// cuDNN 9.19's backward under a window that is not causal (a right bound past the diagonal)
/// computes every tile of the call, masked or not: 32k rows under window 128,128 took 83 ms
/// against 0.58 ms forward, the cost of no mask at all (1x H200, docs/PERF.md, "Windows without
/// causal"); under a causal diagonal it skips them. So such a backward at diagonal offset 0 runs as
/// bands, the long ones ending at a causal diagonal. For query rows i of Sq, key rows of Skv
/// (a dense call: Sq = Skv = S; packed: each sequence's), windows wl, wr >= 1,
/// t = max(0, min(Sq, Skv - wr)):
///   lower  keys [i - wl, i]            every row: causal, window_left wl (-1: none);
///   upper  keys [max(i + 1, wr), i + wr]   rows [0, t) against key rows [wr, wr + t): causal,
///                                      window_left wr - 1;
///   head   keys (i, wr)                rows [0, min(t, wr - 1)) against key rows [1, wr);
///   tail   keys (i, Skv)               rows [t, min(Sq, Skv - 1)) against key rows [t + 1, Skv);
/// head and tail (fewer than wr rows each) with window_left 0 and no right bound, every tile
/// computed;
/// each on the given O and LSE (partial_keys) with fp32 dQ, dK, dV (cuDNN writes each band's part
/// in the I/O dtype; the backend adds the parts in fp32, rounds the sums, and takes dSinks from
/// kernels::sink_grad). Together they hold each visible pair once.
struct CausalBand {
  enum Kind { kLower, kUpper, kHead, kTail };
  Kind kind = kLower;
  LocalProblem problem;
  std::int64_t q0 = 0, kv0 = 0;  // dense: the band's first query and key row in the call's views
  /// Packed: the band's pieces of the call's sequences (causal_bands(problem, seqs)) as
  /// VarlenRows, four rows of n values: q_begin, q_len, kv_begin, kv_len.
  std::vector<std::int32_t> rows;
};
/// Dense: the bands, for a call with as many key as query rows. Packed (cu_seqlens, or VarlenRows
/// top-left): the four bands' problems (VarlenRows), their rows left to the overload below with
/// each call's sequences. Empty for any other problem (causal, no right window, an offset,
/// bottom-right, a forward-only one): the backward runs whole.
std::vector<CausalBand> causal_bands(const LocalProblem& problem);

/// A packed call's bands for its sequences `seqs` (cu_seqlens as VarlenRows with equal query and
/// key rows; host spans): each band holds the pieces of the sequences that have rows in it, `rows`
/// set; a band other than the first (every sequence with query and key rows) left with none is
/// dropped. Dense: causal_bands(problem).
std::vector<CausalBand> causal_bands(const LocalProblem& problem, const VarlenRows& seqs);

/// Unsupported naming the feature, the version or GPU that lacks it, and what works instead; OK
/// when the forward graph can be built. Checks the problem itself first (check_local_problem).
Status cudnn_forward_support(const LocalProblem& problem, CudnnTarget target);

/// The same for the backward graph (on top of the forward's): packed batches with head_dim past 128
/// (9.19), head_dim past 128 before Hopper, and dense shapes that no split into parts of at most
/// kCudnnIndexLimit elements of K, O and dO fits (dense_parts()). Sinks need no version: cuDNN
/// never sees them (forward folds them in, dSinks come from kernels::sink_grad).
Status cudnn_backward_support(const LocalProblem& problem, CudnnTarget target);

/// Unsupported for a backward that no split fits, from dense_parts()' or ragged_groups()' error.
Status cudnn_past_index_limit(const Status& split, CudnnTarget target);

/// Whether cudnn-frontend (1.32, the pinned version) sizes a packed backward's fp32 workspace
/// tensors (dQ accumulator, GQA's full-head dK/dV partials, softmax sums) by the packed tokens
/// (max_total_seq_len). Its SDPA backward node drops that count before cuDNN 9.6, for head_dim or
/// head_dim_v not a multiple of 16, and from cuDNN 9.18.1 on compute capability 8.x and 12.x ("a
/// known functional issue"), and then sizes them as dense tensors of the graph's dims: padded
/// batch x longest sequence rows.
bool cudnn_packed_workspace_follows_tokens(int head_dim, int head_dim_v, CudnnTarget target);

}  // namespace ulysses::detail
