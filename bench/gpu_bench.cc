// ulysses-bench, GPU path: for each total sequence length, one GPU running the whole sequence with
// cuDNN (cp=1) beside Ulysses over P GPUs (NCCL, one host thread per GPU), in one run.
//
// Per row: ms per forward+backward step (median over iterations, slowest rank), TFLOP/s per GPU
// (backward counted as 2.5x forward, causal halves the work, a window counts its visible pairs),
// per-GPU efficiency T1 / (P * TP), all-to-all GB/s of ulysses' exchange and of NCCL's own
// ncclAlltoAll for the same bytes, peak device memory of the step, and the max difference of O,
// dQ, dK, dV (and dSinks with --sinks) from the cp=1 run. A strategy the plan refuses for the
// shape (DistributedAttention::check_support) is named in a comment line and skipped. T1 is GPU
// 0's; the kernel alone on every other GPU the rows use is printed beside it. --rounds R runs cp=1
// and every row R times in turn and pairs each row's efficiency with its own round's T1.
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <numeric>
#include <random>
#include <sstream>
#include <thread>

#include "bench/bench_cuda.h"
#include "bench/bench_options.h"
#include "bench/call_trace.h"
#include "bench/step_timeline.h"
#include "bench/sweep_rounds.h"
#include "common/dtype_convert.h"
#include "common/random_fill.h"
#include "kernels/layout.h"
#include "ulysses/gpu.h"
#include "ulysses/ulysses.h"

namespace ulysses::bench {
namespace {

// What a case cost before its steps ran at speed: the host time from creating the kernel to the end
// of the first step (plan creation and its connections included), and the cuDNN graphs built in it
// (on every later step: none expected). The slowest rank's, per field.
struct FirstStep {
  double ms = 0;
  std::int64_t graphs = 0, graphs_later = 0;
  double build_s = 0;
  void merge(const FirstStep& o) {
    ms = std::max(ms, o.ms);
    graphs = std::max(graphs, o.graphs);
    graphs_later = std::max(graphs_later, o.graphs_later);
    build_s = std::max(build_s, o.build_s);
  }
};

struct GpuRow {
  std::int64_t seq = 0;
  int cp = 1;
  std::string strategy = "ulysses";
  int chunks = 1;
  double ms = 0, tflops = 0, efficiency = 1;
  double a2a_gbs = 0, nccl_gbs = 0, a2a_mib = 0;
  double a2a_host_us = 0;  // host time to issue one ulysses all-to-all (the GPU time is a2a_gbs')
  // Host time to issue one step (forward + backward calls, or the graph launch), median of the
  // timed steps, slowest rank: where it reaches ms, the host, not the GPU, sets the step's pace.
  double host_ms = 0;
  double peak_gib = 0;
  double io_gib = 0, workspace_gib = 0, saved_gib = 0;  // what the peak holds, by owner
  double held_gib = 0;                   // the plan's and the kernel's own buffers (held_bytes())
  FirstStep first;                       // plan creation, cuDNN graph builds, the first step
  std::vector<double> plan_gib_by_rank;  // each rank's plan buffers: workspace + saved
  double err_o = 0, err_dq = 0, err_dk = 0, err_dv = 0;
  double err_dsinks = 0;                                   // --sinks: max |dSinks - cp=1's|
  double kernel_contiguous_ms = 0, kernel_inplace_ms = 0;  // the local kernel alone (cp > 1 rows)
  std::vector<CallRecord> calls;  // --trace-calls: every kernel call of one step, timed alone
  double kernel_ms = 0;           // their sum over all ranks
  // --timeline: every rank's spans of its fastest marked step, and that step's ms per rank.
  std::vector<TimelineSpan> timeline;
  std::vector<double> timeline_step_ms;
  // --rounds: the row's step time and paired efficiency in every round (empty with one round).
  std::vector<double> round_ms, round_efficiency;
  // The cp = 1 row: the kernel alone on each GPU the rows use, one after another (GPU 0's is ms).
  std::vector<double> t1_by_gpu;
  double pack_gbs = 0, unpack_gbs = 0, copy_gbs = 0;  // pack/unpack alone vs a device copy
  double qkv_pack_gbs = 0;  // the forward's three packs (Q, K, V) into one merged message
  double fp8_pack_gbs = 0, fp8_dequant_gbs = 0;  // Q packed into fp8 rows, and back
  bool exact_o = true, exact_dkv = true;
  bool pass = true;
  std::string repro;
  std::string saved = "heads";  // PlanConfig::saved_activations (plan rows)
  // The plan rows' communicator: nccl, nccl-grouped, nccl-blocking, peer, loopback; "none": the
  // kernel alone on the whole sequence (the cp = 1 row every other row is measured against).
  std::string transport = "nccl";
  int in_flight = 2;                 // PlanConfig::chunks_in_flight (lse rows with chunks > 1)
  bool cuda_graph = false;           // timed as replays of a captured CUDA graph
  bool queued = false;               // --steps queued: timed steps issued back to back (mean)
  std::string payload = "native";    // PlanConfig::payload (ulysses rows)
  std::string sharding = "default";  // ParallelConfig::packed_sharding (packed ring rows)
  bool balanced = false;  // --doc-order balanced: the documents reordered for this row's layout
  // The slowest rank's attention pairs over the mean (attention_pairs_by_rank()): what an uneven
  // layout costs on cp GPUs, which the device loopback's sum of ranks does not show.
  double balance = 1;

  bool kernel_alone() const { return transport == "none"; }
  // The "via" column: the transport and what else sets the row apart.
  std::string via() const {
    return transport + (payload == "fp8" ? "+fp8" : "") + (sharding == "stream" ? "+stream" : "") +
           (balanced ? "+balanced" : "") + (cuda_graph ? "+graph" : "") + (queued ? "+queued" : "");
  }
};

// Device memory of one case, GiB: the peak above the level before it, what it allocated itself,
// and what the plan and the kernel hold after its steps (held_bytes(): grow-only, so their most);
// the rest of the peak is NCCL's and cuDNN's own.
struct MemUse {
  double peak = 0, io = 0, workspace = 0, saved = 0, held = 0;
  std::vector<double> plan_by_rank;  // each rank's workspace + saved (ranks may differ)
};
constexpr double kGiB = 1u << 30;

// `kernel`'s cuDNN graphs so far (zeros for a kernel of another kind).
CudnnGraphStats graph_stats(const LocalAttention& kernel) {
  auto stats = cudnn_graph_stats(kernel);
  return stats.is_ok() ? *stats : CudnnGraphStats{};
}

struct Shape {
  std::int64_t B, S;
  int Hq, Hkv, D;
  DType dtype;
  AttentionConfig att;
  // --varlen: B = 1 and the S tokens hold packed documents (layout thd) at these offsets, each a
  // multiple of 2 cp tokens long for every cp of the run, so the offsets are the same for every
  // strategy (no padding between documents; the rows after the last are padding). Empty: bshd.
  std::vector<std::int32_t> cu;
  bool packed() const { return !cu.empty(); }
  // head_dim of V, O, dO and dV (`value`) or of Q, K, dQ and dK (att.head_dim_v: MLA).
  std::int64_t dim(bool value) const { return value ? att.value_dim() : D; }
  std::size_t act_bytes(int heads, bool value = false) const {
    return static_cast<std::size_t>(B * S * heads * dim(value)) * dtype_size(dtype);
  }
};

// Without a window causal counts n^2 / 2 pairs (the usual convention); with one, the visible pairs.
double flops_per_step(const Shape& s) {
  const bool window = s.att.window_left >= 0 || s.att.window_right >= 0;
  auto pairs_of = [&](std::int64_t n) {
    if (window) return sequence_pairs(s.att, n, n, 0);  // call_trace.h
    return static_cast<double>(n) * static_cast<double>(n) * (s.att.causal ? 0.5 : 1.0);
  };
  double pairs = static_cast<double>(s.B) * pairs_of(s.S);
  if (s.packed()) {  // attention stays inside each document
    pairs = 0;
    for (std::size_t i = 0; i + 1 < s.cu.size(); ++i) pairs += pairs_of(s.cu[i + 1] - s.cu[i]);
  }
  // (Q K^T over head_dim, P V over head_dim_v: 2 FLOPs per multiply-add each.)
  return 3.5 * 2.0 * pairs * s.Hq * static_cast<double>(s.dim(false) + s.dim(true));
}

// --varlen N: N document lengths, multiples of `unit`, drawn from `seed`, that fill S exactly
// (each at least one unit; lengths spread over [unit, ~2 S / N]).
std::vector<std::int32_t> document_offsets(int n, std::int64_t S, std::int64_t unit,
                                           std::uint64_t seed) {
  const std::int64_t units = S / unit;
  if (n < 1 || n > units) return {};
  std::mt19937_64 rng(seed);
  std::vector<double> w(static_cast<std::size_t>(n));
  std::uniform_real_distribution<double> u(0.0, 1.0);
  double total = 0;
  for (double& x : w) total += (x = u(rng));
  std::vector<std::int32_t> cu{0};
  std::int64_t left = units - n;  // one unit each, the rest by weight
  for (int i = 0; i < n; ++i) {
    std::int64_t extra =
        i + 1 == n
            ? left
            : std::min(left, static_cast<std::int64_t>(w[static_cast<std::size_t>(i)] / total *
                                                       static_cast<double>(units - n)));
    left -= extra;
    cu.push_back(static_cast<std::int32_t>(cu.back() + (1 + extra) * unit));
  }
  return cu;
}

std::size_t used_bytes(int device) {
  std::size_t free = 0, total = 0;
  cudaSetDevice(device);
  cudaMemGetInfo(&free, &total);
  return total - free;
}

// --trace-calls: steps timed call by call after a row's timed steps (each call's fastest kept).
constexpr int kTraceSteps = 3;

// --timeline: CUDA events recorded on the streams where a rank's step issues its kernel calls and
// exchanges, read back once the step is done (StepMarks::spans()). Used by one rank's thread.
class StepMarks {
 public:
  explicit StepMarks(int rank) : rank_(rank) {}
  ~StepMarks() {
    for (cudaEvent_t e : pool_) cudaEventDestroy(e);
  }
  StepMarks(const StepMarks&) = delete;
  StepMarks& operator=(const StepMarks&) = delete;

  bool on = false;  // marks only while on (the timeline's steps), so timed steps carry none

  // A new step: forgets the last one's marks and records its start on the caller's stream.
  void start(cudaStream_t caller) {
    used_ = 0;
    marks_.clear();
    streams_ = {caller};
    start_ = take();
    BENCH_CUDA(cudaEventRecord(start_, caller));
  }
  // Opens a span on `stream` (an event recorded there now); close(index, ...) ends it.
  std::size_t open(cudaStream_t stream, bool kernel, std::string what, double bytes) {
    Mark m{
        .stream = stream_index(stream), .kernel = kernel, .what = std::move(what), .bytes = bytes};
    m.begin = take();
    BENCH_CUDA(cudaEventRecord(m.begin, stream));
    marks_.push_back(std::move(m));
    return marks_.size() - 1;
  }
  void add_bytes(std::size_t index, double bytes) { marks_[index].bytes += bytes; }
  // ms from the step's start to `e` (recorded after it on the caller's stream, and complete).
  double ms_to(cudaEvent_t e) const { return ms_last(start_, e); }
  void close(std::size_t index, cudaStream_t stream) {
    marks_[index].end = take();
    BENCH_CUDA(cudaEventRecord(marks_[index].end, stream));
  }
  // The step's spans in ms from its start; call after the step finished on the device.
  std::vector<TimelineSpan> spans() const {
    std::vector<TimelineSpan> out;
    for (const Mark& m : marks_) {
      if (m.end == nullptr) continue;  // (an operation that failed before it was closed)
      out.push_back({.rank = rank_,
                     .stream = m.stream,
                     .kernel = m.kernel,
                     .what = m.what,
                     .begin_ms = ms_to(m.begin),
                     .end_ms = ms_to(m.end),
                     .bytes = m.bytes});
    }
    std::sort(out.begin(), out.end(),
              [](const TimelineSpan& a, const TimelineSpan& b) { return a.begin_ms < b.begin_ms; });
    return out;
  }

 private:
  struct Mark {
    int stream = 0;
    bool kernel = false;
    std::string what;
    double bytes = 0;
    cudaEvent_t begin = nullptr, end = nullptr;
  };
  cudaEvent_t take() {
    if (used_ == pool_.size()) {
      cudaEvent_t e = nullptr;
      BENCH_CUDA(cudaEventCreate(&e));
      pool_.push_back(e);
    }
    return pool_[used_++];
  }
  int stream_index(cudaStream_t s) {
    const auto it = std::find(streams_.begin(), streams_.end(), s);
    if (it != streams_.end()) return static_cast<int>(it - streams_.begin());
    streams_.push_back(s);
    return static_cast<int>(streams_.size()) - 1;
  }
  int rank_;
  std::vector<cudaEvent_t> pool_;
  std::size_t used_ = 0;
  cudaEvent_t start_ = nullptr;
  std::vector<cudaStream_t> streams_;
  std::vector<Mark> marks_;
};

// --trace-calls: a LocalAttention that forwards to `inner` and, while `on`, times every call
// alone: it waits for the stream's earlier work (exchanges, packs), then runs the call holding a
// lock that every rank's timer shares, so virtual ranks on one GPU do not overlap their calls.
class CallTimer final : public LocalAttention {
 public:
  CallTimer(LocalAttention& inner, int rank) : inner_(inner), rank_(rank) {
    BENCH_CUDA(cudaEventCreate(&e0_));
    BENCH_CUDA(cudaEventCreate(&e1_));
  }
  ~CallTimer() override {
    cudaEventDestroy(e0_);
    cudaEventDestroy(e1_);
  }
  bool on = false;
  std::vector<CallRecord> records;

  std::string_view name() const override { return inner_.name(); }
  Device device() const override { return inner_.device(); }
  bool provides_lse() const override { return inner_.provides_lse(); }
  bool supports_backward() const override { return inner_.supports_backward(); }
  bool accumulates_grads() const override { return inner_.accumulates_grads(); }
  // Calls are timed alone: while timing, none may overlap the next.
  bool concurrent_calls(const LocalProblem& p) const override {
    return !on && inner_.concurrent_calls(p);
  }
  Status check_support(const LocalProblem& p) const override { return inner_.check_support(p); }
  std::size_t workspace_bytes(const LocalProblem& p) const override {
    return inner_.workspace_bytes(p);
  }
  std::size_t held_bytes() const override { return inner_.held_bytes(); }
  Status release_held(Stream stream) override { return inner_.release_held(stream); }
  Status forward(const LocalProblem& p, const LocalForwardArgs& a, Stream stream) override {
    if (marks != nullptr && marks->on) {
      return marked(p, false, stream, [&] { return inner_.forward(p, a, stream); });
    }
    if (!on) return inner_.forward(p, a, stream);
    return timed(describe_call(p, a.cu_seqlens, a.rows, false, rank_), stream,
                 [&] { return inner_.forward(p, a, stream); });
  }
  Status backward(const LocalProblem& p, const LocalBackwardArgs& a, Stream stream) override {
    if (marks != nullptr && marks->on) {
      return marked(p, true, stream, [&] { return inner_.backward(p, a, stream); });
    }
    if (!on) return inner_.backward(p, a, stream);
    return timed(describe_call(p, a.cu_seqlens, a.rows, true, rank_), stream,
                 [&] { return inner_.backward(p, a, stream); });
  }
  // --timeline: while its marks are on, each call is a span of the step (not run alone).
  StepMarks* marks = nullptr;

 private:
  template <typename F>
  Status timed(CallRecord record, Stream stream, F&& call) {
    static std::mutex one_at_a_time;
    BENCH_CUDA(cudaStreamSynchronize(stream));
    std::lock_guard<std::mutex> lock(one_at_a_time);
    BENCH_CUDA(cudaEventRecord(e0_, stream));
    Status status = call();
    BENCH_CUDA(cudaEventRecord(e1_, stream));
    BENCH_CUDA(cudaEventSynchronize(e1_));
    float ms = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, e0_, e1_));
    record.ms = ms;
    records.push_back(record);
    return status;
  }
  template <typename F>
  Status marked(const LocalProblem& p, bool backward, Stream stream, F&& call) {
    const int heads = p.num_heads_q_local > 0 ? p.num_heads_q_local : p.config.num_heads_q;
    const std::size_t index =
        marks->open(stream, true,
                    std::string(backward ? "bwd " : "fwd ") + std::to_string(heads) + " heads, " +
                        std::to_string(p.seqlen) + " rows",
                    0);
    Status status = call();
    marks->close(index, stream);
    return status;
  }
  LocalAttention& inner_;
  int rank_;
  cudaEvent_t e0_ = nullptr, e1_ = nullptr;
};

// --timeline: a communicator that forwards to `inner` and, while the marks are on, opens a span
// around each exchange on the stream it is issued on: an all_to_all_v, a group (from its first send
// or receive on a stream to group_end(), one span per stream it used), a lone send or receive, or
// another collective. The plan sees the inner communicator's rank, size, device and name.
class TimedComm final : public ForwardingCommunicator {
 public:
  TimedComm(Communicator& inner, StepMarks& marks) : ForwardingCommunicator(inner), marks_(marks) {}
  Status all_to_all_v(const void* send, std::span<const std::size_t> send_counts,
                      std::span<const std::size_t> send_offsets, void* recv,
                      std::span<const std::size_t> recv_counts,
                      std::span<const std::size_t> recv_offsets, Stream stream) override {
    double bytes = 0;
    for (std::size_t p = 0; p < send_counts.size(); ++p) {
      if (static_cast<int>(p) != rank()) bytes += static_cast<double>(send_counts[p]);
    }
    auto op = [&] {
      return inner().all_to_all_v(send, send_counts, send_offsets, recv, recv_counts, recv_offsets,
                                  stream);
    };
    if (in_group_) {
      note(stream, bytes);
      return op();
    }
    return spanned("exchange", bytes, stream, op);
  }
  Status send(const void* data, std::size_t bytes, int peer, Stream stream) override {
    const double sent = peer == rank() ? 0.0 : static_cast<double>(bytes);
    auto op = [&] { return inner().send(data, bytes, peer, stream); };
    if (in_group_) {
      note(stream, sent);
      return op();
    }
    return spanned("send", sent, stream, op);
  }
  Status recv(void* data, std::size_t bytes, int peer, Stream stream) override {
    auto op = [&] { return inner().recv(data, bytes, peer, stream); };
    if (in_group_) {
      note(stream, 0);
      return op();
    }
    return spanned("recv", 0, stream, op);
  }
  Status all_gather(const void* send, void* recv, std::size_t bytes_per_rank,
                    Stream stream) override {
    return spanned("all-gather", static_cast<double>(bytes_per_rank), stream,
                   [&] { return inner().all_gather(send, recv, bytes_per_rank, stream); });
  }
  Status all_reduce_sum(const void* send, void* recv, std::size_t count, DType dtype,
                        Stream stream) override {
    return spanned("all-reduce", 0, stream,
                   [&] { return inner().all_reduce_sum(send, recv, count, dtype, stream); });
  }
  Status group_start() override {
    in_group_ = true;
    group_.clear();
    return inner().group_start();
  }
  Status group_end() override {
    in_group_ = false;
    Status status = inner().group_end();
    for (const auto& [stream, index] : group_) marks_.close(index, stream);
    group_.clear();
    return status;
  }

 private:
  template <typename F>
  Status spanned(const char* what, double bytes, Stream stream, F&& op) {
    if (!marks_.on) return op();
    const cudaStream_t s = stream;
    const std::size_t index = marks_.open(s, false, what, bytes);
    Status status = op();
    marks_.close(index, s);
    return status;
  }
  // A grouped operation on `stream`: opens the group's span there at its first one.
  void note(Stream stream, double bytes) {
    if (!marks_.on) return;
    const cudaStream_t s = stream;
    auto it =
        std::find_if(group_.begin(), group_.end(), [&](const auto& g) { return g.first == s; });
    if (it == group_.end()) {
      group_.emplace_back(s, marks_.open(s, false, "exchange", 0));
      it = group_.end() - 1;
    }
    marks_.add_bytes(it->second, bytes);
  }
  StepMarks& marks_;
  bool in_group_ = false;
  std::vector<std::pair<cudaStream_t, std::size_t>> group_;  // (stream, its open span)
};

// --trace-calls output: one line per call, then each rank's sum.
double print_calls(const std::string& what, const std::vector<CallRecord>& calls) {
  double total = 0;
  std::vector<double> per_rank;
  for (const CallRecord& c : calls) {
    std::printf(
        "#   calls %s: rank %d %s q %lld kv %lld pieces %d %s pairs %.3g: %.2f ms, %.0f TFLOP/s\n",
        what.c_str(), c.rank, c.backward ? "bwd" : "fwd", static_cast<long long>(c.q_rows),
        static_cast<long long>(c.kv_rows), c.pieces, c.mask.c_str(), c.pairs, c.ms,
        c.ms > 0 ? c.flops / (c.ms * 1e-3) / 1e12 : 0.0);
    if (per_rank.size() <= static_cast<std::size_t>(c.rank)) per_rank.resize(c.rank + 1u);
    per_rank[static_cast<std::size_t>(c.rank)] += c.ms;
    total += c.ms;
  }
  for (std::size_t r = 0; r < per_rank.size(); ++r) {
    std::printf("#   calls %s: rank %zu kernel total %.2f ms\n", what.c_str(), r, per_rank[r]);
  }
  if (per_rank.size() > 1) {  // what a step on as many GPUs waits for
    const double most = *std::max_element(per_rank.begin(), per_rank.end());
    std::printf("#   calls %s: slowest rank's kernels %.2f ms, %.3f x the mean\n", what.c_str(),
                most, most / (total / static_cast<double>(per_rank.size())));
  }
  return total;
}

// The summary of each rank's marked step (--timeline): spans grouped by rank.
std::vector<TimelineSummary> timeline_summaries(const std::vector<TimelineSpan>& spans,
                                                const std::vector<double>& step_ms) {
  std::vector<TimelineSummary> out;
  for (std::size_t r = 0; r < step_ms.size(); ++r) {
    std::vector<TimelineSpan> mine;
    for (const TimelineSpan& t : spans) {
      if (t.rank == static_cast<int>(r)) mine.push_back(t);
    }
    out.push_back(summarize_step(mine, step_ms[r]));
  }
  return out;
}

// --timeline output: per rank, each span of its fastest marked step, then its summary.
void print_timeline(const std::string& what, const std::vector<TimelineSpan>& spans,
                    const std::vector<double>& step_ms) {
  const std::vector<TimelineSummary> sums = timeline_summaries(spans, step_ms);
  for (std::size_t r = 0; r < sums.size(); ++r) {
    std::printf("#   timeline %s, rank %zu: step %.3f ms (the fastest of %d marked steps)\n",
                what.c_str(), r, step_ms[r], kTraceSteps);
    for (const TimelineSpan& t : spans) {
      if (t.rank != static_cast<int>(r)) continue;
      const double ms = t.end_ms - t.begin_ms;
      std::printf("#     stream %d %8.3f - %8.3f ms (%7.3f) %s", t.stream, t.begin_ms, t.end_ms, ms,
                  t.what.c_str());
      if (t.bytes > 0) {
        std::printf(", %.1f MiB out (%.0f GB/s)", t.bytes / (1 << 20),
                    ms > 0 ? t.bytes / (ms * 1e-3) / 1e9 : 0.0);
      }
      std::printf("\n");
    }
    const TimelineSummary& x = sums[r];
    std::printf(
        "#   timeline %s, rank %zu: kernels busy %.3f ms (%.3f summed over calls), exchanges "
        "%.3f ms of which %.3f beside no kernel, neither %.3f ms (packs, unpacks, waits)\n",
        what.c_str(), r, x.kernel_busy_ms, x.kernel_sum_ms, x.exchange_busy_ms,
        x.exchange_exposed_ms, x.idle_ms);
  }
}

// Host copies of one run's outputs (fp32 for comparison).
struct HostOut {
  std::vector<float> o, dq, dk, dv;
  std::vector<float> dsinks;  // --sinks
};

// bf16 -> fp32 is exact: the bf16 bits are the high half of the fp32 bits.
std::vector<float> to_float(const std::vector<std::uint16_t>& bits) {
  std::vector<float> out(bits.size());
  for (std::size_t i = 0; i < bits.size(); ++i) {
    const std::uint32_t w = static_cast<std::uint32_t>(bits[i]) << 16;
    std::memcpy(&out[i], &w, 4);
  }
  return out;
}

struct Cmp {
  double max_abs = 0;
  bool bitwise = true;
};
Cmp compare(const std::vector<float>& a, const std::vector<float>& b) {
  Cmp c;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], 4) != 0) c.bitwise = false;
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (!(d <= c.max_abs)) c.max_abs = std::isnan(d) ? INFINITY : d;
  }
  return c;
}

double max_abs_of(const std::vector<float>& a) {
  double m = 0;
  for (float x : a) m = std::max(m, static_cast<double>(std::fabs(x)));
  return m;
}

// Global inputs, generated once per sequence length (bf16 bits on the host).
struct Inputs {
  std::vector<std::uint16_t> q, k, v, d_o;
  std::vector<float> sinks;  // --sinks: one logit per query head
};

Inputs make_inputs(const Shape& s, std::uint64_t seed) {
  auto fill = [&](int heads, std::uint64_t stream, bool value) {
    return detail::random_bf16_bits(static_cast<std::size_t>(s.B * s.S * heads * s.dim(value)),
                                    seed, stream);
  };
  Inputs in;
  in.q = fill(s.Hq, 0, false);
  in.k = fill(s.Hkv, 1, false);
  in.v = fill(s.Hkv, 2, true);
  in.d_o = fill(s.Hq, 3, true);
  if (s.att.sinks) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> logit(-1.0, 2.0);
    for (int h = 0; h < s.Hq; ++h) in.sinks.push_back(static_cast<float>(logit(rng)));
  }
  return in;
}

// --doc-order balanced: rows[i] of the reordered batch is token tokens[i] of the generated one.
// Moves every per-token row (B = 1) into the new order, or back (`back`).
template <typename T>
std::vector<T> reorder_tokens(const std::vector<T>& x, const std::vector<std::int64_t>& tokens,
                              bool back) {
  if (x.empty()) return x;
  const std::size_t row = x.size() / tokens.size();
  std::vector<T> out(x.size());
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const std::size_t at = static_cast<std::size_t>(tokens[i]);
    std::copy_n(x.begin() + static_cast<std::ptrdiff_t>((back ? i : at) * row), row,
                out.begin() + static_cast<std::ptrdiff_t>((back ? at : i) * row));
  }
  return out;
}

// One GPU, whole sequence, the cuDNN kernel called directly (no ulysses data movement).
// Rounds the activation x [B, S, heads, D] (bf16, device 0) in place as Payload::kFp8 delivers it
// to the head owners: the library's fp8 pack and dequantize with one peer, then back to [B, S].
void round_as_fp8_payload(const Shape& s, void* x, int heads, cudaStream_t st) {
  const kernels::Fp8MessageLayout msg{nullptr, 1, s.S, s.B, heads, s.D};
  void *codes, *tmp;
  BENCH_CUDA(cudaMalloc(&codes, msg.peer_bytes()));
  BENCH_CUDA(cudaMalloc(&tmp, s.act_bytes(heads)));
  const TensorView act =
      TensorView::contiguous(x, s.dtype, {s.B, s.S, heads, s.D}, Device::cuda(0));
  const std::vector<int> all = {0};
  kernels::Fp8MessageLayout m = msg;
  m.data = codes;
  const kernels::MessageLayout rows{tmp, s.dtype, 1, s.S, s.B, heads, s.D};
  Status status = kernels::pack_heads_fp8(act, all, heads, m, 0, st);
  if (status.is_ok()) status = kernels::dequantize_fp8(m, rows, Device::cuda(0), st);
  if (status.is_ok()) status = kernels::unpack_heads(rows, 0, all, heads, act, st);
  if (!status.is_ok()) {
    std::fprintf(stderr, "ulysses-bench: fp8 rounding: %s\n", status.to_string().c_str());
    std::exit(1);
  }
  BENCH_CUDA(cudaStreamSynchronize(st));
  cudaFree(codes);
  cudaFree(tmp);
}

// Which inputs the cp = 1 run rounds first, as --payload fp8 rows deliver them: none; Q, K, V and
// dO (ulysses rows); K and V (ring and hybrid rows).
enum class Fp8Inputs { kNone, kQkvDo, kKv };

double run_single(const Shape& s, const Inputs& in, int iters, HostOut* out, MemUse* mem,
                  Fp8Inputs fp8_inputs = Fp8Inputs::kNone, std::vector<CallRecord>* calls = nullptr,
                  FirstStep* first = nullptr, double warmup_ms = 0, int device = 0) {
  BENCH_CUDA(cudaSetDevice(device));
  const std::size_t base = used_bytes(device);
  const auto created = std::chrono::steady_clock::now();
  auto kernel = create_cudnn_attention(device);
  if (!kernel.is_ok()) {
    std::fprintf(stderr, "ulysses-bench: %s\n", kernel.status().to_string().c_str());
    std::exit(1);
  }
  const LocalProblem p = LocalProblem::unsharded(s.att, s.dtype, s.B, s.S, s.packed());
  void *q, *k, *v, *o, *d_o, *dq, *dk, *dv, *lse, *ws, *cu = nullptr, *sinks = nullptr,
                                                       *dsinks = nullptr;
  if (s.att.sinks) {
    BENCH_CUDA(cudaMalloc(&sinks, in.sinks.size() * 4));
    BENCH_CUDA(cudaMalloc(&dsinks, in.sinks.size() * 4));
    BENCH_CUDA(cudaMemcpy(sinks, in.sinks.data(), in.sinks.size() * 4, cudaMemcpyHostToDevice));
  }
  if (s.packed()) {
    BENCH_CUDA(cudaMalloc(&cu, s.cu.size() * 4));
    BENCH_CUDA(cudaMemcpy(cu, s.cu.data(), s.cu.size() * 4, cudaMemcpyHostToDevice));
  }
  BENCH_CUDA(cudaMalloc(&q, s.act_bytes(s.Hq)));
  BENCH_CUDA(cudaMalloc(&k, s.act_bytes(s.Hkv)));
  BENCH_CUDA(cudaMalloc(&v, s.act_bytes(s.Hkv, true)));
  BENCH_CUDA(cudaMalloc(&o, s.act_bytes(s.Hq, true)));
  BENCH_CUDA(cudaMalloc(&d_o, s.act_bytes(s.Hq, true)));
  BENCH_CUDA(cudaMalloc(&dq, s.act_bytes(s.Hq)));
  BENCH_CUDA(cudaMalloc(&dk, s.act_bytes(s.Hkv)));
  BENCH_CUDA(cudaMalloc(&dv, s.act_bytes(s.Hkv, true)));
  BENCH_CUDA(cudaMalloc(&lse, static_cast<std::size_t>(s.B * s.Hq * s.S) * 4));
  const std::size_t ws_bytes = (*kernel)->workspace_bytes(p);
  BENCH_CUDA(cudaMalloc(&ws, ws_bytes));
  mem->io = static_cast<double>(2 * (s.act_bytes(s.Hq) + s.act_bytes(s.Hq, true) +
                                     s.act_bytes(s.Hkv) + s.act_bytes(s.Hkv, true)) +
                                static_cast<std::size_t>(s.B * s.Hq * s.S) * 4) /
            kGiB;
  mem->workspace = static_cast<double>(ws_bytes) / kGiB;
  BENCH_CUDA(cudaMemcpy(q, in.q.data(), s.act_bytes(s.Hq), cudaMemcpyHostToDevice));
  BENCH_CUDA(cudaMemcpy(k, in.k.data(), s.act_bytes(s.Hkv), cudaMemcpyHostToDevice));
  BENCH_CUDA(cudaMemcpy(v, in.v.data(), s.act_bytes(s.Hkv, true), cudaMemcpyHostToDevice));
  BENCH_CUDA(cudaMemcpy(d_o, in.d_o.data(), s.act_bytes(s.Hq, true), cudaMemcpyHostToDevice));
  auto act = [&](void* ptr, int heads, bool value = false) {
    return TensorView::contiguous(ptr, s.dtype, {s.B, s.S, heads, s.dim(value)},
                                  Device::cuda(device));
  };
  const TensorView lse_v =
      TensorView::contiguous(lse, DType::kFloat32, {s.B, s.Hq, s.S}, Device::cuda(device));
  LocalForwardArgs f{.q = act(q, s.Hq),
                     .k = act(k, s.Hkv),
                     .v = act(v, s.Hkv, true),
                     .o = act(o, s.Hq, true),
                     .lse = lse_v,
                     .cu_seqlens = s.cu,
                     .cu_seqlens_device = static_cast<const std::int32_t*>(cu),
                     .workspace = ws};
  LocalBackwardArgs b{.q = f.q,
                      .k = f.k,
                      .v = f.v,
                      .o = f.o,
                      .lse = lse_v,
                      .d_o = act(d_o, s.Hq, true),
                      .dq = act(dq, s.Hq),
                      .dk = act(dk, s.Hkv),
                      .dv = act(dv, s.Hkv, true),
                      .cu_seqlens = s.cu,
                      .cu_seqlens_device = f.cu_seqlens_device,
                      .workspace = ws};
  if (s.att.sinks) {
    f.sinks = b.sinks =
        TensorView::contiguous(sinks, DType::kFloat32, {s.Hq}, Device::cuda(device));
    b.dsinks = TensorView::contiguous(dsinks, DType::kFloat32, {s.Hq}, Device::cuda(device));
  }
  cudaStream_t st;
  BENCH_CUDA(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  if (fp8_inputs != Fp8Inputs::kNone) {
    round_as_fp8_payload(s, k, s.Hkv, st);
    round_as_fp8_payload(s, v, s.Hkv, st);
  }
  if (fp8_inputs == Fp8Inputs::kQkvDo) {
    round_as_fp8_payload(s, q, s.Hq, st);
    round_as_fp8_payload(s, d_o, s.Hq, st);
  }
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<double> ms;
  std::size_t peak = 0;
  CallTimer timer(**kernel, 0);
  auto step = [&] {
    Status status = timer.forward(p, f, st);
    if (status.is_ok()) status = timer.backward(p, b, st);
    if (!status.is_ok()) {
      std::fprintf(stderr, "ulysses-bench: cp=1: %s\n", status.to_string().c_str());
      std::exit(1);
    }
  };
  int extra = 0;  // --warmup-ms: warm-up steps after the first two
  auto rewarm = [&] {
    for (int n = extra; n > 0; --n) step();
    BENCH_CUDA(cudaStreamSynchronize(st));
  };
  for (int it = 0; it < iters + 2; ++it) {
    if (it == 2) {  // --warmup-ms: more warm-up steps, back to back, before the timed ones (the
      // second step's pace counts for both: the first one's time includes building the graphs)
      const double second = ms_last(e0, e1);
      extra = extra_warmup_steps(warmup_ms, 2 * second, second);
      rewarm();
    }
    cudaEventRecord(e0, st);
    step();
    cudaEventRecord(e1, st);
    BENCH_CUDA(cudaEventSynchronize(e1));
    if (it == 0 && first) {
      first->ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - created)
              .count();
      const CudnnGraphStats built = graph_stats(**kernel);
      first->graphs = built.graphs;
      first->build_s = built.build_seconds;
    }
    peak = std::max(peak, used_bytes(device) - base);
    if (it >= 2) ms.push_back(ms_last(e0, e1));
  }
  std::sort(ms.begin(), ms.end());
  if (first) first->graphs_later = graph_stats(**kernel).graphs - first->graphs;
  mem->peak = static_cast<double>(peak) / kGiB;
  mem->held = static_cast<double>(timer.held_bytes()) / kGiB;
  if (out) {
    auto down = [&](void* ptr, int heads, bool value) {
      std::vector<std::uint16_t> h(static_cast<std::size_t>(s.B * s.S * heads * s.dim(value)));
      BENCH_CUDA(cudaMemcpy(h.data(), ptr, h.size() * 2, cudaMemcpyDeviceToHost));
      return to_float(h);
    };
    out->o = down(o, s.Hq, true);
    out->dq = down(dq, s.Hq, false);
    out->dk = down(dk, s.Hkv, false);
    out->dv = down(dv, s.Hkv, true);
    if (s.att.sinks) {
      out->dsinks.resize(in.sinks.size());
      BENCH_CUDA(
          cudaMemcpy(out->dsinks.data(), dsinks, in.sinks.size() * 4, cudaMemcpyDeviceToHost));
    }
  }
  if (calls) {  // --trace-calls: more steps, each call timed alone (after the checks' idle time,
    // warmed up again to the timed steps' clocks)
    rewarm();
    timer.on = true;
    for (int t = 0; t < kTraceSteps; ++t) step();
    BENCH_CUDA(cudaStreamSynchronize(st));
    *calls = fastest_of_steps(timer.records, kTraceSteps);
  }
  for (void* x : {q, k, v, o, d_o, dq, dk, dv, lse, ws, cu, sinks, dsinks}) cudaFree(x);
  cudaStreamDestroy(st);
  return ms[ms.size() / 2];
}

// The local kernel alone on one rank's problem (all S tokens, Hq/P and Hkv/P heads: uneven, the
// busiest rank's), fwd+bwd: `packed` reads Q/K/V from a [S][B][hq + 2 hkv][D] receive buffer and
// writes O, dQ, dK/dV in the layouts ulysses uses; otherwise every tensor is contiguous [B, S, H,
// D]. Separates what the kernel costs on ulysses' layout from what the exchanges cost.
double time_local_kernel(const Shape& s, int P, bool packed, int iters, double warmup_ms) {
  cudaSetDevice(0);
  auto kernel = create_cudnn_attention(0);
  // (Uneven heads: the busiest rank's, ceil(Hkv / P) KV heads and their query groups.)
  const int hkv = std::max(1, (s.Hkv + P - 1) / P);
  const int hq = s.Hkv >= P ? hkv * (s.Hq / s.Hkv) : s.Hq / P;
  LocalProblem p = LocalProblem::unsharded(s.att, s.dtype, s.B, s.S);
  p.config.sinks = false;  // the kernel-alone breakdown runs without sinks (no sinks tensor here)
  p.num_heads_q_local = hq;
  p.num_heads_kv_local = hkv;
  // Elements per token: of a Q|K|V row, an O (dO) row, a dQ row and a dK|dV row.
  const std::int64_t D = s.dim(false), Dv = s.dim(true), B = s.B, S = s.S;
  const std::int64_t C = (hq + hkv) * D + hkv * Dv, Co = hq * Dv, Cq = hq * D, Ckv = hkv * (D + Dv);
  const std::size_t e = 2, tok = static_cast<std::size_t>(B * S);
  void *qkv, *o, *d_o, *dq, *dkv, *lse, *ws;
  BENCH_CUDA(cudaMalloc(&qkv, tok * static_cast<std::size_t>(C) * e));
  BENCH_CUDA(cudaMalloc(&o, tok * static_cast<std::size_t>(Co) * e));
  BENCH_CUDA(cudaMalloc(&d_o, tok * static_cast<std::size_t>(Co) * e));
  BENCH_CUDA(cudaMalloc(&dq, tok * static_cast<std::size_t>(Cq) * e));
  BENCH_CUDA(cudaMalloc(&dkv, tok * static_cast<std::size_t>(Ckv) * e));
  BENCH_CUDA(cudaMalloc(&lse, tok * static_cast<std::size_t>(hq) * 4));
  const std::size_t ws_bytes = (*kernel)->workspace_bytes(p);
  BENCH_CUDA(cudaMalloc(&ws, ws_bytes));
  {  // Random inputs: constant data runs measurably faster than real data (docs/PERF.md).
    const std::vector<std::uint16_t> h =
        detail::random_bf16_bits(tok * static_cast<std::size_t>(C), 1234, 0);
    BENCH_CUDA(cudaMemcpy(qkv, h.data(), h.size() * e, cudaMemcpyHostToDevice));
    BENCH_CUDA(
        cudaMemcpy(d_o, h.data(), tok * static_cast<std::size_t>(Co) * e, cudaMemcpyHostToDevice));
  }
  const Device dev = Device::cuda(0);
  // `h` heads of `d` elements from element c0 of each token's `row` elements (packed), or the
  // contiguous [B, S, h, d] block at c0 * tokens.
  auto view = [&](void* base, std::int64_t row, std::int64_t c0, std::int64_t h, std::int64_t d) {
    char* ptr = static_cast<char*>(base) + static_cast<std::size_t>(c0) * e;
    if (packed) return TensorView::strided(ptr, s.dtype, {B, S, h, d}, {row, B * row, d, 1}, dev);
    return TensorView::contiguous(static_cast<char*>(base) + static_cast<std::size_t>(c0) * e * tok,
                                  s.dtype, {B, S, h, d}, dev);
  };
  const TensorView lse_v =
      packed ? TensorView::strided(lse, DType::kFloat32, {B, hq, S}, {hq, 1, B * hq}, dev)
             : TensorView::contiguous(lse, DType::kFloat32, {B, hq, S}, dev);
  LocalForwardArgs f{.q = view(qkv, C, 0, hq, D),
                     .k = view(qkv, C, hq * D, hkv, D),
                     .v = view(qkv, C, (hq + hkv) * D, hkv, Dv),
                     .o = view(o, Co, 0, hq, Dv),
                     .lse = lse_v,
                     .workspace = ws};
  LocalBackwardArgs b{.q = f.q,
                      .k = f.k,
                      .v = f.v,
                      .o = f.o,
                      .lse = lse_v,
                      .d_o = view(d_o, Co, 0, hq, Dv),
                      .dq = view(dq, Cq, 0, hq, D),
                      .dk = view(dkv, Ckv, 0, hkv, D),
                      .dv = view(dkv, Ckv, hkv * D, hkv, Dv),
                      .workspace = ws};
  cudaStream_t st;
  cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<double> ms;
  auto step = [&] {
    Status status = (*kernel)->forward(p, f, st);
    if (status.is_ok()) status = (*kernel)->backward(p, b, st);
    if (!status.is_ok()) {
      std::fprintf(stderr, "ulysses-bench: local kernel: %s\n", status.to_string().c_str());
      std::exit(1);
    }
  };
  for (int it = 0; it < iters + 2; ++it) {
    if (it == 2) {  // --warmup-ms, as the rows' steps
      const double second = ms_last(e0, e1);
      for (int n = extra_warmup_steps(warmup_ms, 2 * second, second); n > 0; --n) step();
      BENCH_CUDA(cudaStreamSynchronize(st));
    }
    cudaEventRecord(e0, st);
    step();
    cudaEventRecord(e1, st);
    cudaEventSynchronize(e1);
    if (it >= 2) ms.push_back(ms_last(e0, e1));
  }
  for (void* x : {qkv, o, d_o, dq, dkv, lse, ws}) cudaFree(x);
  cudaStreamDestroy(st);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// The forward pack of one rank at cp = P on its own: Q [B, S/P, P hq, D] -> msg[P][S/P][B][hq][D],
// then the inverse unpack, beside a device-to-device cudaMemcpyAsync of the same bytes; and the
// forward's whole pack as a step runs it: Q, K and V into one message
// msg[P][S/P][B][(hq + 2 hkv)][D]. hq, hkv: the heads of the busiest rank (head_routing.h: Hq / P
// and Hkv / P when P divides Hkv; heads split unevenly, ceil(Hkv / P) KV heads' query groups), for
// every peer. With head_dim_v, Q|K|V rows are channels of gcd(D, Dv) values, and so are Q's FP8
// rows. GB/s count bytes read plus bytes written.
struct PackRate {
  double pack_gbs = 0, unpack_gbs = 0, copy_gbs = 0, qkv_pack_gbs = 0;
  double fp8_pack_gbs = 0, fp8_dequant_gbs = 0;  // Q into fp8 rows, and those rows back
};
PackRate measure_pack(const Shape& s, int P, int iters) {
  cudaSetDevice(0);
  const std::int64_t Sl = s.S / P;
  const bool shared = P >= s.Hkv;  // (ranks share a KV head, or own one each)
  const int hkv = shared ? 1 : (s.Hkv + P - 1) / P;
  const int hq = shared ? s.Hq / P : hkv * (s.Hq / s.Hkv);
  const std::size_t bytes = s.act_bytes(P * hq) / static_cast<std::size_t>(P);
  const std::size_t kv_bytes = s.act_bytes(P * hkv) / static_cast<std::size_t>(P);
  const std::size_t v_bytes = s.act_bytes(P * hkv, true) / static_cast<std::size_t>(P);
  const std::size_t qkv_bytes = bytes + kv_bytes + v_bytes;
  void *act = nullptr, *msg = nullptr, *k = nullptr, *v = nullptr;
  BENCH_CUDA(cudaMalloc(&act, bytes));
  BENCH_CUDA(cudaMalloc(&msg, qkv_bytes));
  BENCH_CUDA(cudaMalloc(&k, kv_bytes));
  BENCH_CUDA(cudaMalloc(&v, v_bytes));
  // Data movement does not depend on the values (unlike the attention kernel); nonzero (0x3C3C,
  // about 0.0115 in bf16) so that the fp8 pack scales its rows.
  for (auto [ptr, n] : {std::pair{act, bytes}, std::pair{k, kv_bytes}, std::pair{v, v_bytes}}) {
    BENCH_CUDA(cudaMemset(ptr, 0x3C, n));
  }
  const TensorView view =
      TensorView::contiguous(act, s.dtype, {s.B, Sl, P * hq, s.D}, Device::cuda(0));
  const TensorView kview =
      TensorView::contiguous(k, s.dtype, {s.B, Sl, P * hkv, s.D}, Device::cuda(0));
  const TensorView vview =
      TensorView::contiguous(v, s.dtype, {s.B, Sl, P * hkv, s.dim(true)}, Device::cuda(0));
  const kernels::MessageLayout layout{msg, s.dtype, P, Sl, s.B, hq, s.D};
  // Q|K|V rows as Ulysses packs them: channels of gcd(head_dim, head_dim_v) elements.
  const std::int64_t unit = std::gcd(s.dim(false), s.dim(true));
  const int qu = static_cast<int>(s.dim(false) / unit), vu = static_cast<int>(s.dim(true) / unit);
  const kernels::MessageLayout merged{msg, s.dtype, P, Sl, s.B, (hq + hkv) * qu + hkv * vu, unit};
  std::vector<int> begin(static_cast<std::size_t>(P)), kv_begin(static_cast<std::size_t>(P));
  for (int p = 0; p < P; ++p) {
    begin[static_cast<std::size_t>(p)] = p * hq;
    kv_begin[static_cast<std::size_t>(p)] = p * hkv;
  }
  cudaStream_t st;
  BENCH_CUDA(cudaStreamCreate(&st));
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  auto time = [&](std::size_t moved, auto&& op) {
    std::vector<float> ms;
    for (int it = 0; it < iters + 2; ++it) {
      cudaEventRecord(e0, st);
      op();
      cudaEventRecord(e1, st);
      cudaEventSynchronize(e1);
      float t = 0;
      cudaEventElapsedTime(&t, e0, e1);
      if (it >= 2) ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    return 2.0 * static_cast<double>(moved) / (ms[ms.size() / 2] * 1e-3) / 1e9;
  };
  PackRate r;
  r.pack_gbs = time(bytes, [&] { (void)kernels::pack_heads(view, begin, hq, layout, 0, st); });
  r.unpack_gbs = time(bytes, [&] { (void)kernels::unpack_heads(layout, 0, begin, hq, view, st); });
  r.copy_gbs = time(bytes, [&] { cudaMemcpyAsync(msg, act, bytes, cudaMemcpyDeviceToDevice, st); });
  // fp8 rows fit in the bf16 message buffer (unit + 1 bytes per row instead of 2 unit).
  const kernels::Fp8MessageLayout fp8{msg, P, Sl, s.B, hq * qu, unit};
  const auto fp8_moved = (bytes + static_cast<std::size_t>(P) * fp8.peer_bytes()) / 2;
  r.fp8_pack_gbs =
      time(fp8_moved, [&] { (void)kernels::pack_heads_fp8(view, begin, hq, fp8, 0, st); });
  r.fp8_dequant_gbs = time(fp8_moved, [&] {
    (void)kernels::dequantize_fp8(fp8, {act, s.dtype, P, Sl, s.B, hq * qu, unit}, Device::cuda(0),
                                  st);
  });
  r.qkv_pack_gbs = time(qkv_bytes, [&] {
    (void)kernels::pack_heads(view, begin, hq, merged, 0, st);
    (void)kernels::pack_heads(kview, kv_begin, hkv, merged, hq * qu, st);
    (void)kernels::pack_heads(vview, kv_begin, hkv, merged, (hq + hkv) * qu, st);
  });
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaStreamDestroy(st);
  for (void* ptr : {act, msg, k, v}) cudaFree(ptr);
  return r;
}

// Holds a stream for 20 ms from a host callback, so that everything enqueued behind it meanwhile
// runs back to back on the GPU: the timed loop then measures the device, not how fast the host
// issues calls (the host cost per call is reported separately).

void measure_a2a(std::vector<std::unique_ptr<Communicator>>& comms,
                 const std::vector<ncclComm_t>& raw, std::size_t bytes_per_peer,
                 double* ulysses_gbs, double* nccl_gbs, double* ulysses_host_us) {
  const int P = static_cast<int>(comms.size());
  std::vector<double> t_u(static_cast<std::size_t>(P)), t_n(static_cast<std::size_t>(P)),
      host_u(static_cast<std::size_t>(P));
  std::vector<std::thread> threads;
  for (int r = 0; r < P; ++r) {
    threads.emplace_back([&, r] {
      cudaSetDevice(r);
      void *send, *recv;
      BENCH_CUDA(cudaMalloc(&send, bytes_per_peer * P));
      BENCH_CUDA(cudaMalloc(&recv, bytes_per_peer * P));
      cudaMemset(send, 1, bytes_per_peer * P);
      cudaStream_t st;
      cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking);
      std::vector<std::size_t> counts(static_cast<std::size_t>(P), bytes_per_peer),
          offs(counts.size());
      for (int p = 0; p < P; ++p)
        offs[static_cast<std::size_t>(p)] = bytes_per_peer * static_cast<std::size_t>(p);
      cudaEvent_t e0, e1, gate;
      cudaEventCreate(&e0);
      cudaEventCreate(&e1);
      cudaEventCreateWithFlags(&gate, cudaEventDisableTiming);
      cudaStream_t holder;
      cudaStreamCreateWithFlags(&holder, cudaStreamNonBlocking);
      // Device ms per call with the calls queued up behind a held stream; host µs per call issued.
      auto time = [&](auto&& op, double* host_us) {
        for (int i = 0; i < 3; ++i) op();  // warm-up
        cudaLaunchHostFunc(holder, hold_stream, nullptr);
        cudaEventRecord(gate, holder);
        cudaStreamWaitEvent(st, gate, 0);
        for (int i = 0; i < 3; ++i) op();  // absorbs the ranks' different release times
        cudaEventRecord(e0, st);
        const int n = 10;
        const auto h0 = std::chrono::steady_clock::now();
        for (int i = 0; i < n; ++i) op();
        const auto h1 = std::chrono::steady_clock::now();
        cudaEventRecord(e1, st);
        cudaEventSynchronize(e1);
        if (host_us) *host_us = std::chrono::duration<double, std::micro>(h1 - h0).count() / n;
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        return ms / n;
      };
      t_u[static_cast<std::size_t>(r)] = time(
          [&] {
            (void)comms[static_cast<std::size_t>(r)]->all_to_all_v(send, counts, offs, recv, counts,
                                                                   offs, st);
          },
          &host_u[static_cast<std::size_t>(r)]);
      t_n[static_cast<std::size_t>(r)] = time(
          [&] {
            ncclAlltoAll(send, recv, bytes_per_peer, ncclUint8, raw[static_cast<std::size_t>(r)],
                         st);
          },
          nullptr);
      cudaStreamDestroy(holder);
      cudaEventDestroy(gate);
      cudaEventDestroy(e0);
      cudaEventDestroy(e1);
      cudaFree(send);
      cudaFree(recv);
      cudaStreamDestroy(st);
    });
  }
  for (auto& t : threads) t.join();
  const double sent = static_cast<double>(bytes_per_peer) * (P - 1);
  *ulysses_gbs = sent / (*std::max_element(t_u.begin(), t_u.end()) * 1e-3) / 1e9;
  *nccl_gbs = sent / (*std::max_element(t_n.begin(), t_n.end()) * 1e-3) / 1e9;
  *ulysses_host_us = *std::max_element(host_u.begin(), host_u.end());
}

// The PlanConfig knobs a row varies or the user sets.
struct PlanKnobs {
  int chunks = 1;
  bool keep_saved = false;
  SavedActivations saved = SavedActivations::kHeadSharded;
  int in_flight = 2;
  bool cuda_graph = false;  // time replays of a captured step (NCCL communicators only)
  bool queued = false;      // --steps queued: the timed steps issued back to back, their mean
  Payload payload = Payload::kNative;
  bool balanced = false;  // --doc-order balanced
};

// The training plan a row runs: the shape's attention and layout with the row's strategy and knobs.
PlanConfig plan_config(const Shape& s, const ParallelConfig& parallel, const PlanKnobs& knobs) {
  return {.attention = s.att,
          .parallel = parallel,
          .layout = s.packed() ? Layout::kTHD : Layout::kBSHD,
          .dtype = s.dtype,
          .batch = s.B,
          .seqlen = s.S,
          .training = true,
          .overlap_chunks = knobs.chunks,
          .backward_keeps_saved = knobs.keep_saved,
          .saved_activations = knobs.saved,
          .chunks_in_flight = knobs.in_flight,
          .payload = knobs.payload};
}

// A plan over P GPUs; each rank holds its shard (contiguous for ulysses, zigzag ranges for ring
// and hybrid); results gathered to the host for the check.
double run_plan(const Shape& s, const Inputs& in, std::vector<std::unique_ptr<Communicator>>& comms,
                const ParallelConfig& parallel, const PlanKnobs& knobs, int iters, HostOut* out,
                MemUse* mem, bool loopback, std::vector<CallRecord>* calls = nullptr,
                FirstStep* first = nullptr, double* host_ms = nullptr,
                std::vector<TimelineSpan>* timeline = nullptr,
                std::vector<double>* timeline_ms = nullptr, double warmup_ms = 0) {
  const int P = static_cast<int>(comms.size());
  // Device loopback: every rank on GPU 0, so memory is measured once for all of them.
  auto dev = [&](int r) { return loopback ? 0 : r; };
  const std::size_t shared_base = loopback ? used_bytes(0) : 0;
  const std::int64_t Sl = s.S / P;
  const PlanConfig cfg = plan_config(s, parallel, knobs);
  std::vector<double> rank_ms(static_cast<std::size_t>(P)), rank_host_ms(rank_ms);
  std::vector<std::size_t> rank_peak(static_cast<std::size_t>(P));
  std::vector<std::size_t> rank_held(static_cast<std::size_t>(P));
  std::vector<std::size_t> rank_ws(static_cast<std::size_t>(P)), rank_saved(rank_ws);
  if (out) {
    out->o.assign(in.q.size(), 0);
    out->dq.assign(in.q.size(), 0);
    out->dk.assign(in.k.size(), 0);
    out->dv.assign(in.k.size(), 0);
  }
  std::vector<std::thread> threads;
  std::mutex calls_mutex;
  std::vector<FirstStep> rank_first(static_cast<std::size_t>(P));
  if (timeline) {
    timeline->clear();
    timeline_ms->assign(static_cast<std::size_t>(P), 0.0);
  }
  // --warmup-ms: every rank's second warm-up step, so that all ranks run the same number of
  // extra warm-up steps (the slowest rank's count), which collective steps require.
  std::vector<double> rank_warm_ms(static_cast<std::size_t>(P));
  std::barrier warm_sync(P);
  for (int r = 0; r < P; ++r) {
    threads.emplace_back([&, r] {
      cudaSetDevice(dev(r));
      const std::size_t base = loopback ? shared_base : used_bytes(r);
      const auto created = std::chrono::steady_clock::now();
      auto kernel = create_cudnn_attention(dev(r));
      CallTimer timer(**kernel, r);
      // --timeline: the plan talks through a TimedComm and calls the kernel through the timer,
      // both marking spans while marks.on.
      StepMarks marks(r);
      TimedComm timed_comm(*comms[static_cast<std::size_t>(r)], marks);
      if (timeline) timer.marks = &marks;
      Communicator& plan_comm = timeline ? timed_comm : *comms[static_cast<std::size_t>(r)];
      auto plan = DistributedAttention::create(cfg, plan_comm, timer);
      if (!plan.is_ok()) {
        std::fprintf(stderr, "ulysses-bench: rank %d: %s\n", r, plan.status().to_string().c_str());
        std::exit(2);
      }
      auto shard_bytes = [&](int heads, bool value = false) {
        return static_cast<std::size_t>(s.B * Sl * heads * s.dim(value)) * 2;
      };
      void *q, *k, *v, *o, *d_o, *dq, *dk, *dv, *ws, *saved, *sinks = nullptr, *dsinks = nullptr;
      if (s.att.sinks) {  // every head's sinks on every rank; dSinks complete on every rank
        BENCH_CUDA(cudaMalloc(&sinks, in.sinks.size() * 4));
        BENCH_CUDA(cudaMalloc(&dsinks, in.sinks.size() * 4));
        BENCH_CUDA(cudaMemcpy(sinks, in.sinks.data(), in.sinks.size() * 4, cudaMemcpyHostToDevice));
      }
      BENCH_CUDA(cudaMalloc(&q, shard_bytes(s.Hq)));
      BENCH_CUDA(cudaMalloc(&k, shard_bytes(s.Hkv)));
      BENCH_CUDA(cudaMalloc(&v, shard_bytes(s.Hkv, true)));
      BENCH_CUDA(cudaMalloc(&o, shard_bytes(s.Hq, true)));
      BENCH_CUDA(cudaMalloc(&d_o, shard_bytes(s.Hq, true)));
      BENCH_CUDA(cudaMalloc(&dq, shard_bytes(s.Hq)));
      BENCH_CUDA(cudaMalloc(&dk, shard_bytes(s.Hkv)));
      BENCH_CUDA(cudaMalloc(&dv, shard_bytes(s.Hkv, true)));
      BENCH_CUDA(cudaMalloc(&ws, (*plan)->workspace_bytes()));
      BENCH_CUDA(cudaMalloc(&saved, (*plan)->saved_bytes()));
      rank_ws[static_cast<std::size_t>(r)] = (*plan)->workspace_bytes();
      rank_saved[static_cast<std::size_t>(r)] = (*plan)->saved_bytes();
      if (r == 0) {
        mem->io = static_cast<double>(2 * (shard_bytes(s.Hq) + shard_bytes(s.Hq, true) +
                                           shard_bytes(s.Hkv) + shard_bytes(s.Hkv, true))) /
                  kGiB;
      }
      // Shard r of [B, S, H, D]: this rank's token ranges of each batch entry, in order.
      const std::vector<TokenRange> ranges = shard_token_ranges(parallel, s.S, r, s.cu).value();
      void* cu = nullptr;
      if (s.packed()) {
        BENCH_CUDA(cudaMalloc(&cu, s.cu.size() * 4));
        BENCH_CUDA(cudaMemcpy(cu, s.cu.data(), s.cu.size() * 4, cudaMemcpyHostToDevice));
      }
      auto upload = [&](void* dst, const std::vector<std::uint16_t>& src, int heads, bool value) {
        const std::size_t tok = static_cast<std::size_t>(heads * s.dim(value));
        for (std::int64_t b = 0; b < s.B; ++b) {
          std::size_t at = static_cast<std::size_t>(b * Sl) * tok;
          for (const TokenRange& t : ranges) {
            const std::size_t n = static_cast<std::size_t>(t.end - t.begin) * tok;
            BENCH_CUDA(cudaMemcpy(static_cast<std::uint16_t*>(dst) + at,
                                  src.data() + static_cast<std::size_t>(b * s.S + t.begin) * tok,
                                  n * 2, cudaMemcpyHostToDevice));
            at += n;
          }
        }
      };
      upload(q, in.q, s.Hq, false);
      upload(k, in.k, s.Hkv, false);
      upload(v, in.v, s.Hkv, true);
      upload(d_o, in.d_o, s.Hq, true);
      auto act = [&](void* ptr, int heads, bool value = false) {
        const std::int64_t d = s.dim(value);
        if (s.packed()) {  // [T / cp, H, D]
          return TensorView::contiguous(ptr, s.dtype, {Sl, heads, d}, Device::cuda(dev(r)));
        }
        return TensorView::contiguous(ptr, s.dtype, {s.B, Sl, heads, d}, Device::cuda(dev(r)));
      };
      const auto* cu_dev = static_cast<const std::int32_t*>(cu);
      ForwardArgs f{.q = act(q, s.Hq),
                    .k = act(k, s.Hkv),
                    .v = act(v, s.Hkv, true),
                    .o = act(o, s.Hq, true),
                    .cu_seqlens = s.cu,
                    .cu_seqlens_device = cu_dev,
                    .workspace = ws,
                    .saved = saved};
      BackwardArgs b{.d_o = act(d_o, s.Hq, true),
                     .dq = act(dq, s.Hq),
                     .dk = act(dk, s.Hkv),
                     .dv = act(dv, s.Hkv, true),
                     .cu_seqlens = s.cu,
                     .cu_seqlens_device = cu_dev,
                     .workspace = ws,
                     .saved = saved,
                     .q = f.q,  // read with saved_activations = lse
                     .k = f.k,
                     .v = f.v,
                     .o = f.o};
      if (s.att.sinks) {
        f.sinks = b.sinks =
            TensorView::contiguous(sinks, DType::kFloat32, {s.Hq}, Device::cuda(dev(r)));
        b.dsinks = TensorView::contiguous(dsinks, DType::kFloat32, {s.Hq}, Device::cuda(dev(r)));
      }
      cudaStream_t st;
      cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking);
      cudaEvent_t e0, e1;
      cudaEventCreate(&e0);
      cudaEventCreate(&e1);
      auto fail = [&](const Status& status) {
        std::fprintf(stderr, "ulysses-bench: rank %d: %s\n", r, status.to_string().c_str());
        std::exit(1);
      };
      auto step = [&] {
        Status status = (*plan)->forward(f, st);
        if (status.is_ok()) status = (*plan)->backward(b, st);
        if (!status.is_ok()) fail(status);
      };
      // With --cuda-graph on, the two warm-up steps run directly (they build the caches), then one
      // step is captured and the timed steps are its replays.
      cudaGraphExec_t graph = nullptr;
      std::vector<double> ms, host;
      std::size_t peak = 0;
      // Issues n steps (or replays) between two events and waits for them: their GPU ms and the
      // host ms it took to issue them.
      auto run_steps = [&](int n) {
        cudaEventRecord(e0, st);
        const auto h0 = std::chrono::steady_clock::now();
        for (int i = 0; i < n; ++i) {
          if (graph) {
            BENCH_CUDA(cudaGraphLaunch(graph, st));
          } else {
            step();
          }
        }
        const auto h1 = std::chrono::steady_clock::now();
        cudaEventRecord(e1, st);
        if (Status status = synchronize(*comms[static_cast<std::size_t>(r)], st); !status.is_ok()) {
          fail(status);
        }
        peak = std::max(peak, used_bytes(dev(r)) - base);
        float t = 0;
        cudaEventElapsedTime(&t, e0, e1);
        return std::pair<double, double>(
            t, std::chrono::duration<double, std::milli>(h1 - h0).count());
      };
      FirstStep& mine = rank_first[static_cast<std::size_t>(r)];
      for (int it = 0; it < 2; ++it) {  // warm-up
        const double t = run_steps(1).first;
        if (it == 1) rank_warm_ms[static_cast<std::size_t>(r)] = t;
        if (it == 0) {
          mine.ms =
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - created)
                  .count();
          const CudnnGraphStats built = graph_stats(**kernel);
          mine.graphs = built.graphs;
          mine.build_s = built.build_seconds;
        }
      }
      warm_sync.arrive_and_wait();
      const double slowest = *std::max_element(rank_warm_ms.begin(), rank_warm_ms.end());
      const int extra = extra_warmup_steps(warmup_ms, 2 * slowest, slowest);  // same on every rank
      if (extra > 0) run_steps(extra);
      if (knobs.cuda_graph) {
        cudaGraph_t captured = nullptr;
        BENCH_CUDA(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
        step();
        BENCH_CUDA(cudaStreamEndCapture(st, &captured));
        BENCH_CUDA(cudaGraphInstantiate(&graph, captured, 0));
        BENCH_CUDA(cudaGraphDestroy(captured));
      }
      if (knobs.queued) {  // iters steps back to back: one interval, its mean per step
        const auto [t, h] = run_steps(iters);
        ms.push_back(t / iters);
        host.push_back(h / iters);
      } else {  // each step waited for on its own: their median
        for (int it = 0; it < iters; ++it) {
          const auto [t, h] = run_steps(1);
          ms.push_back(t);
          host.push_back(h);
        }
      }
      mine.graphs_later = graph_stats(**kernel).graphs - mine.graphs;
      std::sort(ms.begin(), ms.end());
      std::sort(host.begin(), host.end());
      rank_ms[static_cast<std::size_t>(r)] = ms[ms.size() / 2];
      rank_host_ms[static_cast<std::size_t>(r)] = host[host.size() / 2];
      rank_peak[static_cast<std::size_t>(r)] = peak;
      rank_held[static_cast<std::size_t>(r)] = (*plan)->held_bytes() + timer.held_bytes();
      if (out) {
        auto down = [&](void* src, std::vector<float>& dst, int heads, bool value) {
          const std::size_t tok = static_cast<std::size_t>(heads * s.dim(value));
          std::vector<std::uint16_t> h(static_cast<std::size_t>(s.B * Sl) * tok);
          BENCH_CUDA(cudaMemcpy(h.data(), src, h.size() * 2, cudaMemcpyDeviceToHost));
          const std::vector<float> fl = to_float(h);
          for (std::int64_t bb = 0; bb < s.B; ++bb) {
            std::size_t at = static_cast<std::size_t>(bb * Sl) * tok;
            for (const TokenRange& t : ranges) {
              const std::size_t n = static_cast<std::size_t>(t.end - t.begin) * tok;
              std::copy(fl.begin() + static_cast<std::ptrdiff_t>(at),
                        fl.begin() + static_cast<std::ptrdiff_t>(at + n),
                        dst.begin() + static_cast<std::ptrdiff_t>(
                                          static_cast<std::size_t>(bb * s.S + t.begin) * tok));
              at += n;
            }
          }
        };
        down(o, out->o, s.Hq, true);
        down(dq, out->dq, s.Hq, false);
        down(dk, out->dk, s.Hkv, false);
        down(dv, out->dv, s.Hkv, true);
        if (s.att.sinks && r == 0) {
          out->dsinks.resize(in.sinks.size());
          BENCH_CUDA(
              cudaMemcpy(out->dsinks.data(), dsinks, in.sinks.size() * 4, cudaMemcpyDeviceToHost));
        }
      }
      if (calls) {  // --trace-calls: more steps, each kernel call timed alone (warmed up again
        // after the checks' idle time, to the timed steps' clocks)
        if (extra > 0) run_steps(extra);
        timer.on = true;
        for (int t = 0; t < kTraceSteps; ++t) step();
        if (Status status = synchronize(*comms[static_cast<std::size_t>(r)], st); !status.is_ok()) {
          fail(status);
        }
        timer.on = false;
        const std::vector<CallRecord> fastest = fastest_of_steps(timer.records, kTraceSteps);
        std::lock_guard<std::mutex> lock(calls_mutex);
        calls->insert(calls->end(), fastest.begin(), fastest.end());
      }
      if (timeline) {  // --timeline: more steps with their spans marked; the fastest one kept
        if (extra > 0) run_steps(extra);
        marks.on = true;
        double best = INFINITY;
        std::vector<TimelineSpan> kept;
        for (int t = 0; t < kTraceSteps; ++t) {
          marks.start(st);
          step();
          BENCH_CUDA(cudaEventRecord(e1, st));
          if (Status status = synchronize(*comms[static_cast<std::size_t>(r)], st);
              !status.is_ok()) {
            fail(status);
          }
          const double step_ms = marks.ms_to(e1);
          if (step_ms < best) {
            best = step_ms;
            kept = marks.spans();
          }
        }
        marks.on = false;
        std::lock_guard<std::mutex> lock(calls_mutex);
        timeline->insert(timeline->end(), kept.begin(), kept.end());
        (*timeline_ms)[static_cast<std::size_t>(r)] = best;
      }
      if (graph) cudaGraphExecDestroy(graph);
      for (void* x : {q, k, v, o, d_o, dq, dk, dv, ws, saved, cu, sinks, dsinks}) cudaFree(x);
      cudaStreamDestroy(st);
    });
  }
  for (auto& t : threads) t.join();
  if (timeline) {
    std::stable_sort(timeline->begin(), timeline->end(),
                     [](const TimelineSpan& a, const TimelineSpan& b) { return a.rank < b.rank; });
  }
  if (first) {
    *first = {};
    for (const FirstStep& f : rank_first) first->merge(f);
  }
  if (host_ms) *host_ms = *std::max_element(rank_host_ms.begin(), rank_host_ms.end());
  if (calls) {
    std::stable_sort(calls->begin(), calls->end(),
                     [](const CallRecord& a, const CallRecord& b) { return a.rank < b.rank; });
  }
  // The breakdown is the peak rank's (its own GPU), or on the loopback, where every rank's memory
  // is on one GPU, the mean per rank; plan_by_rank tells ranks apart either way.
  const auto top = std::max_element(rank_peak.begin(), rank_peak.end());
  const auto t = static_cast<std::size_t>(top - rank_peak.begin());
  auto mean = [&](const std::vector<std::size_t>& v) {
    return static_cast<double>(std::accumulate(v.begin(), v.end(), std::size_t{0})) / P / kGiB;
  };
  mem->peak = static_cast<double>(*top) / kGiB;
  mem->held = static_cast<double>(rank_held[t]) / kGiB;
  mem->workspace = static_cast<double>(rank_ws[t]) / kGiB;
  mem->saved = static_cast<double>(rank_saved[t]) / kGiB;
  if (loopback) {
    mem->peak /= P;
    mem->held = mean(rank_held);
    mem->workspace = mean(rank_ws);
    mem->saved = mean(rank_saved);
  }
  mem->plan_by_rank.clear();
  for (int r = 0; r < P; ++r) {
    const auto i = static_cast<std::size_t>(r);
    mem->plan_by_rank.push_back(static_cast<double>(rank_ws[i] + rank_saved[i]) / kGiB);
  }
  return *std::max_element(rank_ms.begin(), rank_ms.end());
}

// Whether the plan run_plan() would build is supported (DistributedAttention::check_support:
// validation and the kernel's support, no communication).
Status check_plan_support(const Shape& s, const ParallelConfig& parallel, const PlanKnobs& knobs,
                          const Communicator& comm) {
  const PlanConfig cfg = plan_config(s, parallel, knobs);
  auto kernel = create_cudnn_attention(comm.device().index);
  if (!kernel.is_ok()) return kernel.status();
  return DistributedAttention::check_support(cfg, comm, **kernel);
}

// " --warmup-ms X" and " --rounds R" where the run did not use the defaults.
std::string timing_flags(const Options& o) {
  std::ostringstream os;
  if (o.warmup_ms != Options{}.warmup_ms) os << " --warmup-ms " << o.warmup_ms;
  if (o.rounds != Options{}.rounds) os << " --rounds " << o.rounds;
  return os.str();
}

// --rounds: rows[begin..] holds R rounds of one sequence length's rows, the same rows in the same
// order each round, each round's first the cp = 1 run. Leaves one row each: the median of its step
// times and of its efficiencies paired within a round (sweep_rounds.h), every round's values, and
// round 0's other fields (its checks, traces, memory and first step). False where the rounds did
// not hold the same rows.
bool merge_rounds(std::vector<GpuRow>& rows, std::size_t begin, int R) {
  const std::size_t all = rows.size() - begin, rounds = static_cast<std::size_t>(R);
  if (all % rounds != 0) return false;
  const std::size_t n = all / rounds;
  std::vector<double> t1(rounds);
  for (std::size_t r = 0; r < rounds; ++r) {
    const GpuRow& first = rows[begin + r * n];
    if (!first.kernel_alone()) return false;
    t1[r] = first.ms;
  }
  for (std::size_t i = 0; i < n; ++i) {
    GpuRow& row = rows[begin + i];
    std::vector<double> ms(rounds), host(rounds);
    for (std::size_t r = 0; r < rounds; ++r) {
      const GpuRow& x = rows[begin + r * n + i];
      if (x.cp != row.cp || x.via() != row.via() || x.chunks != row.chunks ||
          x.strategy != row.strategy || x.saved != row.saved) {
        return false;
      }
      ms[r] = x.ms;
      host[r] = x.host_ms;
    }
    const RoundSummary sum = summarize_rounds(t1, ms, row.cp);
    row.tflops *= row.ms / sum.ms;
    row.ms = sum.ms;
    row.efficiency = sum.efficiency;
    row.host_ms = median_of(host);
    row.round_ms = std::move(ms);
    row.round_efficiency = sum.efficiencies;
    for (std::size_t d = 0; d < row.t1_by_gpu.size(); ++d) {  // (the cp = 1 row)
      std::vector<double> by_round(rounds);
      for (std::size_t r = 0; r < rounds; ++r) by_round[r] = rows[begin + r * n].t1_by_gpu[d];
      row.t1_by_gpu[d] = median_of(by_round);
    }
  }
  rows.resize(begin + n);
  return true;
}

std::string repro(const Shape& s, int cp, const PlanKnobs& knobs, int iters,
                  const ParallelConfig& parallel = {}) {
  std::ostringstream os;
  os << "ulysses-bench --device gpu --cp " << cp << " --strategy "
     << strategy_name(parallel.strategy)
     << (parallel.strategy == Strategy::kHybrid
             ? " --ulysses-degree " + std::to_string(parallel.ulysses_degree)
             : std::string())
     << " --chunks " << knobs.chunks << " --seq " << s.S << " --batch " << s.B << " --heads "
     << s.Hq << " --kv-heads " << s.Hkv << " --head-dim " << s.D
     << (s.att.mixed_dims() ? " --head-dim-v " + std::to_string(s.att.value_dim()) : std::string())
     << " --dtype bf16" << (s.att.causal ? " --causal" : " --no-causal")
     << (s.att.window_left >= 0 || s.att.window_right >= 0
             ? " --window " + std::to_string(s.att.window_left) + "," +
                   std::to_string(s.att.window_right)
             : std::string())
     << (s.att.sinks ? " --sinks" : "") << (knobs.keep_saved ? " --keep-saved" : "")
     << (knobs.saved == SavedActivations::kLseOnly ? " --saved lse" : "")
     // Slots in flight exist only for Ulysses' head chunks with lse.
     << (knobs.saved == SavedActivations::kLseOnly && knobs.chunks > 1 &&
                 parallel.strategy == Strategy::kUlysses
             ? " --in-flight " + std::to_string(knobs.in_flight)
             : std::string())
     << (knobs.payload == Payload::kFp8 ? " --payload fp8" : "")
     << (parallel.packed_sharding != PackedSharding::kDefault
             ? " --packed-sharding " + std::string(packed_sharding_name(parallel.packed_sharding))
             : std::string())
     << (s.packed() ? " --varlen " + std::to_string(s.cu.size() - 1) : std::string())
     << (knobs.balanced ? " --doc-order balanced" : "") << " --iters " << iters;
  return os.str();
}

}  // namespace

int run_gpu_bench(Options o, const std::set<std::string>& given) {
  const int ngpu = cuda_device_count();
  if (ngpu < 1) {
    std::fprintf(stderr, "ulysses-bench: --device gpu but no GPU is visible\n");
    return 2;
  }
  if (!given.count("--seq")) o.seq = {8192, 32768, 131072};
  if (!o.timeline_trace.empty()) o.timeline = true;
  if (!given.count("--heads")) o.heads = 32;
  if (!given.count("--kv-heads")) o.kv_heads = 8;
  if (!given.count("--head-dim")) o.head_dim = 128;
  if (!given.count("--iters")) o.iters = 5;
  if (!given.count("--chunks")) o.chunks = {1, 2, 4};
  const bool any_fp8 = std::find(o.payload.begin(), o.payload.end(), "fp8") != o.payload.end();
  for (const std::string& name : o.strategy) {
    if (auto st = parse_strategy(name); !st.is_ok()) {
      std::fprintf(stderr, "ulysses-bench: %s\n", st.status().to_string().c_str());
      return 2;
    }
  }
  std::vector<int> cps = given.count("--cp") ? o.cp : std::vector<int>{ngpu};
  if (o.dtype != "bf16") {
    std::fprintf(stderr,
                 "ulysses-bench: the GPU benchmark runs bf16 (got --dtype %s); the GPU tests cover "
                 "fp16\n",
                 o.dtype.c_str());
    return 2;
  }
  if (o.varlen > 0 && o.batch != 1) {
    std::fprintf(stderr, "ulysses-bench: --varlen packs one batch entry (got --batch %lld)\n",
                 static_cast<long long>(o.batch));
    return 2;
  }
  const int max_cp = *std::max_element(cps.begin(), cps.end());
  const bool all_loopback = std::all_of(o.transport.begin(), o.transport.end(),
                                        [](const std::string& t) { return t == "loopback"; });
  if (max_cp > ngpu && !all_loopback) {
    std::fprintf(stderr,
                 "ulysses-bench: --cp %d needs %d GPUs, found %d (--transport loopback: "
                 "virtual ranks on one GPU)\n",
                 max_cp, max_cp, ngpu);
    return 2;
  }
  if (std::find(o.transport.begin(), o.transport.end(), "loopback") != o.transport.end()) {
    std::printf(
        "# --transport loopback: those cp > 1 rows run cp virtual ranks on GPU 0 (device "
        "loopback): checks and memory per rank (the GPU's peak / cp, no NCCL buffers), not "
        "speed\n");
  }
  std::printf(
      "# ulysses-bench GPU path: %d GPU(s), cuDNN %d; B=%lld Hq=%d Hkv=%d D=%d%s bf16 %s%s%s, "
      "fwd+bwd, %d timed iterations (median) after >= %.0f ms of warm-up%s, backward counted as "
      "2.5x forward\n",
      ngpu, cudnn_runtime_version(), static_cast<long long>(o.batch), o.heads, o.kv_heads,
      o.head_dim,
      o.head_dim_v > 0 && o.head_dim_v != o.head_dim
          ? (" Dv=" + std::to_string(o.head_dim_v)).c_str()
          : "",
      o.causal ? "causal" : "full",
      o.window[0] >= 0 || o.window[1] >= 0
          ? (" window " + std::to_string(o.window[0]) + "," + std::to_string(o.window[1]) +
             " (TFLOP/s count the visible pairs)")
                .c_str()
          : "",
      o.sinks ? " sinks" : "", o.iters, o.warmup_ms,
      o.rounds > 1 ? (", " + std::to_string(o.rounds) +
                      " rounds (cp = 1 and every row in turn; ms: the median over the rounds, "
                      "eff: the median of each round's T1 / (cp ms))")
                         .c_str()
                   : "");
  std::printf(
      "# bal: the slowest rank's attention pairs over the mean (attention_pairs_by_rank(); 1 = "
      "even), what an uneven layout adds to a step on cp GPUs\n");
  std::printf(
      "%8s %3s %-8s %-22s %5s %6s %10s %10s %6s %5s %10s %10s %8s %9s %9s %9s %9s %9s %5s\n", "seq",
      "cp", "strategy", "via", "saved", "chunks", "ms/step", "TFLOP/s/GPU", "eff", "bal",
      "a2a GB/s", "NCCL GB/s", "peak GiB", "errO", "errdQ", "errdK", "errdV", "exact", "check");
  std::vector<GpuRow> rows;
  bool all_pass = true;
  for (std::int64_t seq : o.seq) {
    Shape s{o.batch,
            seq,
            o.heads,
            o.kv_heads,
            o.head_dim,
            DType::kBFloat16,
            AttentionConfig{.num_heads_q = o.heads,
                            .num_heads_kv = o.kv_heads,
                            .head_dim = o.head_dim,
                            .head_dim_v = o.head_dim_v,
                            .causal = o.causal,
                            .window_left = o.window[0],
                            .window_right = o.window[1],
                            .sinks = o.sinks}};
    const std::uint64_t seed = o.seed ? o.seed : std::random_device{}();
    if (o.varlen > 0) {
      std::int64_t unit = 2;  // documents of 2 lcm(cp) tokens: every strategy's zigzag unit
      for (int cp : cps) unit = std::lcm(unit, std::int64_t{2} * cp);
      s.cu = document_offsets(o.varlen, seq, unit, seed);
      if (s.cu.empty()) {
        std::fprintf(stderr,
                     "ulysses-bench: --varlen %d does not fit %lld tokens in units of %lld\n",
                     o.varlen, static_cast<long long>(seq), static_cast<long long>(unit));
        return 2;
      }
      std::printf("# seq %lld: %d packed documents (layout thd), tokens:",
                  static_cast<long long>(seq), o.varlen);
      for (std::size_t i = 0; i + 1 < s.cu.size(); ++i) std::printf(" %d", s.cu[i + 1] - s.cu[i]);
      std::printf(" (seed %llu)\n", static_cast<unsigned long long>(seed));
    }
    const Inputs in = make_inputs(s, seed);
    HostOut ref;
    // --payload fp8 rows are checked against cp = 1 on the inputs rounded as they travel (their
    // error columns stay against `ref`: what fp8 costs in accuracy): Q, K, V and dO for ulysses,
    // K and V for ring and hybrid.
    HostOut ref_fp8, ref_fp8_kv;
    const std::size_t seq_rows = rows.size();  // this length's first row
    // --rounds: cp = 1 and every row in turn, R times (merged below); the checks, call traces and
    // timelines in round 0 only.
    for (int round = 0; round < o.rounds; ++round) {
      const bool first_round = round == 0;
      const bool check = o.check && first_round;
      MemUse m1;
      std::vector<CallRecord> calls1;
      FirstStep first1;
      const double t1 =
          run_single(s, in, o.iters, check ? &ref : nullptr, &m1, Fp8Inputs::kNone,
                     o.trace_calls && first_round ? &calls1 : nullptr, &first1, o.warmup_ms);
      const bool any_ulysses =
          std::find(o.strategy.begin(), o.strategy.end(), "ulysses") != o.strategy.end();
      const bool any_ring = std::any_of(o.strategy.begin(), o.strategy.end(),
                                        [](const std::string& n) { return n != "ulysses"; });
      if (any_fp8 && check) {
        MemUse unused;
        if (any_ulysses) run_single(s, in, 1, &ref_fp8, &unused, Fp8Inputs::kQkvDo);
        if (any_ring) run_single(s, in, 1, &ref_fp8_kv, &unused, Fp8Inputs::kKv);
      }
      GpuRow r1;  // cp = 1: the kernel on the whole sequence, no communicator
      r1.seq = seq;
      r1.ms = t1;
      r1.tflops = flops_per_step(s) / (t1 * 1e-3) / 1e12;
      r1.peak_gib = m1.peak;
      r1.transport = "none";
      r1.io_gib = m1.io;
      r1.workspace_gib = m1.workspace;
      r1.held_gib = m1.held;
      r1.first = first1;
      r1.repro = repro(s, 1, PlanKnobs{}, o.iters) + timing_flags(o);
      r1.calls = std::move(calls1);
      // cp = 1 on each other GPU the rows use, alone: a cp > 1 step runs at its slowest GPU's
      // pace, so GPUs of unequal speed show here rather than as the library's share of the step.
      r1.t1_by_gpu.push_back(t1);
      for (int d = 1; d < (all_loopback ? 1 : max_cp); ++d) {
        MemUse unused;
        r1.t1_by_gpu.push_back(run_single(s, in, o.iters, nullptr, &unused, Fp8Inputs::kNone,
                                          nullptr, nullptr, o.warmup_ms, d));
      }
      BENCH_CUDA(cudaSetDevice(0));
      rows.push_back(r1);
      // cp = 1 in --cp: the plans on one GPU too, beside the kernel alone (what the library costs
      // where nothing travels).
      for (int cp : cps) {
        // (Which head counts a strategy takes on cp ranks, the library says when the plan is
        // created: ulysses splits them unevenly where cp < num_heads_kv.)
        if (seq % cp != 0) {
          std::fprintf(stderr, "ulysses-bench: seq %lld not divisible by cp %d\n",
                       static_cast<long long>(seq), cp);
          return 2;
        }
        for (const std::string& transport : o.transport) {
          const bool loopback = transport == "loopback";
          // Communicators: ulysses' (NCCL, peer copies or device loopback), and raw NCCL ones for
          // the reference all-to-all.
          std::vector<std::unique_ptr<Communicator>> comms(static_cast<std::size_t>(cp));
          std::vector<ncclComm_t> raw;  // NCCL's own communicators, for its raw all-to-all
          if (loopback || transport == "peer") {
            std::vector<int> devices(static_cast<std::size_t>(cp), 0);
            for (int r = 0; r < cp && !loopback; ++r) devices[static_cast<std::size_t>(r)] = r;
            auto group =
                loopback ? create_device_loopback_group(cp, 0) : create_peer_copy_group(devices);
            if (!group.is_ok()) {
              std::fprintf(stderr, "ulysses-bench: %s\n", group.status().to_string().c_str());
              return 1;
            }
            comms = std::move(group).value();
          }
          if (transport == "nccl" || transport == "nccl-grouped") {
            auto id = create_nccl_unique_id();
            NcclOptions options;
            options.native_all_to_all = transport == "nccl";
            std::vector<std::thread> init;
            for (int r = 0; r < cp; ++r) {
              init.emplace_back([&, r] {
                auto c = create_nccl_communicator(*id, cp, r, r, options);
                if (!c.is_ok()) {
                  std::fprintf(stderr, "ulysses-bench: %s\n", c.status().to_string().c_str());
                  std::exit(1);
                }
                comms[static_cast<std::size_t>(r)] = std::move(c).value();
              });
            }
            for (auto& t : init) t.join();
          }
          if (!loopback) {  // NCCL's own all-to-all on the same bytes, for comparison
            raw.resize(static_cast<std::size_t>(cp));
            std::vector<int> devs(static_cast<std::size_t>(cp));
            for (int r = 0; r < cp; ++r) devs[static_cast<std::size_t>(r)] = r;
            ncclCommInitAll(raw.data(), cp, devs.data());
          }
          if (transport == "nccl-blocking") {  // those (blocking) communicators, wrapped
            for (int r = 0; r < cp; ++r) {
              auto c = wrap_nccl_communicator(raw[static_cast<std::size_t>(r)], r);
              if (!c.is_ok()) {
                std::fprintf(stderr, "ulysses-bench: %s\n", c.status().to_string().c_str());
                return 1;
              }
              comms[static_cast<std::size_t>(r)] = std::move(c).value();
            }
          }

          const int hkv_local = o.kv_heads / cp;
          // One row per strategy (ulysses: per saved-activations choice and pipeline chunk count).
          std::vector<std::pair<ParallelConfig, PlanKnobs>> plans;
          const PlanKnobs plain{.keep_saved = o.keep_saved};
          for (const std::string& name : o.strategy) {
            const Strategy strategy = parse_strategy(name).value();
            if (strategy == Strategy::kUlysses) {
              for (const std::string& name_saved : o.saved) {
                const SavedActivations saved = parse_saved_activations(name_saved).value();
                for (int chunks : o.chunks) {
                  if (chunks > 1 && cp > 1 && hkv_local < chunks) {
                    if (first_round) {
                      std::printf(
                          "#   seq %lld cp %d ulysses via %s: --chunks %d skipped, it exceeds the "
                          "fewest KV heads a rank owns (%d)\n",
                          static_cast<long long>(seq), cp, transport.c_str(), chunks, hkv_local);
                    }
                    continue;
                  }
                  if (chunks > 1 && cp == 1) continue;  // (one call for every head: no exchange)
                  // Slots in flight matter only for lse with several chunks: one row per value
                  // then.
                  const bool slots = saved == SavedActivations::kLseOnly && chunks > 1;
                  for (int in_flight : slots ? o.in_flight : std::vector<int>{2}) {
                    for (const std::string& payload : o.payload) {
                      plans.push_back(
                          {ParallelConfig{.cp = cp},
                           PlanKnobs{.chunks = chunks,
                                     .keep_saved = o.keep_saved,
                                     .saved = saved,
                                     .in_flight = in_flight,
                                     .payload = parse_payload(payload).value()}});  // CLI-checked
                    }
                  }
                }
              }
            } else if (strategy == Strategy::kRing || strategy == Strategy::kAllGather ||
                       (o.ulysses_degree > 1 && cp % o.ulysses_degree == 0 &&
                        cp > o.ulysses_degree)) {
              const bool zigzag_ring = strategy == Strategy::kRing || strategy == Strategy::kHybrid;
              for (const PackedSharding sharding : packed_shardings(o, zigzag_ring && s.packed())) {
                for (const std::string& name_saved : o.saved) {
                  const ParallelConfig parallel{
                      .strategy = strategy,
                      .cp = cp,
                      .ulysses_degree = strategy == Strategy::kHybrid ? o.ulysses_degree : 0,
                      .packed_sharding = sharding};
                  for (const std::string& payload : o.payload) {
                    PlanKnobs knobs = plain;
                    knobs.saved = parse_saved_activations(name_saved).value();
                    knobs.payload = parse_payload(payload).value();  // CLI-checked
                    plans.push_back({parallel, knobs});
                  }
                }
              }
            } else {
              if (first_round) {
                std::printf(
                    "#   seq %lld cp %d hybrid via %s: skipped, --ulysses-degree %d must "
                    "divide cp and leave a ring of 2 or more (below cp)\n",
                    static_cast<long long>(seq), cp, transport.c_str(), o.ulysses_degree);
              }
            }
          }
          // Every plan once per --cuda-graph and --steps choice; graphs only where one thread's
          // capture can hold a rank's step (NCCL: ranks do not hand events to each other across
          // threads).
          const bool nccl =
              transport == "nccl" || transport == "nccl-grouped" || transport == "nccl-blocking";
          std::vector<std::pair<ParallelConfig, PlanKnobs>> runs;
          for (const std::string& graph : o.cuda_graph) {
            if (graph == "on" && !nccl) continue;
            for (auto [parallel, knobs] : plans) {
              for (const std::string& steps : o.steps) {
                knobs.cuda_graph = graph == "on";
                knobs.queued = steps == "queued";
                for (const std::string& order :
                     s.packed() ? o.doc_order : std::vector<std::string>{"given"}) {
                  knobs.balanced = order == "balanced";
                  runs.push_back({parallel, knobs});
                }
              }
            }
          }
          for (const auto& [parallel, knobs] : runs) {
            const int chunks = knobs.chunks;
            if (seq % parallel.sequence_multiple() != 0) continue;
            // A combination the plan refuses (e.g. ring with windows on packed documents) is named
            // and skipped rather than ending the sweep; the check communicates nothing.
            if (Status support = check_plan_support(s, parallel, knobs, *comms.front());
                !support.is_ok()) {
              if (first_round) {
                std::printf("#   seq %lld cp %d %s via %s: skipped, %s\n",
                            static_cast<long long>(seq), cp,
                            std::string(strategy_name(parallel.strategy)).c_str(),
                            transport.c_str(), support.to_string().c_str());
              }
              continue;
            }
            // --doc-order balanced: the documents in the order balance_packed_sequences() gives
            // this row's layout, the inputs' tokens moved with them (and the results moved back
            // for the check); skipped where the order changes nothing.
            Shape rs = s;
            Inputs moved;
            std::vector<std::int64_t> tokens;
            if (knobs.balanced) {
              auto order = balance_packed_sequences(parallel, s.att, seq, s.cu);
              if (!order.is_ok() || order->cu_seqlens == s.cu) {
                if (first_round) {
                  std::printf("#   seq %lld cp %d %s via %s: documents not reordered (%s)\n",
                              static_cast<long long>(seq), cp,
                              std::string(strategy_name(parallel.strategy)).c_str(),
                              transport.c_str(),
                              order.is_ok() ? "already the best order found for this layout"
                                            : order.status().to_string().c_str());
                }
                continue;
              }
              rs.cu = order->cu_seqlens;
              for (const std::int32_t d : order->order) {
                for (std::int64_t t = s.cu[d]; t < s.cu[d + 1]; ++t) tokens.push_back(t);
              }
              for (std::int64_t t = s.cu.back(); t < seq; ++t) tokens.push_back(t);  // padding
              moved = {reorder_tokens(in.q, tokens, false), reorder_tokens(in.k, tokens, false),
                       reorder_tokens(in.v, tokens, false), reorder_tokens(in.d_o, tokens, false),
                       in.sinks};
            }
            HostOut got;
            MemUse mem;
            std::vector<CallRecord> calls;
            FirstStep first;
            double host_ms = 0;
            std::vector<TimelineSpan> timeline;
            std::vector<double> timeline_ms;
            const double tp = run_plan(rs, knobs.balanced ? moved : in, comms, parallel, knobs,
                                       o.iters, check ? &got : nullptr, &mem, loopback,
                                       o.trace_calls && first_round ? &calls : nullptr, &first,
                                       &host_ms, o.timeline && first_round ? &timeline : nullptr,
                                       &timeline_ms, o.warmup_ms);
            if (!tokens.empty()) {
              for (std::vector<float>* x : {&got.o, &got.dq, &got.dk, &got.dv}) {
                *x = reorder_tokens(*x, tokens, true);
              }
            }
            GpuRow row{seq,           cp, std::string(strategy_name(parallel.strategy)),
                       chunks,        tp, flops_per_step(s) / cp / (tp * 1e-3) / 1e12,
                       t1 / (cp * tp)};
            row.saved = saved_activations_name(knobs.saved);
            row.in_flight = knobs.in_flight;
            row.cuda_graph = knobs.cuda_graph;
            row.queued = knobs.queued;
            row.payload = payload_name(knobs.payload);
            row.sharding = packed_sharding_name(parallel.packed_sharding);
            row.balanced = knobs.balanced;
            if (auto balance = rank_balance(parallel, s.att, seq, rs.cu); balance.is_ok()) {
              row.balance = *balance;
            }
            row.peak_gib = mem.peak;
            row.io_gib = mem.io;
            row.workspace_gib = mem.workspace;
            row.saved_gib = mem.saved;
            row.held_gib = mem.held;
            row.first = first;
            row.host_ms = host_ms;
            row.plan_gib_by_rank = mem.plan_by_rank;
            const bool ulysses = parallel.strategy == Strategy::kUlysses;
            // The forward Q/K/V message: Sl * B * ((hq + hkv) D + hkv Dv) elements per peer.
            const std::int64_t hq = o.heads / cp, hkv = std::max(1, o.kv_heads / cp);
            const std::size_t msg =
                static_cast<std::size_t>(seq / cp * o.batch *
                                         ((hq + hkv) * s.dim(false) + hkv * s.dim(true))) *
                2;
            // (Ulysses' exchange; other strategies' rows report none.)
            row.a2a_mib = ulysses && cp > 1 ? static_cast<double>(msg) * cp / (1 << 20) : 0.0;
            if (first_round && ulysses && cp > 1 && chunks == 1 &&
                knobs.saved == SavedActivations::kHeadSharded && !loopback && !knobs.cuda_graph &&
                knobs.payload == Payload::kNative) {
              measure_a2a(comms, raw, msg, &row.a2a_gbs, &row.nccl_gbs, &row.a2a_host_us);
            }
            if (check) {
              // Against the reference of this payload: O/dK/dV are expected bitwise (heads
              // independent); dQ (atomic accumulation in cuDNN) and replicated KV heads within 2
              // bf16 ulps of the largest value. The error columns are against cp = 1 on the
              // original inputs.
              const bool fp8 = knobs.payload == Payload::kFp8;
              const HostOut& want = fp8 ? (ulysses ? ref_fp8 : ref_fp8_kv) : ref;
              const Cmp co = compare(want.o, got.o), cq = compare(want.dq, got.dq),
                        ck = compare(want.dk, got.dk), cv = compare(want.dv, got.dv);
              row.exact_o = co.bitwise;
              row.exact_dkv = ck.bitwise && cv.bitwise;
              const double tol = 2 * 0x1p-7;
              row.pass = co.max_abs <= tol * max_abs_of(want.o) &&
                         cq.max_abs <= tol * max_abs_of(want.dq) &&
                         ck.max_abs <= tol * max_abs_of(want.dk) &&
                         cv.max_abs <= tol * max_abs_of(want.dv);
              if (s.att.sinks) {  // fp32 sums over every row in another order: same tolerance
                const Cmp cs = compare(want.dsinks, got.dsinks);
                row.err_dsinks = cs.max_abs;
                row.pass = row.pass && cs.max_abs <= tol * max_abs_of(want.dsinks);
                std::printf(
                    "#   seq %lld cp %d %s via %s: dSinks max |diff| vs cp=1 %.2e (largest "
                    "|dSinks| %.2e)\n",
                    static_cast<long long>(seq), cp, row.strategy.c_str(), transport.c_str(),
                    cs.max_abs, max_abs_of(want.dsinks));
              }
              row.err_o = fp8 ? compare(ref.o, got.o).max_abs : co.max_abs;
              row.err_dq = fp8 ? compare(ref.dq, got.dq).max_abs : cq.max_abs;
              row.err_dk = fp8 ? compare(ref.dk, got.dk).max_abs : ck.max_abs;
              row.err_dv = fp8 ? compare(ref.dv, got.dv).max_abs : cv.max_abs;
            }
            row.transport = transport;
            row.calls = std::move(calls);
            row.timeline = std::move(timeline);
            row.timeline_step_ms = std::move(timeline_ms);
            row.repro = repro(rs, cp, knobs, o.iters, parallel) + timing_flags(o) +
                        " --transport " + transport + (knobs.cuda_graph ? " --cuda-graph on" : "") +
                        (knobs.queued ? " --steps queued" : "");
            rows.push_back(row);
          }
          comms.clear();  // (nccl-blocking's wrap the raw communicators)
          for (ncclComm_t c : raw) ncclCommDestroy(c);
        }
      }
    }  // rounds
    if (!merge_rounds(rows, seq_rows, o.rounds)) {
      std::fprintf(stderr, "ulysses-bench: seq %lld: the rounds did not run the same rows\n",
                   static_cast<long long>(seq));
      return 1;
    }
    const double t1 = rows[seq_rows].ms;  // cp = 1 (the median over the rounds)
    for (const GpuRow& r : rows) {
      if (r.seq != seq) continue;
      const bool alone = r.kernel_alone();
      std::printf(
          "%8lld %3d %-8s %-22s %5s %6d %10.2f %10.1f %6.3f %5.2f %10.1f %10.1f %8.2f %9.2e %9.2e "
          "%9.2e %9.2e %9s %5s\n",
          static_cast<long long>(r.seq), r.cp, alone ? "-" : r.strategy.c_str(),
          alone ? "kernel alone" : r.via().c_str(), alone ? "-" : r.saved.c_str(), r.chunks, r.ms,
          r.tflops, r.efficiency, r.balance, r.a2a_gbs, r.nccl_gbs, r.peak_gib, r.err_o, r.err_dq,
          r.err_dk, r.err_dv,
          alone ? "-" : (r.exact_o && r.exact_dkv ? "O,dK,dV" : (r.exact_o ? "O" : "no")),
          r.pass ? "PASS" : "FAIL");
      all_pass = all_pass && r.pass;
    }
    for (GpuRow& r : rows) {
      if (r.seq != seq) continue;
      std::printf(
          "#   seq %lld cp %d %s via %s saved=%s chunks=%d in-flight=%d memory: peak %.2f GiB = "
          "inputs/outputs %.2f + workspace %.2f + saved %.2f + held %.2f (plan and kernel "
          "buffers) + other %.2f (NCCL, cuDNN internals)\n",
          static_cast<long long>(r.seq), r.cp, r.strategy.c_str(), r.via().c_str(), r.saved.c_str(),
          r.chunks, r.in_flight, r.peak_gib, r.io_gib, r.workspace_gib, r.saved_gib, r.held_gib,
          r.peak_gib - r.io_gib - r.workspace_gib - r.saved_gib - r.held_gib);
      std::printf(
          "#   seq %lld cp %d %s via %s: first step %.0f ms after creating the kernel (plan, "
          "cuDNN graphs: %lld built in %.2f s%s; later steps built %lld)",
          static_cast<long long>(r.seq), r.cp, r.kernel_alone() ? "-" : r.strategy.c_str(),
          r.via().c_str(), r.first.ms, static_cast<long long>(r.first.graphs), r.first.build_s,
          r.cp > 1 ? ", the slowest rank" : "", static_cast<long long>(r.first.graphs_later));
      if (r.host_ms > 0) {  // plan rows
        std::printf("; host time to issue a step %.3f ms of its %.3f", r.host_ms, r.ms);
      }
      std::printf("\n");
      if (r.round_ms.size() > 1) {
        std::printf("#   seq %lld cp %d %s via %s chunks %d: by round, ms",
                    static_cast<long long>(r.seq), r.cp,
                    r.kernel_alone() ? "-" : r.strategy.c_str(), r.via().c_str(), r.chunks);
        for (double x : r.round_ms) std::printf(" %.3f", x);
        if (!r.kernel_alone()) {
          std::printf(", eff");
          for (double x : r.round_efficiency) std::printf(" %.3f", x);
        }
        std::printf("\n");
      }
      if (r.t1_by_gpu.size() > 1) {
        std::printf("#   seq %lld cp 1: the kernel alone on each GPU, ms:",
                    static_cast<long long>(r.seq));
        for (std::size_t d = 0; d < r.t1_by_gpu.size(); ++d) {
          std::printf(" GPU %zu %.3f", d, r.t1_by_gpu[d]);
        }
        const double slowest = *std::max_element(r.t1_by_gpu.begin(), r.t1_by_gpu.end());
        std::printf(
            " (eff is against GPU 0; a cp > 1 step runs at its slowest GPU's pace: against that "
            "GPU's T1 every eff would be %.3fx)\n",
            slowest / r.t1_by_gpu.front());
      }
      const std::vector<double>& by_rank = r.plan_gib_by_rank;
      if (by_rank.size() > 1) {
        const auto [least, most] = std::minmax_element(by_rank.begin(), by_rank.end());
        if (*most - *least >= 0.005) {  // ranks whose buffers differ (printed to 0.01 GiB)
          std::printf("#   seq %lld cp %d %s via %s: plan buffers (workspace + saved) by rank:",
                      static_cast<long long>(r.seq), r.cp, r.strategy.c_str(), r.via().c_str());
          for (std::size_t i = 0; i < by_rank.size(); ++i) {
            std::printf("%s r%zu %.2f", i ? "," : "", i, by_rank[i]);
          }
          const double mean = std::accumulate(by_rank.begin(), by_rank.end(), 0.0) /
                              static_cast<double>(by_rank.size());
          std::printf(" GiB; the most %.2f GiB above the mean%s\n", *most - mean,
                      r.transport == "loopback" ? " (the breakdown above is the mean rank's)" : "");
        }
      }
      if (!r.calls.empty()) {
        std::ostringstream what;
        what << "seq " << r.seq << " cp " << r.cp << " " << (r.kernel_alone() ? "-" : r.strategy)
             << " via " << r.via();
        r.kernel_ms = print_calls(what.str(), r.calls);
        std::printf(
            "#   calls %s: kernel total %.2f ms over all ranks, step %.2f ms (%s): the rest "
            "%.2f ms\n",
            what.str().c_str(), r.kernel_ms, r.ms,
            r.transport == "loopback" ? "every rank on one GPU" : "slowest rank",
            r.ms - (r.transport == "loopback" ? r.kernel_ms : r.kernel_ms / r.cp));
      }
      if (!r.timeline_step_ms.empty()) {
        std::ostringstream what;
        what << "seq " << r.seq << " cp " << r.cp << " " << r.strategy << " via " << r.via()
             << " chunks " << r.chunks;
        print_timeline(what.str(), r.timeline, r.timeline_step_ms);
      }
      if (r.a2a_host_us > 0) {
        std::printf(
            "#   seq %lld cp %d via %s all-to-all of %.0f MiB per GPU: %.1f GB/s on the GPU "
            "(NCCL's "
            "own %.1f), %.1f us of host time to issue one\n",
            static_cast<long long>(r.seq), r.cp, r.transport.c_str(), r.a2a_mib, r.a2a_gbs,
            r.nccl_gbs, r.a2a_host_us);
      }
    }
    for (int cp : cps) {
      if (cp == 1 || s.packed()) continue;  // (the kernel-alone and pack timings are dense)
      GpuRow* row = nullptr;
      for (GpuRow& r : rows) {
        if (row == nullptr && r.seq == seq && r.cp == cp && r.chunks == 1 &&
            r.strategy == "ulysses" && r.saved == "heads") {
          row = &r;
        }
      }
      // The kernel/rest breakdown is about the step's speed, which virtual ranks sharing one GPU
      // do not show; the pack rates are one GPU's work either way.
      if (!all_loopback) {
        const double contiguous = time_local_kernel(s, cp, false, o.iters, o.warmup_ms);
        const double in_place = time_local_kernel(s, cp, true, o.iters, o.warmup_ms);
        if (row) {
          row->kernel_contiguous_ms = contiguous;
          row->kernel_inplace_ms = in_place;
        }
        std::printf(
            "#   seq %lld cp %d breakdown: T1/cp %.2f ms | local kernel alone %.2f ms contiguous, "
            "%.2f ms on ulysses' layout | rest of the step (exchanges + pack/unpack) %.2f ms\n",
            static_cast<long long>(seq), cp, t1 / cp, contiguous, in_place,
            row ? row->ms - in_place : 0.0);
      }
      const PackRate pr = measure_pack(s, cp, o.iters);
      if (row) {
        row->pack_gbs = pr.pack_gbs;
        row->unpack_gbs = pr.unpack_gbs;
        row->copy_gbs = pr.copy_gbs;
        row->qkv_pack_gbs = pr.qkv_pack_gbs;
        row->fp8_pack_gbs = pr.fp8_pack_gbs;
        row->fp8_dequant_gbs = pr.fp8_dequant_gbs;
      }
      std::printf(
          "#   seq %lld cp %d pack Q: %.0f GB/s, unpack: %.0f GB/s, device copy of the same bytes: "
          "%.0f GB/s; Q|K|V into one message: %.0f GB/s; Q into fp8 rows: %.0f GB/s, fp8 rows "
          "back: %.0f GB/s (read + write)\n",
          static_cast<long long>(seq), cp, pr.pack_gbs, pr.unpack_gbs, pr.copy_gbs, pr.qkv_pack_gbs,
          pr.fp8_pack_gbs, pr.fp8_dequant_gbs);
    }
    std::fflush(stdout);
  }
  for (const GpuRow& r : rows) std::printf("# repro: %s\n", r.repro.c_str());
  if (!o.timeline_trace.empty()) {
    std::vector<TimelineTrace> traces;
    for (const GpuRow& r : rows) {
      if (r.timeline.empty()) continue;
      std::ostringstream name;
      name << "seq " << r.seq << " cp " << r.cp << " " << r.strategy << " via " << r.via()
           << " chunks " << r.chunks;
      traces.push_back({name.str(), r.timeline});
    }
    std::ofstream f(o.timeline_trace);
    write_trace_events(f, traces);
    if (!f) {
      std::fprintf(stderr, "ulysses-bench: could not write --timeline-trace %s\n",
                   o.timeline_trace.c_str());
      return 2;
    }
  }
  if (!o.json.empty()) {
    std::ofstream f(o.json);
    f << "{\n  \"tool\": \"ulysses-bench\",\n  \"path\": \"gpu\",\n  \"gpus\": " << ngpu
      << ",\n  \"cudnn\": " << cudnn_runtime_version() << ",\n  \"head_dim\": " << o.head_dim
      << ",\n  \"head_dim_v\": " << (o.head_dim_v > 0 ? o.head_dim_v : o.head_dim)
      << ",\n  \"varlen\": " << o.varlen << ",\n  \"window\": [" << o.window[0] << ", "
      << o.window[1] << "],\n  \"sinks\": " << (o.sinks ? "true" : "false") << ",\n  \"rows\": [\n";
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const GpuRow& r = rows[i];
      f << "    {\"seq\": " << r.seq << ", \"cp\": " << r.cp << ", \"strategy\": \"" << r.strategy
        << "\", \"chunks\": " << r.chunks
        << ", \"cuda_graph\": " << (r.cuda_graph ? "true" : "false")
        << ", \"queued\": " << (r.queued ? "true" : "false") << ", \"transport\": \"" << r.transport
        << "\", \"payload\": \"" << r.payload << "\", \"packed_sharding\": \"" << r.sharding
        << "\", \"doc_order\": \"" << (r.balanced ? "balanced" : "given")
        << "\", \"rank_balance\": " << r.balance << ", \"saved\": \"" << r.saved
        << "\", \"in_flight\": " << r.in_flight << ", \"ms_per_step\": " << r.ms
        << ", \"tflops_per_gpu\": " << r.tflops << ", \"efficiency\": " << r.efficiency
        << ", \"a2a_gbs\": " << r.a2a_gbs << ", \"nccl_a2a_gbs\": " << r.nccl_gbs
        << ", \"a2a_mib_per_gpu\": " << r.a2a_mib << ", \"a2a_host_us_per_call\": " << r.a2a_host_us
        << ", \"peak_gib\": " << r.peak_gib << ", \"io_gib\": " << r.io_gib
        << ", \"workspace_gib\": " << r.workspace_gib << ", \"saved_gib\": " << r.saved_gib
        << ", \"held_gib\": " << r.held_gib << ", \"plan_gib_by_rank\": [";
      for (std::size_t k = 0; k < r.plan_gib_by_rank.size(); ++k) {
        f << (k ? ", " : "") << r.plan_gib_by_rank[k];
      }
      f << "], \"first_step_ms\": " << r.first.ms << ", \"graphs_built\": " << r.first.graphs
        << ", \"graph_build_s\": " << r.first.build_s
        << ", \"graphs_built_later\": " << r.first.graphs_later
        << ", \"host_ms_per_step\": " << r.host_ms << ", \"rounds_ms\": [";
      for (std::size_t k = 0; k < r.round_ms.size(); ++k) f << (k ? ", " : "") << r.round_ms[k];
      f << "], \"rounds_efficiency\": [";
      for (std::size_t k = 0; k < r.round_efficiency.size(); ++k) {
        f << (k ? ", " : "") << r.round_efficiency[k];
      }
      f << "], \"t1_ms_by_gpu\": [";
      for (std::size_t k = 0; k < r.t1_by_gpu.size(); ++k) f << (k ? ", " : "") << r.t1_by_gpu[k];
      f << "]";
      f << ", \"err_o\": " << r.err_o << ", \"err_dq\": " << r.err_dq
        << ", \"err_dk\": " << r.err_dk << ", \"err_dv\": " << r.err_dv
        << ", \"err_dsinks\": " << r.err_dsinks
        << ", \"kernel_contiguous_ms\": " << r.kernel_contiguous_ms
        << ", \"kernel_inplace_ms\": " << r.kernel_inplace_ms << ", \"pack_gbs\": " << r.pack_gbs
        << ", \"unpack_gbs\": " << r.unpack_gbs << ", \"copy_gbs\": " << r.copy_gbs
        << ", \"qkv_pack_gbs\": " << r.qkv_pack_gbs << ", \"fp8_pack_gbs\": " << r.fp8_pack_gbs
        << ", \"fp8_dequant_gbs\": " << r.fp8_dequant_gbs
        << ", \"exact_o\": " << (r.exact_o ? "true" : "false")
        << ", \"exact_dkv\": " << (r.exact_dkv ? "true" : "false")
        << ", \"pass\": " << (r.pass ? "true" : "false") << ", \"kernel_ms\": " << r.kernel_ms
        << ", \"calls\": [";
      for (std::size_t c = 0; c < r.calls.size(); ++c) {
        const CallRecord& k = r.calls[c];
        f << (c ? ", " : "") << "{\"rank\": " << k.rank << ", \"dir\": \""
          << (k.backward ? "bwd" : "fwd") << "\", \"q\": " << k.q_rows << ", \"kv\": " << k.kv_rows
          << ", \"pieces\": " << k.pieces << ", \"mask\": \"" << k.mask
          << "\", \"pairs\": " << k.pairs << ", \"ms\": " << k.ms << "}";
      }
      f << "], \"timeline\": [";
      const std::vector<TimelineSummary> sums = timeline_summaries(r.timeline, r.timeline_step_ms);
      for (std::size_t k = 0; k < sums.size(); ++k) {
        const TimelineSummary& x = sums[k];
        f << (k ? ", " : "") << "{\"rank\": " << k << ", \"step_ms\": " << x.step_ms
          << ", \"kernel_busy_ms\": " << x.kernel_busy_ms
          << ", \"kernel_sum_ms\": " << x.kernel_sum_ms
          << ", \"exchange_busy_ms\": " << x.exchange_busy_ms
          << ", \"exchange_exposed_ms\": " << x.exchange_exposed_ms
          << ", \"idle_ms\": " << x.idle_ms << ", \"spans\": [";
        bool any = false;
        for (const TimelineSpan& t : r.timeline) {
          if (t.rank != static_cast<int>(k)) continue;
          f << (any ? ", " : "") << "{\"stream\": " << t.stream
            << ", \"kernel\": " << (t.kernel ? "true" : "false") << ", \"what\": \"" << t.what
            << "\", \"begin_ms\": " << t.begin_ms << ", \"end_ms\": " << t.end_ms
            << ", \"bytes\": " << t.bytes << "}";
          any = true;
        }
        f << "]}";
      }
      f << "], \"repro\": \"" << r.repro << "\"}" << (i + 1 < rows.size() ? "," : "") << "\n";
    }
    f << "  ]\n}\n";
  }
  std::printf("%s\n", all_pass ? "ALL PASS" : "SOME ROWS FAILED");
  return all_pass ? 0 : 1;
}

}  // namespace ulysses::bench
