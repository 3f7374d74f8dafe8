// ulysses: validation of LocalProblem and the views passed to LocalAttention kernels, shared by
// every backend so that all kernels reject the same bad input with the same message.
#pragma once

#include <string_view>

#include "ulysses/attention.h"

namespace ulysses::detail {

/// Checks problem fields (heads, slices, batch, seqlen, grad_kv_dtype) against its config.
Status check_local_problem(const LocalProblem& problem, std::string_view api);

/// Checks every view of a forward call: ranks, shapes, dtypes, devices, head_dim contiguity,
/// cu_seqlens (when varlen). `require_lse`: the lse view must be present.
Status check_local_forward_args(const LocalProblem& problem, const LocalForwardArgs& args,
                                Device device, std::string_view api);
Status check_local_backward_args(const LocalProblem& problem, const LocalBackwardArgs& args,
                                 Device device, bool needs_o_lse, std::string_view api);

/// Checks that `view` is [d0, d1, d2, d3] (ndim 4), `dtype`, on `device`, non-null, with stride 1
/// in the last dim and non-negative strides. `name` is used in the message.
Status check_view(const TensorView& view, std::string_view name,
                  std::initializer_list<std::int64_t> shape, DType dtype, Device device,
                  bool last_dim_contiguous, std::string_view api);

}  // namespace ulysses::detail
