// ulysses: the plan implementations behind DistributedAttention::create(), one per strategy.
#pragma once

#include <memory>

#include "parallel/head_routing.h"
#include "ulysses/attention.h"

namespace ulysses::parallel {

/// Ulysses (ulysses_attention.cc): the kernel problem of `rank` after the all-to-all.
LocalProblem ulysses_local_problem(const PlanConfig& config, const HeadRouting& routing, int rank);
Result<std::unique_ptr<DistributedAttention>> create_ulysses_plan(const PlanConfig& config,
                                                                  Communicator& comm,
                                                                  LocalAttention& kernel);

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
