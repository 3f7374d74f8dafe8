// ulysses: which heads each rank of a Ulysses group owns after the sequence->heads all-to-all.
//
// Key/value heads decide (GQA: query head h uses KV head h / (Hq / Hkv)); every rank takes whole
// query groups, the query heads of its KV heads:
//
//   P divides Hkv       rank r owns KV heads [r * Hkv/P, (r + 1) * Hkv/P): exactly the ones its
//                       query heads use. Hq=8, Hkv=4, P=2:  r0: q 0-3, kv 0-1 | r1: q 4-7, kv 2-3
//
//   P is a multiple     rank r gets the one KV head its query heads use, g = r / (P / Hkv); the
//   of Hkv (P > Hkv)    P / Hkv ranks that share g each receive a copy in forward, and backward
//   and divides Hq      sums their partial dK/dV (fp32, in rank order).
//                       Hq=8, Hkv=2, P=4: r0: q 0-1, kv 0 | r1: q 2-3, kv 0 | r2: q 4-5, kv 1 | ...
//
//   P < Hkv, P does     uneven: the first Hkv mod P ranks of the group own
//   not divide Hkv      ceil(Hkv / P) KV heads, the others floor(Hkv / P), each with its query
//                       group. Hq=Hkv=12, P=8: r0-r3: 2 heads | r4-r7: 1 head. heads_q_local
//                       and heads_kv_local are then the busiest rank's (ceil), which size the
//                       per-peer regions of messages (docs/DESIGN.md, "Uneven heads").
//
// Anything else cannot be routed without splitting a KV head's query group unevenly:
// InvalidArgument, naming what takes those heads instead (all-gather and ring take any head
// count; a hybrid whose Ulysses groups are small enough to route them).
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

#include "ulysses/config.h"
#include "ulysses/status.h"

namespace ulysses::parallel {

struct HeadRouting {
  int cp = 1;
  int heads_q_local = 0;      // query heads per rank: Hq / P (uneven: the most, ceil)
  int heads_kv_local = 0;     // KV heads per rank: Hkv / P (uneven: ceil), 1 when replicated
  int kv_replicas = 1;        // ranks sharing one KV head (P / Hkv when P > Hkv)
  std::vector<int> q_begin;   // [P] first query head of each rank
  std::vector<int> kv_begin;  // [P] first KV head of each rank
  std::vector<int> q_heads;   // [P] query heads each rank owns (<= heads_q_local)
  std::vector<int> kv_heads;  // [P] KV heads each rank owns (<= heads_kv_local)

  bool replicated() const { return kv_replicas > 1; }
  /// Whether ranks own different head counts (P < Hkv, P not dividing Hkv).
  bool uneven() const { return kv_heads.back() != heads_kv_local; }
  int q_heads_of(int rank) const { return q_heads[static_cast<std::size_t>(rank)]; }
  int kv_heads_of(int rank) const { return kv_heads[static_cast<std::size_t>(rank)]; }

  /// The routing over the Ulysses groups of `parallel` (ulysses_size() ranks: cp for Ulysses,
  /// ulysses_degree for hybrid, whose ring peers share a group position and so its heads).
  static Result<HeadRouting> create(const AttentionConfig& config, const ParallelConfig& parallel,
                                    std::string_view api);
};

}  // namespace ulysses::parallel
