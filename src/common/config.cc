#include "ulysses/config.h"

#include <cmath>

#include "common/check.h"

namespace ulysses {

using detail::arg_error;
using detail::str_cat;

float AttentionConfig::scale() const {
  if (softmax_scale.has_value()) return *softmax_scale;
  return head_dim > 0 ? 1.0f / std::sqrt(static_cast<float>(head_dim)) : 0.0f;
}

Status AttentionConfig::validate() const {
  constexpr std::string_view kApi = "ulysses::AttentionConfig";
  if (num_heads_q < 1) {
    return arg_error(kApi, "num_heads_q", "must be positive", num_heads_q, ">= 1");
  }
  if (num_heads_kv < 1) {
    return arg_error(kApi, "num_heads_kv", "must be positive", num_heads_kv, ">= 1");
  }
  if (num_heads_q > kMaxHeads) {
    return arg_error(kApi, "num_heads_q", "is out of range", num_heads_q,
                     str_cat("1..", kMaxHeads));
  }
  if (num_heads_q % num_heads_kv != 0) {
    return arg_error(kApi, "num_heads_q",
                     str_cat("must be a multiple of num_heads_kv ", num_heads_kv), num_heads_q,
                     str_cat("a multiple of ", num_heads_kv));
  }
  if (head_dim < 1 || head_dim > kMaxHeadDim) {
    return arg_error(kApi, "head_dim", "is out of range", head_dim, str_cat("1..", kMaxHeadDim));
  }
  if (head_dim_v < 0 || head_dim_v > kMaxHeadDim) {
    return arg_error(kApi, "head_dim_v", "is out of range", head_dim_v,
                     str_cat("0 (head_dim) or 1..", kMaxHeadDim));
  }
  if (softmax_scale.has_value() && !(std::isfinite(*softmax_scale) && *softmax_scale > 0.0f)) {
    return arg_error(kApi, "softmax_scale", "must be finite and positive", *softmax_scale, "> 0");
  }
  if (window_left < -1) {
    return arg_error(kApi, "window_left", "is below -1", window_left, "-1 (unbounded) or >= 0");
  }
  if (window_right < -1) {
    return arg_error(kApi, "window_right", "is below -1", window_right, "-1 (unbounded) or >= 0");
  }
  if (causal && window_right > 0) {
    return arg_error(kApi, "window_right", "contradicts causal = true", window_right,
                     "-1 or 0 when causal");
  }
  return Status::ok();
}

std::string_view strategy_name(Strategy strategy) {
  switch (strategy) {
    case Strategy::kUlysses:
      return "ulysses";
    case Strategy::kRing:
      return "ring";
    case Strategy::kHybrid:
      return "hybrid";
    case Strategy::kAllGather:
      return "allgather";
  }
  return "unknown";
}

Result<Strategy> parse_strategy(std::string_view name) {
  if (name == "ulysses") return Strategy::kUlysses;
  if (name == "ring") return Strategy::kRing;
  if (name == "hybrid") return Strategy::kHybrid;
  if (name == "allgather") return Strategy::kAllGather;
  return arg_error("ulysses::parse_strategy", "strategy", "is not known", name,
                   "ulysses, ring, hybrid or allgather");
}

std::string_view packed_sharding_name(PackedSharding sharding) {
  switch (sharding) {
    case PackedSharding::kDefault:
      return "default";
    case PackedSharding::kPerSequence:
      return "per_sequence";
    case PackedSharding::kStream:
      return "stream";
  }
  return "unknown";
}

Result<PackedSharding> parse_packed_sharding(std::string_view name) {
  if (name == "default") return PackedSharding::kDefault;
  if (name == "per_sequence" || name == "per-sequence") return PackedSharding::kPerSequence;
  if (name == "stream") return PackedSharding::kStream;
  return arg_error("ulysses::parse_packed_sharding", "packed_sharding", "is not known", name,
                   "default, per_sequence or stream");
}

bool ParallelConfig::packed_per_sequence() const {
  return (strategy == Strategy::kRing || strategy == Strategy::kHybrid) &&
         packed_sharding != PackedSharding::kStream;
}

int ParallelConfig::ulysses_size() const {
  switch (strategy) {
    case Strategy::kRing:
    case Strategy::kAllGather:
      return 1;
    case Strategy::kHybrid:
      return ulysses_degree >= 1 ? ulysses_degree : 1;
    case Strategy::kUlysses:
      break;
  }
  return cp >= 1 ? cp : 1;
}

int ParallelConfig::sequence_multiple() const {
  return strategy == Strategy::kUlysses ? cp : 2 * cp;
}

Status ParallelConfig::validate() const {
  constexpr std::string_view kApi = "ulysses::ParallelConfig";
  if (cp < 1) return arg_error(kApi, "cp", "must be positive", cp, ">= 1");
  if (strategy != Strategy::kUlysses && strategy != Strategy::kRing &&
      strategy != Strategy::kHybrid && strategy != Strategy::kAllGather) {
    return arg_error(kApi, "strategy", "is not known", static_cast<int>(strategy),
                     "ulysses, ring, hybrid or allgather");
  }
  if (strategy == Strategy::kHybrid) {
    if (ulysses_degree < 1 || cp % ulysses_degree != 0) {
      return arg_error(kApi, "ulysses_degree", str_cat("must divide cp ", cp, " for hybrid"),
                       ulysses_degree, str_cat("a divisor of ", cp));
    }
  } else if (ulysses_degree != 0) {
    return arg_error(
        kApi, "ulysses_degree",
        str_cat("is only for strategy hybrid (got strategy ", strategy_name(strategy), ")"),
        ulysses_degree, "0");
  }
  if (packed_sharding != PackedSharding::kDefault &&
      packed_sharding != PackedSharding::kPerSequence &&
      packed_sharding != PackedSharding::kStream) {
    return arg_error(kApi, "packed_sharding", "is not known", static_cast<int>(packed_sharding),
                     "default, per_sequence or stream");
  }
  if (packed_sharding == PackedSharding::kPerSequence &&
      (strategy == Strategy::kUlysses || strategy == Strategy::kAllGather)) {
    return arg_error(kApi, "packed_sharding",
                     str_cat("is only for strategies ring and hybrid (got strategy ",
                             strategy_name(strategy), ", which shards the packed stream)"),
                     "per_sequence", "default or stream");
  }
  return Status::ok();
}

}  // namespace ulysses
