#include "parallel/head_routing.h"

#include "common/check.h"

namespace ulysses::parallel {

Result<HeadRouting> HeadRouting::create(const AttentionConfig& c, int cp, std::string_view api) {
  using detail::arg_error;
  using detail::str_cat;
  if (c.num_heads_q % cp != 0) {
    return arg_error(api, "num_heads_q", str_cat("must be divisible by cp ", cp), c.num_heads_q,
                     str_cat("a multiple of ", cp));
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
    return arg_error(api, "num_heads_kv",
                     str_cat("cannot be routed over cp ", cp, " ranks (num_heads_q ", c.num_heads_q,
                             "): cp must divide num_heads_kv or be a multiple of it"),
                     c.num_heads_kv, str_cat("a divisor or multiple of cp ", cp));
  }
  for (int rank = 0; rank < cp; ++rank) {
    r.q_begin.push_back(rank * r.heads_q_local);
    r.kv_begin.push_back(r.replicated() ? rank / r.kv_replicas : rank * r.heads_kv_local);
  }
  return r;
}

}  // namespace ulysses::parallel
