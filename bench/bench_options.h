// ulysses-bench options, shared by the CPU path (ulysses_bench.cc) and the GPU path (gpu_bench.cc).
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "ulysses/config.h"
#include "ulysses/sharding.h"

namespace ulysses::bench {

struct Options {
  std::string device = "auto";  // auto: GPUs when present, else the CPU path
  std::vector<int> cp = {1, 2, 4};
  std::vector<std::int64_t> seq = {256};
  std::int64_t batch = 1;
  int heads = 8;
  int kv_heads = 2;
  int head_dim = 64;
  int head_dim_v = 0;  // of V and O (0: head_dim; MLA: 128 with head_dim 192)
  std::string dtype = "bf16";
  bool causal = true;
  std::vector<int> window = {-1, -1};
  bool sinks = false;
  int varlen = 0;  // number of packed sequences (0: fixed-length batch)
  // list: ulysses, ring, hybrid, allgather
  std::vector<std::string> strategy = {"ulysses", "ring"};
  int ulysses_degree = 2;         // hybrid: ranks per Ulysses group (must divide cp)
  std::vector<int> chunks = {1};  // PlanConfig::overlap_chunks (GPU default: 1, 2, 4 where valid)
  bool keep_saved = false;        // PlanConfig::backward_keeps_saved
  std::vector<std::string> saved = {"heads"};  // PlanConfig::saved_activations (list: heads, lse)
  std::vector<int> in_flight = {2};  // PlanConfig::chunks_in_flight (list: GPU rows; CPU: first)
  // GPU path, the cp > 1 rows' communicator (list): nccl (ulysses' non-blocking communicators);
  // nccl-grouped (every exchange a group of send/recv); nccl-blocking (blocking communicators made
  // by the bench, wrapped); peer (copy-engine copies between the GPUs of this process); loopback
  // (cp virtual ranks on GPU 0: memory and checks, not speed).
  std::vector<std::string> transport = {"nccl"};
  // GPU path, NCCL rows (list: off, on): "on" captures a cp > 1 step (forward + backward) into a
  // CUDA graph after the warm-up steps and times its replays, which shows what the host costs.
  // --decode: "on" rows keep the layout in device memory (device_layout) and replay one step.
  std::vector<std::string> cuda_graph = {"off"};
  // GPU path, plan rows (list: synced, queued): each timed step waited for on its own (its ms
  // include whatever the host adds), or all of them issued back to back and their mean taken (the
  // host issues ahead while the GPU works, as in a training loop over many layers).
  std::vector<std::string> steps = {"synced"};
  // GPU path (list: native, fp8): PlanConfig::payload (ulysses: inbound exchanges; ring: K/V hops).
  std::vector<std::string> payload = {"native"};
  // With --varlen, ring and hybrid rows (list: default, per_sequence, stream):
  // ParallelConfig::packed_sharding, one row each.
  std::vector<std::string> packed_sharding = {"default"};
  // With --varlen (list: given, balanced): the documents as generated, or reordered per row by
  // balance_packed_sequences() for the row's layout.
  std::vector<std::string> doc_order = {"given"};
  // --decode: DistributedDecode steps instead of training steps (GPU path): seq = cache tokens.
  bool decode = false;
  std::int64_t decode_tokens = 1;            // new tokens per step
  bool ragged = false;                       // --decode: sequence b of B holds L (b + 1) / B tokens
  std::vector<int> splits = {1, 4, 16, 32};  // DecodeConfig::max_splits (list)
  std::vector<std::int64_t> min_split_rows = {4096};  // DecodeConfig::min_split_rows (list)
  // --decode: DecodeConfig::split_kernel (list of auto, local, built_in), one row each.
  std::vector<std::string> split_kernel = {"auto", "local", "built_in"};
  // --decode: DecodeConfig::page_size (list; 0: unpaged), one row each.
  std::vector<std::int64_t> page_size = {0};
  // --decode with --page-size: where a sequence's pages lie in the pool (shuffled, in_order).
  std::string page_order = "shuffled";
  // GPU path: after each row's timed steps, three more with every kernel call timed alone.
  bool trace_calls = false;
  // GPU path, plan rows: after each row's timed steps, three more with every kernel call and
  // exchange marked by CUDA events where it runs (nothing serialised): each rank's timeline.
  bool timeline = false;
  // --timeline-trace: also write the timelines as a Trace Event file (Perfetto, chrome://tracing).
  std::string timeline_trace;
  int iters = 3;
  // GPU path: warm-up steps before the timed ones last at least this long (ms of GPU time, after
  // the two fixed warm-up steps), so that the timed steps run at the clocks a sustained run
  // settles to under the power cap, as training does (0: the two fixed steps only).
  double warmup_ms = 500;
  // GPU path, training rows: the cp = 1 run and every row of a length R times in turn; each row
  // reports its median step and the median of its efficiencies against its round's cp = 1 run
  // (bench/sweep_rounds.h).
  int rounds = 1;
  bool check = true;
  std::string json;
  std::uint64_t seed = 0;  // 0: fresh
};

/// --packed-sharding's values where they apply (ring and hybrid rows on packed documents), else
/// the default alone. The values are CLI-checked.
inline std::vector<PackedSharding> packed_shardings(const Options& o, bool applies) {
  if (!applies) return {PackedSharding::kDefault};
  std::vector<PackedSharding> out;
  for (const std::string& name : o.packed_sharding) out.push_back(*parse_packed_sharding(name));
  return out;
}

/// The `bal` column: the slowest rank's attention pairs over the mean (attention_pairs_by_rank()).
inline Result<double> rank_balance(const ParallelConfig& parallel, const AttentionConfig& attention,
                                   std::int64_t seqlen, std::span<const std::int32_t> cu_seqlens) {
  auto pairs = attention_pairs_by_rank(parallel, attention, seqlen, cu_seqlens);
  if (!pairs.is_ok()) return pairs.status();
  const double mean = std::accumulate(pairs->begin(), pairs->end(), 0.0) / parallel.cp;
  return *std::max_element(pairs->begin(), pairs->end()) / mean;
}

/// The GPU path: returns the process exit code (0 all rows passed, 1 a check failed, 2 bad input).
/// `given`: the flags the user set (the others take the GPU defaults).
int run_gpu_bench(Options o, const std::set<std::string>& given);
/// ulysses-bench --decode (decode_bench.cc), same conventions.
int run_gpu_decode_bench(Options o, const std::set<std::string>& given);

}  // namespace ulysses::bench
