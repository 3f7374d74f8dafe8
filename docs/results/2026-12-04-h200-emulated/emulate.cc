// Ad-hoc (not built by CMake): one rank of a cp = 2 Ulysses step on one GPU, its peer emulated.
//
// Why: issue 3's targets are per-GPU efficiencies on 2x H200, and only one H200 was lent. On one
// GPU the device loopback runs both ranks' kernels (twice the work), so it cannot say what a
// chunk schedule does to one rank's step. Here rank 0's plan is real (cuDNN, its streams, its
// buffers, its packs and unpacks), and its communicator is a mirror: what rank 0 sends to its
// peer is what comes back from the peer (a device-to-device copy of the same bytes, so the
// kernels see the same HBM traffic a real exchange causes), and each exchange lasts at least
// latency + bytes / link on its stream, as the copy-engine transport measured on 2x H200 (peer
// rows of "2x H200 again": 247 / 307 / 325 GB/s at 8k / 32k / 128k fit 30 us + bytes / 335 GB/s).
// The rest of that time is spent by the same stream's copy engine: a device-to-host copy into
// pinned memory of as many bytes as PCIe moves in the time left (its rate measured first), so the
// wait is timed by DMA, takes no SM and ~no HBM bandwidth (a first version waited in host
// functions: their ~16-26 us launch latency varied too much under load). Not emulated: the peer's
// skew, NVLink itself, NCCL's kernels. Outputs are not checked (the peer's half is this rank's
// own).
//
// Cases, interleaved in rounds after ~2.5 s of load (every case at the same clocks, as
// capchunks.cc): cp = 1 (cuDNN on the whole sequence, 32 / 8 heads: the bench's T1), then rank 0
// of cp = 2 with saved heads and 1, 2, 3, 4 head chunks over the emulated link, and 1 and 2 chunks
// with no wait (the copies only: the bound for an infinitely fast link).
//
// Usage: emulate SEQ [GBPS [LATENCY_US [ROUNDS [mirror|ce|ce-noself|ce-own [heads|lse]]]]]
// (defaults 8192 335 30 6 mirror heads; 3 steps per round; ce: the peer's rows are not copied,
// ce-noself: nor the rank's own, ce-own: as ce, and the communicator reports copies_own_rows() (the
// plan packs them in place), see MirrorComm::remote_copies; the workspace and `saved` start with
// random values then, so what is not copied is not zeros, which cuDNN runs faster at the power
// cap). "lse" (added in the forty-eighth session, docs/results/2026-12-04-h200-slots-issue-order/):
// the cases are saved heads with 2 chunks (the reference) and saved_activations = kLseOnly with 2,
// 3, 4 chunks, two in flight, and 4 chunks, one in flight, all over the emulated link.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ulysses/attention.h"
#include "ulysses/communicator.h"
#include "ulysses/gpu.h"

using namespace ulysses;

namespace {

void cu(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::printf("%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

void check(const Status& s) {
  if (!s.is_ok()) {
    std::printf("%s\n", s.to_string().c_str());
    std::exit(1);
  }
}

// Spans of a traced step: kernel calls ('f' forward, 'b' backward) and exchanges ('x', from the
// first copy to the end of the wait), each bracketed by events on the stream it runs on.
// Each span also keeps when the host issued it (ms after `host0`, the step's start on the host).
struct Trace {
  bool on = false;
  std::chrono::steady_clock::time_point host0;
  struct Span {
    char kind;
    std::size_t bytes;
    cudaEvent_t a, b;
    double host_ms;
  };
  std::vector<Span> spans;
  template <typename F>
  void span(char kind, std::size_t bytes, Stream stream, F&& body) {
    if (!on) {
      body();
      return;
    }
    Span sp{kind, bytes, nullptr, nullptr,
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - host0)
                .count()};
    cu(cudaEventCreate(&sp.a), "event");
    cu(cudaEventCreate(&sp.b), "event");
    cu(cudaEventRecord(sp.a, stream), "record");
    body();
    cu(cudaEventRecord(sp.b, stream), "record");
    spans.push_back(sp);
  }
};
Trace trace;

// Rank 0 of `size` ranks whose peers mirror it.
class MirrorComm final : public Communicator {
 public:
  // d2d_gbps, d2h_gbps: measured copy rates; pad: a device buffer and a pinned host buffer of
  // pad_bytes each, the delay copies' source and destination.
  MirrorComm(int size, double gbps, double latency_us, double d2d_gbps, double d2h_gbps,
             void* pad_dev, void* pad_host, std::size_t pad_bytes)
      : size_(size),
        gbps_(gbps),
        latency_us_(latency_us),
        d2d_gbps_(d2d_gbps),
        d2h_gbps_(d2h_gbps),
        pad_dev_(pad_dev),
        pad_host_(pad_host),
        pad_bytes_(pad_bytes) {}
  int rank() const override { return 0; }
  int size() const override { return size_; }
  Device device() const override { return Device::cuda(0); }
  std::string_view backend_name() const override { return "mirror"; }
  // Mode "ce-own": say so, as the peer-copy group does (the plan then packs this rank's own rows
  // where they arrive, since this session).
  bool copies_own_rows() const override { return own_rows_in_place; }
  bool own_rows_in_place = false;

  Status all_to_all_v(const void* send, std::span<const std::size_t> send_counts,
                      std::span<const std::size_t> send_offsets, void* recv,
                      std::span<const std::size_t> recv_counts,
                      std::span<const std::size_t> recv_offsets, Stream stream) override {
    std::vector<Copy> copies;
    std::size_t out = 0, in = 0;
    for (int p = 0; p < size_; ++p) {
      const auto i = static_cast<std::size_t>(p);
      copies.push_back({static_cast<const char*>(send) + send_offsets[i],
                        static_cast<char*>(recv) + recv_offsets[i],
                        std::min(send_counts[i], recv_counts[i]), p});
      if (p != 0) out += send_counts[i], in += recv_counts[i];
    }
    return exchange(copies, std::max(out, in), stream);
  }
  Status send(const void* data, std::size_t bytes, int peer, Stream stream) override {
    if (depth_ == 0) return Status(StatusCode::kUnsupported, "mirror: send outside a group");
    sends_.push_back({data, nullptr, bytes, peer});
    stream_ = stream;
    return Status::ok();
  }
  Status recv(void* data, std::size_t bytes, int peer, Stream stream) override {
    if (depth_ == 0) return Status(StatusCode::kUnsupported, "mirror: recv outside a group");
    recvs_.push_back({nullptr, data, bytes, peer});
    stream_ = stream;
    return Status::ok();
  }
  Status all_gather(const void* send, void* recv, std::size_t bytes, Stream stream) override {
    std::vector<Copy> copies;
    for (int p = 0; p < size_; ++p)
      copies.push_back({send, static_cast<char*>(recv) + p * bytes, bytes, p});
    return exchange(copies, bytes * (size_ - 1), stream);
  }
  Status all_reduce_sum(const void* send, void* recv, std::size_t count, DType dtype,
                        Stream stream) override {
    const std::size_t bytes = count * dtype_size(dtype);
    std::vector<Copy> copies;
    if (send != recv) copies.push_back({send, recv, bytes});
    return exchange(copies, bytes, stream);
  }
  Status barrier(Stream) override { return Status::ok(); }
  Status host_all_gather(const void* send, void* recv, std::size_t bytes) override {
    for (int p = 0; p < size_; ++p) std::memcpy(static_cast<char*>(recv) + p * bytes, send, bytes);
    return Status::ok();
  }
  Status group_start() override {
    ++depth_;
    return Status::ok();
  }
  Status group_end() override {
    if (--depth_ > 0) return Status::ok();
    // The i-th receive from peer p gets what the i-th send to p sent (the mirror's send to us).
    std::vector<Copy> copies;
    std::size_t out = 0, in = 0;
    std::vector<int> taken(static_cast<std::size_t>(size_), 0);
    for (const Copy& r : recvs_) {
      int seen = 0;
      for (const Copy& s : sends_) {
        if (s.peer != r.peer) continue;
        if (seen++ == taken[static_cast<std::size_t>(r.peer)]) {
          copies.push_back({s.src, r.dst, std::min(s.bytes, r.bytes), r.peer});
          break;
        }
      }
      ++taken[static_cast<std::size_t>(r.peer)];
      if (r.peer != 0) in += r.bytes;
    }
    for (const Copy& s : sends_) {
      if (s.peer != 0) out += s.bytes;
    }
    sends_.clear();
    recvs_.clear();
    return exchange(copies, std::max(out, in), stream_);
  }

 private:
  struct Copy {
    const void* src;
    void* dst;
    std::size_t bytes;
    int peer = 0;
  };
  // The copies on `stream`, then (with a link) a device-to-host copy for the rest of
  // latency + remote / link: the exchange lasts about that long on `stream`.
  Status exchange(const std::vector<Copy>& copies, std::size_t remote, Stream stream) {
    trace.span('x', remote, stream, [&] { enqueue(copies, remote, stream); });
    return Status::ok();
  }
  void enqueue(const std::vector<Copy>& copies, std::size_t remote, Stream stream) {
    std::size_t copied = 0;
    for (const Copy& c : copies) {
      if (c.bytes > 0 && c.src != c.dst && (remote_copies || (c.peer == 0 && self_copies))) {
        cu(cudaMemcpyAsync(c.dst, c.src, c.bytes, cudaMemcpyDeviceToDevice, stream), "copy");
        copied += c.bytes;
      }
    }
    if (gbps_ > 0 && remote > 0) {
      const double us = latency_us_ + static_cast<double>(remote) / (gbps_ * 1e3) -
                        static_cast<double>(copied) / (d2d_gbps_ * 1e3);
      const auto pad = static_cast<std::size_t>(std::max(0.0, us) * d2h_gbps_ * 1e3);
      if (pad > 0) {
        cu(cudaMemcpyAsync(pad_host_, pad_dev_, std::min(pad, pad_bytes_), cudaMemcpyDeviceToHost,
                           stream),
           "pad");
      }
    }
  }

  int size_;
  double gbps_, latency_us_, d2d_gbps_, d2h_gbps_;

 public:
  // false: only the rank's own rows are copied (device to device, as the peer-copy transport's
  // copy to itself); what the peer sends is the link's wait alone (a copy engine's, as a copy
  // from another GPU), so nothing of it needs an SM.
  bool remote_copies = true;
  // false (with remote_copies false): the rank's own rows are not copied either, as if its packs
  // wrote them where they arrive.
  bool self_copies = true;

 private:
  void* pad_dev_;
  void* pad_host_;
  std::size_t pad_bytes_;
  int depth_ = 0;
  std::vector<Copy> sends_, recvs_;
  Stream stream_ = nullptr;
};

void* dalloc(std::size_t n) {
  void* p = nullptr;
  cu(cudaMalloc(&p, n == 0 ? 1 : n), "malloc");
  cu(cudaMemset(p, 0, n == 0 ? 1 : n), "memset");
  return p;
}

void fill(void* d, std::size_t bytes, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<std::uint16_t> h(bytes / 2);
  for (auto& x : h) {
    const float f = nd(rng);
    std::uint32_t w;
    std::memcpy(&w, &f, 4);
    x = static_cast<std::uint16_t>(w >> 16);
  }
  cu(cudaMemcpy(d, h.data(), bytes, cudaMemcpyHostToDevice), "fill");
}

// A copy's rate in GB/s (the best of 5, idle GPU).
double copy_gbps(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind,
                 cudaStream_t s) {
  cudaEvent_t a, b;
  cu(cudaEventCreate(&a), "event");
  cu(cudaEventCreate(&b), "event");
  float best = 1e30f;
  for (int i = 0; i < 5; ++i) {
    cu(cudaEventRecord(a, s), "record");
    cu(cudaMemcpyAsync(dst, src, bytes, kind, s), "copy");
    cu(cudaEventRecord(b, s), "record");
    cu(cudaStreamSynchronize(s), "sync");
    float ms = 0;
    cu(cudaEventElapsedTime(&ms, a, b), "elapsed");
    best = std::min(best, ms);
  }
  return static_cast<double>(bytes) / (best * 1e-3) / 1e9;
}

// The kernel, its calls traced (`trace`) while a traced step runs.
class TimedKernel final : public LocalAttention {
 public:
  explicit TimedKernel(LocalAttention& inner) : inner_(inner) {}

  std::string_view name() const override { return inner_.name(); }
  Device device() const override { return inner_.device(); }
  bool provides_lse() const override { return inner_.provides_lse(); }
  bool supports_backward() const override { return inner_.supports_backward(); }
  bool accumulates_grads() const override { return inner_.accumulates_grads(); }
  bool concurrent_calls(const LocalProblem& p) const override { return inner_.concurrent_calls(p); }
  Status check_support(const LocalProblem& p) const override { return inner_.check_support(p); }
  std::size_t workspace_bytes(const LocalProblem& p) const override {
    return inner_.workspace_bytes(p);
  }
  std::size_t held_bytes() const override { return inner_.held_bytes(); }
  Status release_held(Stream stream) override { return inner_.release_held(stream); }
  Status forward(const LocalProblem& p, const LocalForwardArgs& a, Stream stream) override {
    Status st;
    trace.span('f', 0, stream, [&] { st = inner_.forward(p, a, stream); });
    return st;
  }
  Status backward(const LocalProblem& p, const LocalBackwardArgs& a, Stream stream) override {
    Status st;
    trace.span('b', 0, stream, [&] { st = inner_.backward(p, a, stream); });
    return st;
  }

 private:
  LocalAttention& inner_;
};

struct Case {
  std::string name;
  std::unique_ptr<MirrorComm> comm;
  std::unique_ptr<DistributedAttention> plan;
  std::vector<float> ms;
};

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t S = argc > 1 ? std::atoll(argv[1]) : 8192;
  const double gbps = argc > 2 ? std::atof(argv[2]) : 335.0;
  const double latency = argc > 3 ? std::atof(argv[3]) : 30.0;
  const int rounds = argc > 4 ? std::atoi(argv[4]) : 6;
  // "mirror": the peer's rows copied device to device (calls 2-5); "ce": not copied, the link's
  // wait alone (a same-device copy waits for SMs while a cuDNN call holds them: d2dbeside.cc).
  const std::string mode = argc > 5 ? argv[5] : "mirror";
  const bool remote_copies = mode == "mirror", self_copies = mode != "ce-noself";
  const bool own_rows_in_place = mode == "ce-own";
  const bool lse_cases = argc > 6 && std::string(argv[6]) == "lse";
  const int Hq = 32, Hkv = 8, D = 128, P = 2;
  const Device dev = Device::cuda(0);
  cu(cudaSetDevice(0), "device");
  auto att_r = create_cudnn_attention(0);
  check(att_r.status());
  LocalAttention& att = **att_r;
  TimedKernel timed(att);  // (pass-through but for traced steps)
  cudaStream_t s;
  cu(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "stream");
  const std::size_t pad_bytes = std::size_t{256} << 20;
  void* pad_dev = dalloc(pad_bytes);
  void* pad_dev2 = dalloc(pad_bytes);
  void* pad_host = nullptr;
  cu(cudaMallocHost(&pad_host, pad_bytes), "pinned");
  const double d2d = copy_gbps(pad_dev2, pad_dev, pad_bytes, cudaMemcpyDeviceToDevice, s);
  const double d2h = copy_gbps(pad_host, pad_dev, pad_bytes / 4, cudaMemcpyDeviceToHost, s);
  std::printf(
      "S %lld: link %.0f GB/s + %.0f us per exchange; copies: device to device %.0f GB/s, device "
      "to host %.1f GB/s; the peer's rows %s\n",
      static_cast<long long>(S), gbps, latency, d2d, d2h,
      remote_copies       ? "copied device to device"
      : own_rows_in_place ? "not copied (the wait alone), the rank's own packed in place"
      : self_copies       ? "not copied (the wait alone)"
                          : "not copied (the wait alone), nor the rank's own");
  std::mt19937 rng(51);

  // cp = 1: cuDNN on the whole sequence.
  const std::size_t qb1 = S * Hq * D * 2, kb1 = S * Hkv * D * 2;
  LocalProblem p1;
  p1.config.num_heads_q = Hq;
  p1.config.num_heads_kv = Hkv;
  p1.config.head_dim = D;
  p1.config.causal = true;
  p1.seqlen = S;
  p1.backward = true;
  p1.num_heads_q_local = Hq;
  p1.num_heads_kv_local = Hkv;
  void *q1 = dalloc(qb1), *k1 = dalloc(kb1), *v1 = dalloc(kb1), *o1 = dalloc(qb1),
       *do1 = dalloc(qb1), *dq1 = dalloc(qb1), *dk1 = dalloc(kb1), *dv1 = dalloc(kb1),
       *lse1 = dalloc(S * Hq * 4), *ws1 = dalloc(att.workspace_bytes(p1));
  fill(q1, qb1, rng), fill(k1, kb1, rng), fill(v1, kb1, rng), fill(do1, qb1, rng);
  auto act1 = [&](void* d, int h) {
    return TensorView::contiguous(d, DType::kBFloat16, {1, S, h, D}, dev);
  };
  LocalForwardArgs fa1;
  fa1.q = act1(q1, Hq), fa1.k = act1(k1, Hkv), fa1.v = act1(v1, Hkv), fa1.o = act1(o1, Hq);
  fa1.lse = TensorView::contiguous(lse1, DType::kFloat32, {1, Hq, S}, dev);
  fa1.workspace = ws1;
  LocalBackwardArgs ba1;
  ba1.q = fa1.q, ba1.k = fa1.k, ba1.v = fa1.v, ba1.o = fa1.o, ba1.lse = fa1.lse;
  ba1.d_o = act1(do1, Hq), ba1.dq = act1(dq1, Hq), ba1.dk = act1(dk1, Hkv), ba1.dv = act1(dv1, Hkv);
  ba1.workspace = ws1;

  // cp = 2's call alone: cuDNN on the whole sequence with rank 0's 16 / 4 heads, contiguous.
  LocalProblem p2 = p1;
  p2.num_heads_q_local = Hq / 2;
  p2.num_heads_kv_local = Hkv / 2;
  const std::size_t qb2 = qb1 / 2, kb2 = kb1 / 2;
  void *q2 = dalloc(qb2), *k2 = dalloc(kb2), *v2 = dalloc(kb2), *o2 = dalloc(qb2),
       *do2 = dalloc(qb2), *dq2 = dalloc(qb2), *dk2 = dalloc(kb2), *dv2 = dalloc(kb2),
       *lse2 = dalloc(S * Hq / 2 * 4), *ws2 = dalloc(att.workspace_bytes(p2));
  fill(q2, qb2, rng), fill(k2, kb2, rng), fill(v2, kb2, rng), fill(do2, qb2, rng);
  LocalForwardArgs fa2;
  fa2.q = act1(q2, Hq / 2), fa2.k = act1(k2, Hkv / 2), fa2.v = act1(v2, Hkv / 2),
  fa2.o = act1(o2, Hq / 2);
  fa2.lse = TensorView::contiguous(lse2, DType::kFloat32, {1, Hq / 2, S}, dev);
  fa2.workspace = ws2;
  LocalBackwardArgs ba2;
  ba2.q = fa2.q, ba2.k = fa2.k, ba2.v = fa2.v, ba2.o = fa2.o, ba2.lse = fa2.lse;
  ba2.d_o = act1(do2, Hq / 2), ba2.dq = act1(dq2, Hq / 2), ba2.dk = act1(dk2, Hkv / 2),
  ba2.dv = act1(dv2, Hkv / 2);
  ba2.workspace = ws2;

  // Rank 0 of cp = 2: its shard, shared by every case (they run one after another).
  const std::int64_t Sl = S / P;
  const std::size_t qb = Sl * Hq * D * 2, kb = Sl * Hkv * D * 2;
  void *q = dalloc(qb), *k = dalloc(kb), *v = dalloc(kb), *o = dalloc(qb), *d_o = dalloc(qb),
       *dq = dalloc(qb), *dk = dalloc(kb), *dv = dalloc(kb);
  fill(q, qb, rng), fill(k, kb, rng), fill(v, kb, rng), fill(d_o, qb, rng);
  auto act = [&](void* d, int h) {
    return TensorView::contiguous(d, DType::kBFloat16, {1, Sl, h, D}, dev);
  };
  std::vector<Case> cases;
  auto add = [&](int chunks, double link, SavedActivations saved = SavedActivations::kHeadSharded,
                 int in_flight = 2) {
    Case c;
    c.name =
        "cp 2 rank 0, chunks " + std::to_string(chunks) +
        (saved == SavedActivations::kLseOnly ? ", lse, " + std::to_string(in_flight) + " in flight"
                                             : std::string()) +
        (link > 0 ? ", emulated link" : ", copies only");
    c.comm = std::make_unique<MirrorComm>(P, link, latency, d2d, d2h, pad_dev, pad_host, pad_bytes);
    c.comm->remote_copies = remote_copies;
    c.comm->self_copies = self_copies;
    c.comm->own_rows_in_place = own_rows_in_place;
    PlanConfig cfg{
        .attention = {.num_heads_q = Hq, .num_heads_kv = Hkv, .head_dim = D, .causal = true},
        .parallel = {.cp = P},
        .layout = Layout::kBSHD,
        .dtype = DType::kBFloat16,
        .batch = 1,
        .seqlen = S};
    cfg.overlap_chunks = chunks;
    cfg.saved_activations = saved;
    cfg.chunks_in_flight = in_flight;
    auto plan = DistributedAttention::create(cfg, *c.comm, timed);
    check(plan.status());
    c.plan = std::move(plan).value();
    cases.push_back(std::move(c));
  };
  if (lse_cases) {
    add(2, gbps);
    for (int chunks : {2, 3, 4}) add(chunks, gbps, SavedActivations::kLseOnly, 2);
    add(4, gbps, SavedActivations::kLseOnly, 1);
  } else {
    for (int chunks : {1, 2, 3, 4}) add(chunks, gbps);
    add(1, 0);
    add(2, 0);
  }
  std::size_t ws_bytes = 0, saved_bytes = 0;
  for (const Case& c : cases) {
    ws_bytes = std::max(ws_bytes, c.plan->workspace_bytes());
    saved_bytes = std::max(saved_bytes, c.plan->saved_bytes());
  }
  void *ws = dalloc(ws_bytes), *saved = dalloc(saved_bytes);
  // Random values everywhere a receive buffer may lie (copied from q1, random bf16).
  for (void* buf : {ws, saved}) {
    const std::size_t n = buf == ws ? ws_bytes : saved_bytes;
    for (std::size_t at = 0; at < n; at += qb1) {
      cu(cudaMemcpy(static_cast<char*>(buf) + at, q1, std::min(qb1, n - at),
                    cudaMemcpyDeviceToDevice),
         "random fill");
    }
  }
  ForwardArgs f{.q = act(q, Hq),
                .k = act(k, Hkv),
                .v = act(v, Hkv),
                .o = act(o, Hq),
                .workspace = ws,
                .saved = saved};
  BackwardArgs b{.d_o = act(d_o, Hq),
                 .dq = act(dq, Hq),
                 .dk = act(dk, Hkv),
                 .dv = act(dv, Hkv),
                 .workspace = ws,
                 .saved = saved,
                 .q = f.q,  // (read by the lse cases only)
                 .k = f.k,
                 .v = f.v,
                 .o = f.o};

  auto step = [&](int i) {  // -1: cp = 1; -2: cp = 2's call alone
    if (i == -1) {
      check(att.forward(p1, fa1, s));
      check(att.backward(p1, ba1, s));
      return;
    }
    if (i == -2) {
      check(att.forward(p2, fa2, s));
      check(att.backward(p2, ba2, s));
      return;
    }
    check(cases[static_cast<std::size_t>(i)].plan->forward(f, s));
    check(cases[static_cast<std::size_t>(i)].plan->backward(b, s));
  };
  for (int i = -2; i < static_cast<int>(cases.size()); ++i) step(i);
  cu(cudaStreamSynchronize(s), "sync");
  const int heat = std::max(3, static_cast<int>(2500 / (3.9 * (S / 8192.0) * (S / 8192.0))));
  for (int i = 0; i < heat; ++i) step(-1);
  const int per = 3;
  struct Rec {
    int c;
    cudaEvent_t a, b;
  };
  std::vector<Rec> recs;
  std::vector<float> t1, t2;
  for (int r = 0; r < rounds; ++r) {
    for (int i = -2; i < static_cast<int>(cases.size()); ++i) {
      for (int j = 0; j < per; ++j) {
        Rec x{i, nullptr, nullptr};
        cu(cudaEventCreate(&x.a), "event");
        cu(cudaEventCreate(&x.b), "event");
        cu(cudaEventRecord(x.a, s), "record");
        step(i);
        cu(cudaEventRecord(x.b, s), "record");
        recs.push_back(x);
      }
    }
  }
  cu(cudaStreamSynchronize(s), "sync");
  for (const Rec& x : recs) {
    float t = 0;
    cu(cudaEventElapsedTime(&t, x.a, x.b), "elapsed");
    (x.c == -1 ? t1 : x.c == -2 ? t2 : cases[static_cast<std::size_t>(x.c)].ms).push_back(t);
  }
  auto median = [](std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const float T1 = median(t1);
  std::printf("S %6lld  %-40s median %8.3f ms (min %8.3f, max %8.3f)\n", static_cast<long long>(S),
              "cp 1 (cuDNN, whole sequence)", T1, *std::min_element(t1.begin(), t1.end()),
              *std::max_element(t1.begin(), t1.end()));
  std::printf("S %6lld  %-40s median %8.3f ms (min %8.3f, max %8.3f)  T1/2 over it %.3f\n",
              static_cast<long long>(S), "cp 2's call alone (16 / 4 heads)", median(t2),
              *std::min_element(t2.begin(), t2.end()), *std::max_element(t2.begin(), t2.end()),
              T1 / (2 * median(t2)));
  for (const Case& c : cases) {
    const float m = median(c.ms);
    std::printf("S %6lld  %-40s median %8.3f ms (min %8.3f, max %8.3f)  eff %.3f\n",
                static_cast<long long>(S), c.name.c_str(), m,
                *std::min_element(c.ms.begin(), c.ms.end()),
                *std::max_element(c.ms.begin(), c.ms.end()), T1 / (P * m));
  }
  // Each plan's steps with the kernel's calls timed where they run (3 steps each, after the
  // rounds, so at the same clocks): kernels busy (the union of their spans), forward's and
  // backward's, and the rest of the step.
  auto busy = [](std::vector<std::pair<float, float>> v) {
    std::sort(v.begin(), v.end());
    float total = 0, end = -1e30f;
    for (const auto& [a, b] : v) {
      if (b <= end) continue;
      total += b - std::max(a, end);
      end = b;
    }
    return total;
  };
  // Synced steps start on an idle GPU, so what the host takes to issue the first work shows in
  // them; held ones (since the forty-ninth session) start behind a host function that holds the
  // stream for 5 ms while the host issues the whole step: the GPU's part alone.
  for (std::size_t i = 0; i < cases.size(); ++i) {
    for (int j = 0; j < 6; ++j) {
      const bool held = j >= 3;
      trace.spans.clear();
      trace.on = true;
      cudaEvent_t a, b;
      cu(cudaEventCreate(&a), "event");
      cu(cudaEventCreate(&b), "event");
      if (held) {
        cu(cudaLaunchHostFunc(
               s, [](void*) { std::this_thread::sleep_for(std::chrono::milliseconds(5)); },
               nullptr),
           "hold");
      }
      cu(cudaEventRecord(a, s), "record");
      trace.host0 = std::chrono::steady_clock::now();
      step(static_cast<int>(i));
      const double host_ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - trace.host0)
              .count();
      cu(cudaEventRecord(b, s), "record");
      trace.on = false;
      cu(cudaStreamSynchronize(s), "sync");
      float ms = 0;
      cu(cudaEventElapsedTime(&ms, a, b), "elapsed");
      struct At {
        char kind;
        std::size_t bytes;
        float t0, t1;
        double host_ms;
      };
      std::vector<At> at;
      std::vector<std::pair<float, float>> fwd, bwd, all;
      for (const Trace::Span& sp : trace.spans) {
        At x{sp.kind, sp.bytes, 0, 0, sp.host_ms};
        cu(cudaEventElapsedTime(&x.t0, a, sp.a), "elapsed");
        cu(cudaEventElapsedTime(&x.t1, a, sp.b), "elapsed");
        at.push_back(x);
        if (sp.kind == 'x') continue;
        (sp.kind == 'b' ? bwd : fwd).push_back({x.t0, x.t1});
        all.push_back({x.t0, x.t1});
      }
      float first = 1e30f, fwd_end = 0, bwd_start = 1e30f, last = 0;
      for (const auto& [x, y] : fwd) first = std::min(first, x), fwd_end = std::max(fwd_end, y);
      for (const auto& [x, y] : bwd) bwd_start = std::min(bwd_start, x), last = std::max(last, y);
      std::printf(
          "S %6lld  %-40s %s step %8.3f ms: kernels busy %8.3f (fwd %7.3f, bwd %8.3f), the "
          "rest %6.3f; first call at %6.3f, fwd's last ends %7.3f, bwd's first at %7.3f, last "
          "ends %8.3f; host %6.3f\n",
          static_cast<long long>(S), cases[i].name.c_str(), held ? "held  " : "traced", ms,
          busy(all), busy(fwd), busy(bwd), ms - busy(all), first, fwd_end, bwd_start, last,
          host_ms);
      if (j == 0 || j == 3) {  // the first synced and held steps' spans in order of their start
        std::sort(at.begin(), at.end(), [](const At& x, const At& y) { return x.t0 < y.t0; });
        std::printf("    spans (ms from the step's start; @ when the host issued them):");
        for (const At& x : at) {
          std::printf(" %c", x.kind);
          if (x.kind == 'x') std::printf("%.1fM", static_cast<double>(x.bytes) / (1 << 20));
          std::printf(" %.3f-%.3f@%.3f", x.t0, x.t1, x.host_ms);
        }
        std::printf(" | end %.3f\n", ms);
      }
    }
  }
  return 0;
}
