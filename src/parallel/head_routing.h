// ulysses: which heads each rank of a Ulysses group owns after the sequence->heads all-to-all.
//
// Query heads are split evenly: rank r owns [r * Hq/P, (r + 1) * Hq/P).
// Key/value heads (GQA: query head h uses KV head h / (Hq / Hkv)):
//
//   P divides Hkv       rank r owns KV heads [r * Hkv/P, (r + 1) * Hkv/P): exactly the ones its
//   query
//                       heads use. Hq=8, Hkv=4, P=2:  r0: q 0-3, kv 0-1 | r1: q 4-7, kv 2-3
//
//   P is a multiple     rank r gets the one KV head its query heads use, g = r / (P / Hkv); the
//   of Hkv (P > Hkv)    P / Hkv ranks that share g each receive a copy in forward, and backward
//   sums
//                       their partial dK/dV (fp32, in rank order).
//                       Hq=8, Hkv=2, P=4: r0: q 0-1, kv 0 | r1: q 2-3, kv 0 | r2: q 4-5, kv 1 | ...
//
// Anything else cannot be routed without splitting a KV head's query group unevenly:
// InvalidArgument, naming what takes those heads instead (all-gather and ring take any head
// count; a hybrid whose Ulysses groups are small enough to route them).
#pragma once

#include <string_view>
#include <vector>

#include "ulysses/config.h"
#include "ulysses/status.h"

namespace ulysses::parallel {

struct HeadRouting {
  int cp = 1;
  int heads_q_local = 0;      // Hq / P
  int heads_kv_local = 0;     // Hkv / P, or 1 when replicated
  int kv_replicas = 1;        // ranks sharing one KV head (P / Hkv when P > Hkv)
  std::vector<int> q_begin;   // [P] first query head of each rank
  std::vector<int> kv_begin;  // [P] first KV head of each rank

  bool replicated() const { return kv_replicas > 1; }

  /// The routing over the Ulysses groups of `parallel` (ulysses_size() ranks: cp for Ulysses,
  /// ulysses_degree for hybrid).
  static Result<HeadRouting> create(const AttentionConfig& config, const ParallelConfig& parallel,
                                    std::string_view api);
};

}  // namespace ulysses::parallel
