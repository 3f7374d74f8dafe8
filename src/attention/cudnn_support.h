// ulysses: what the cuDNN backend's SDPA graphs take, by cuDNN version and GPU architecture. Host
// code (no cuDNN call), so the CPU tests cover every version and architecture; CudnnAttention's
// check_support() is these rules applied to the running cuDNN and its device.
#pragma once

#include <cstdint>

#include "ulysses/attention.h"

namespace ulysses::detail {

/// The cuDNN library and GPU a call runs on.
struct CudnnTarget {
  int version = 0;   // cudnnGetVersion(): major * 10000 + minor * 100 + patch (9.19.0: 91900)
  int cc_major = 0;  // compute capability major: 8 Ampere/Ada, 9 Hopper, 10+ Blackwell
};

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
/// (max_total_seq_len). Its SDPA backward node drops that count before cuDNN 9.6, for head_dim not
/// a multiple of 16, and from cuDNN 9.18.1 on compute capability 8.x and 12.x ("a known functional
/// issue"), and then sizes them as dense tensors of the graph's dims: padded batch x longest
/// sequence rows.
bool cudnn_packed_workspace_follows_tokens(int head_dim, CudnnTarget target);

}  // namespace ulysses::detail
