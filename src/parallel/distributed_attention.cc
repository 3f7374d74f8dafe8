// DistributedAttention::create(): validation, cross-rank agreement and dispatch by strategy.
#include <algorithm>
#include <optional>

#include "common/check.h"
#include "parallel/head_routing.h"
#include "parallel/plan_common.h"
#include "parallel/plans.h"
#include "ulysses/attention.h"

namespace ulysses {

using detail::arg_error;
using detail::str_cat;

std::string_view saved_activations_name(SavedActivations saved) {
  switch (saved) {
    case SavedActivations::kHeadSharded:
      return "heads";
    case SavedActivations::kLseOnly:
      return "lse";
  }
  return "unknown";
}

Result<SavedActivations> parse_saved_activations(std::string_view name) {
  if (name == "heads") return SavedActivations::kHeadSharded;
  if (name == "lse") return SavedActivations::kLseOnly;
  return arg_error("ulysses::parse_saved_activations", "saved_activations", "is not known", name,
                   "heads or lse");
}

std::string_view payload_name(Payload payload) {
  switch (payload) {
    case Payload::kNative:
      return "native";
    case Payload::kFp8:
      return "fp8";
  }
  return "unknown";
}

Result<Payload> parse_payload(std::string_view name) {
  if (name == "native") return Payload::kNative;
  if (name == "fp8") return Payload::kFp8;
  return arg_error("ulysses::parse_payload", "payload", "is not known", name, "native or fp8");
}

Status PlanConfig::validate() const {
  constexpr std::string_view api = "ulysses::PlanConfig";
  ULYSSES_RETURN_IF_ERROR(attention.validate());
  ULYSSES_RETURN_IF_ERROR(parallel.validate());
  if (batch < 1) return arg_error(api, "batch", "must be positive", batch, ">= 1");
  if (layout == Layout::kTHD && batch != 1) {
    return arg_error(api, "batch", "must be 1 for layout thd (packed sequences)", batch, "1");
  }
  if (seqlen < 1) return arg_error(api, "seqlen", "must be positive", seqlen, ">= 1");
  const std::int64_t widest = std::max(attention.head_dim, attention.value_dim());
  const int heads = std::max(attention.num_heads_q, attention.num_heads_kv);
  if (const auto over =
          detail::product_over({batch, seqlen, heads, widest}, detail::kMaxTensorElements)) {
    return arg_error(
        api, "batch * seqlen * num_heads_q * max(head_dim, head_dim_v)", "is too large", *over,
        str_cat("at most 2^48 = ", detail::kMaxTensorElements, " elements per tensor"));
  }
  const int multiple = parallel.sequence_multiple();
  if (seqlen % multiple != 0) {
    return arg_error(
        api, "seqlen",
        str_cat("must be divisible by ", multiple == parallel.cp ? "cp " : "2 cp = ", multiple,
                parallel.strategy != Strategy::kUlysses ? " (zigzag chunks for ring)" : "",
                layout == Layout::kTHD ? " (pad the packed batch: padded_token_count())" : ""),
        seqlen, str_cat("a multiple of ", multiple));
  }
  ULYSSES_ASSIGN_OR_RETURN(auto routing, parallel::HeadRouting::create(attention, parallel, api));
  if (overlap_chunks < 1) {
    return arg_error(api, "overlap_chunks", "must be positive", overlap_chunks,
                     ">= 1 (1: no overlap)");
  }
  if (overlap_chunks > 1 && parallel.strategy != Strategy::kUlysses) {
    return arg_error(api, "overlap_chunks",
                     str_cat("is for strategy ulysses (ring overlaps by itself; got strategy ",
                             strategy_name(parallel.strategy), ")"),
                     overlap_chunks, "1");
  }
  // Chunks split each rank's KV heads (with their query groups): every chunk of every rank needs
  // one, so at most the fewest KV heads a rank owns (not a divisor: chunks may differ by one).
  const int fewest = routing.kv_heads.back();
  if (overlap_chunks > 1 && (routing.replicated() || overlap_chunks > fewest)) {
    return arg_error(
        api, "overlap_chunks",
        routing.replicated()
            ? str_cat("must be 1 when ranks share key/value heads (cp ", parallel.cp,
                      " > num_heads_kv ", attention.num_heads_kv, ")")
            : str_cat("cannot exceed the key/value heads per rank (",
                      routing.uneven() ? str_cat("the fewest, ", fewest) : str_cat(fewest),
                      ": num_heads_kv ", attention.num_heads_kv, " over cp ", parallel.cp, ")"),
        overlap_chunks, routing.replicated() ? std::string("1") : str_cat("1 to ", fewest));
  }
  if (saved_activations != SavedActivations::kHeadSharded &&
      saved_activations != SavedActivations::kLseOnly) {
    return arg_error(api, "saved_activations", "is not a SavedActivations value",
                     static_cast<int>(saved_activations), "kHeadSharded (0) or kLseOnly (1)");
  }
  if (chunks_in_flight < 1 || chunks_in_flight > 2) {
    return arg_error(api, "chunks_in_flight", "is out of range", chunks_in_flight,
                     "1 (one head chunk at a time) or 2 (double-buffered)");
  }
  if (payload != Payload::kNative && payload != Payload::kFp8) {
    return arg_error(api, "payload", "is not a Payload value", static_cast<int>(payload),
                     "kNative (0) or kFp8 (1)");
  }
  if (payload == Payload::kFp8 && (dtype == DType::kFloat8E4M3 || dtype == DType::kFloat8E5M2)) {
    return arg_error(api, "payload", "fp8 needs activations wider than fp8 (dtype)",
                     dtype_name(dtype), "native, or dtype bf16, fp16, fp32 or fp64");
  }
  return Status::ok();
}

Status DistributedAttention::check_support(const PlanConfig& config, const Communicator& comm,
                                           const LocalAttention& kernel) {
  ULYSSES_RETURN_IF_ERROR(config.validate());
  if (comm.size() != config.parallel.cp) {
    return arg_error(parallel::kCreateApi, "parallel.cp", "differs from the communicator size",
                     config.parallel.cp, str_cat(comm.size(), " (comm.size())"));
  }
  if (kernel.device() != comm.device()) {
    return arg_error(parallel::kCreateApi, "kernel", "runs on another device than the communicator",
                     str_cat(kernel.name(), " on ", kernel.device().to_string()),
                     comm.device().to_string());
  }
  if (config.payload == Payload::kFp8 && !comm.device().is_host() &&
      config.dtype != DType::kBFloat16 && config.dtype != DType::kFloat16 &&
      config.dtype != DType::kFloat32) {
    return unsupported(str_cat(
        "ulysses::DistributedAttention::create: payload fp8 on a device needs dtype bf16, fp16 or "
        "fp32 (got ",
        dtype_name(config.dtype), ")"));
  }
  // Every strategy's own rules hold at cp = 1 too, also where its config runs as Ulysses.
  if (config.parallel.strategy == Strategy::kAllGather) {
    ULYSSES_RETURN_IF_ERROR(parallel::allgather_check_support(config, comm, kernel));
  } else if (config.parallel.strategy != Strategy::kUlysses) {
    ULYSSES_RETURN_IF_ERROR(parallel::ring_check_support(config, comm, kernel));
  }
  const std::optional<PlanConfig> as_ulysses = parallel::one_rank_as_ulysses(config);
  const PlanConfig& ulysses = as_ulysses ? *as_ulysses : config;
  if (ulysses.parallel.strategy != Strategy::kUlysses) return Status::ok();
  ULYSSES_ASSIGN_OR_RETURN(
      auto routing,
      parallel::HeadRouting::create(ulysses.attention, ulysses.parallel, parallel::kCreateApi));
  return kernel.check_support(parallel::ulysses_local_problem(ulysses, routing, comm.rank()));
}

Result<std::unique_ptr<DistributedAttention>> DistributedAttention::create(const PlanConfig& config,
                                                                           Communicator& comm,
                                                                           LocalAttention& kernel) {
  const Status local = check_support(config, comm, kernel);
  ULYSSES_RETURN_IF_ERROR(parallel::agree_on_config(config, comm, local));
  // Connections now, so that the first step allocates and connects nothing.
  ULYSSES_RETURN_IF_ERROR(comm.warm_up());
  if (const std::optional<PlanConfig> as_ulysses = parallel::one_rank_as_ulysses(config)) {
    return parallel::create_ulysses_plan(*as_ulysses, comm, kernel, &config);
  }
  if (config.parallel.strategy == Strategy::kAllGather) {
    return parallel::create_allgather_plan(config, comm, kernel);
  }
  if (config.parallel.strategy != Strategy::kUlysses) {
    return parallel::create_ring_plan(config, comm, kernel);
  }
  return parallel::create_ulysses_plan(config, comm, kernel);
}

}  // namespace ulysses
