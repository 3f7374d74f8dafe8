// ulysses: the FP64 host reference attention.
//
// The truth every kernel and every parallel algorithm is checked against: inputs of any dtype are
// read as FP64, all arithmetic is FP64, outputs are rounded once to their dtype (LSE: fp32, natural
// log). It implements LocalAttention, so it also runs under DistributedAttention on the loopback
// communicator.
//
// Semantics (also those every backend must match):
//  - softmax over the keys a query may see (AttentionConfig masks in sequence positions), plus
//  exp(sink[h])
//    in the denominator when sinks are on;
//  - a row that sees no key: O = 0, LSE = -inf (or LSE = sink[h] with sinks), gradients finite
//  (zero);
//  - packed batches: no attention across sequences; positions past cu_seqlens.back() are padding
//  with
//    O, dQ, dK, dV exactly 0 and LSE = -inf;
//  - GQA/MQA: query head h uses key/value head h / (num_heads_q / num_heads_kv).
//
// Cost: O(batch * heads * seqlen^2 * head_dim) on one host thread; meant for checks, not for speed.
//
// Host-only header: no CUDA, NCCL or cuDNN include.
#pragma once

#include <memory>

#include "ulysses/attention.h"

namespace ulysses {

/// The FP64 reference as a LocalAttention (host memory; provides LSE; supports backward).
std::unique_ptr<LocalAttention> make_reference_attention();

/// Convenience wrappers that run the reference directly.
Status reference_forward(const LocalProblem& problem, const LocalForwardArgs& args);
Status reference_backward(const LocalProblem& problem, const LocalBackwardArgs& args);

}  // namespace ulysses
