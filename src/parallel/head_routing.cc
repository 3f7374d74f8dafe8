#include "parallel/head_routing.h"

#include <string>

#include "common/check.h"

namespace ulysses::parallel {
namespace {

bool routes(const AttentionConfig& c, int group) {
  return c.num_heads_q % group == 0 && (c.num_heads_kv % group == 0 || group % c.num_heads_kv == 0);
}

// What takes these heads on these cp ranks when a Ulysses group of `group` ranks cannot: every
// strategy without a head constraint, and the largest hybrid (a Ulysses group below cp) that
// routes them. (A group routes whatever a larger group it divides routes.)
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
  if (c.num_heads_q % cp != 0) {
    const Status s = arg_error(api, "num_heads_q", str_cat("must be divisible by ", group, cp),
                               c.num_heads_q, str_cat("a multiple of ", cp));
    return invalid_argument(str_cat(s.message(), alternatives(c, parallel, cp)));
  }
  HeadRouting r;
  r.cp = cp;
  r.heads_q_local = c.num_heads_q / cp;
  if (c.num_heads_kv % cp == 0) {
    r.heads_kv_local = c.num_heads_kv / cp;
  } else if (cp % c.num_heads_kv == 0) {
    r.heads_kv_local = 1;
    r.kv_replicas = cp / c.num_heads_kv;
  } else {
    const Status s = arg_error(
        api, "num_heads_kv",
        str_cat("cannot be routed over ", group, cp, " ranks (num_heads_q ", c.num_heads_q,
                "): ", group, cp, " must divide num_heads_kv or be a multiple of it"),
        c.num_heads_kv, str_cat("a divisor or multiple of ", cp));
    return invalid_argument(str_cat(s.message(), alternatives(c, parallel, cp)));
  }
  for (int rank = 0; rank < cp; ++rank) {
    r.q_begin.push_back(rank * r.heads_q_local);
    r.kv_begin.push_back(r.replicated() ? rank / r.kv_replicas : rank * r.heads_kv_local);
  }
  return r;
}

}  // namespace ulysses::parallel
