#include "parallel/head_routing.h"

#include <string>

#include "common/check.h"

namespace ulysses::parallel {
namespace {

// Whether a group of `group` ranks routes the heads (evenly, or split unevenly below Hkv).
bool routes(const AttentionConfig& c, int group) {
  return c.num_heads_kv >= group || (group % c.num_heads_kv == 0 && c.num_heads_q % group == 0);
}

// What takes these heads on these cp ranks when a Ulysses group of `group` ranks cannot: every
// strategy without a head constraint, and the largest hybrid (a Ulysses group below cp) that
// routes them.
std::string alternatives(const AttentionConfig& c, const ParallelConfig& parallel, int group) {
  int degree = 0;
  for (int u = parallel.cp / 2; u > 1 && degree == 0; --u) {
    if (parallel.cp % u == 0 && u != group && routes(c, u)) degree = u;
  }
  return detail::str_cat("; strategy allgather or ring takes any head count",
                         degree > 0
                             ? detail::str_cat(", and so does hybrid with ulysses_degree ", degree,
                                               " (", parallel.cp / degree, "-rank rings)")
                             : std::string());
}

}  // namespace

Result<HeadRouting> HeadRouting::create(const AttentionConfig& c, const ParallelConfig& parallel,
                                        std::string_view api) {
  using detail::arg_error;
  using detail::str_cat;
  const int cp = parallel.ulysses_size();
  const std::string_view group = parallel.strategy == Strategy::kHybrid ? "ulysses_degree " : "cp ";
  const int ratio = c.num_heads_q / c.num_heads_kv;
  HeadRouting r;
  r.cp = cp;
  if (c.num_heads_kv >= cp) {
    // Whole query groups: the first Hkv mod P ranks take one KV head more (none when P | Hkv).
    const int base = c.num_heads_kv / cp, extra = c.num_heads_kv % cp;
    r.heads_kv_local = base + (extra > 0 ? 1 : 0);
    int next = 0;
    for (int rank = 0; rank < cp; ++rank) {
      const int kv = base + (rank < extra ? 1 : 0);
      r.kv_begin.push_back(next);
      r.kv_heads.push_back(kv);
      r.q_begin.push_back(next * ratio);
      r.q_heads.push_back(kv * ratio);
      next += kv;
    }
    r.heads_q_local = r.heads_kv_local * ratio;
    return r;
  }
  if (cp % c.num_heads_kv != 0) {
    const Status s = arg_error(
        api, "num_heads_kv",
        str_cat("cannot be routed over ", group, cp, " ranks (num_heads_q ", c.num_heads_q,
                "): ", group, cp,
                " must divide num_heads_kv or be a multiple of it (or, split unevenly, be below "
                "it)"),
        c.num_heads_kv, str_cat("a divisor or multiple of ", cp, ", or above ", cp));
    return invalid_argument(str_cat(s.message(), alternatives(c, parallel, cp)));
  }
  if (c.num_heads_q % cp != 0) {
    const Status s = arg_error(api, "num_heads_q",
                               str_cat("must be divisible by ", group, cp, " when ", cp,
                                       " ranks share num_heads_kv ", c.num_heads_kv, " KV heads"),
                               c.num_heads_q, str_cat("a multiple of ", cp));
    return invalid_argument(str_cat(s.message(), alternatives(c, parallel, cp)));
  }
  r.heads_q_local = c.num_heads_q / cp;
  r.heads_kv_local = 1;
  r.kv_replicas = cp / c.num_heads_kv;
  for (int rank = 0; rank < cp; ++rank) {
    r.q_begin.push_back(rank * r.heads_q_local);
    r.q_heads.push_back(r.heads_q_local);
    r.kv_begin.push_back(rank / r.kv_replicas);
    r.kv_heads.push_back(1);
  }
  return r;
}

}  // namespace ulysses::parallel
