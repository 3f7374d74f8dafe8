// ulysses: sequence-parallel (context-parallel) attention. Umbrella header.
//
//   #include "ulysses/ulysses.h"
//
//   auto comms = ulysses::create_loopback_group(4).value();      // or an NCCL communicator
//   auto kernel = ulysses::make_reference_attention();            // or the cuDNN backend
//   ulysses::PlanConfig cfg{.attention = {.num_heads_q = 32, .num_heads_kv = 8, .head_dim = 128,
//                                         .causal = true},
//                           .parallel = {.cp = 4}, .seqlen = 32768};
//   auto plan = ulysses::DistributedAttention::create(cfg, *comms[rank], *kernel);  // on every
//   rank
//   // allocate plan->workspace_bytes() and plan->saved_bytes(), then forward()/backward()
#pragma once

#include "ulysses/attention.h"     // IWYU pragma: export
#include "ulysses/communicator.h"  // IWYU pragma: export
#include "ulysses/config.h"        // IWYU pragma: export
#include "ulysses/decode.h"        // IWYU pragma: export
#include "ulysses/mesh.h"          // IWYU pragma: export
#include "ulysses/reference.h"     // IWYU pragma: export
#include "ulysses/sharding.h"      // IWYU pragma: export
#include "ulysses/status.h"        // IWYU pragma: export
#include "ulysses/types.h"         // IWYU pragma: export
