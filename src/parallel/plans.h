// ulysses: the plan implementations behind DistributedAttention::create(), one per strategy.
#pragma once

#include <memory>
#include <optional>

#include "parallel/head_routing.h"
#include "ulysses/attention.h"

namespace ulysses::parallel {

/// Ulysses (ulysses_attention.cc): the kernel problem of `rank` after the all-to-all.
LocalProblem ulysses_local_problem(const PlanConfig& config, const HeadRouting& routing, int rank);
/// `reported`: what the plan's config() returns, when it runs another strategy's config (see
/// one_rank_as_ulysses()); null: `config`.
Result<std::unique_ptr<DistributedAttention>> create_ulysses_plan(
    const PlanConfig& config, Communicator& comm, LocalAttention& kernel,
    const PlanConfig* reported = nullptr);

/// cp = 1: nothing travels under any strategy, and every strategy computes the same attention.
/// Ulysses' one-rank plan runs the kernel on the caller's views (docs/DESIGN.md, "One rank"), so
/// ring, hybrid and all-gather configs run it where their arguments mean the same: native payload
/// (fp8 rounds other tensors under each strategy) and, for ring and hybrid, no packed batch sharded
/// per sequence (its sequences sit at padded offsets). Returns the config to run, or nothing.
std::optional<PlanConfig> one_rank_as_ulysses(const PlanConfig& config);

/// Ring and hybrid (ring_attention.cc). check: what only ring needs of the config and kernel
/// (rank-local, no communication).
Status ring_check_support(const PlanConfig& config, const Communicator& comm,
                          const LocalAttention& kernel);
Result<std::unique_ptr<DistributedAttention>> create_ring_plan(const PlanConfig& config,
                                                               Communicator& comm,
                                                               LocalAttention& kernel);

/// All-gather (allgather_attention.cc). check: what only it needs of the config and kernel.
Status allgather_check_support(const PlanConfig& config, const Communicator& comm,
                               const LocalAttention& kernel);
Result<std::unique_ptr<DistributedAttention>> create_allgather_plan(const PlanConfig& config,
                                                                    Communicator& comm,
                                                                    LocalAttention& kernel);

}  // namespace ulysses::parallel
