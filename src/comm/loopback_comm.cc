// Host loopback communicator: N ranks as threads of one process.
//
// Two mechanisms, both guarded by one mutex and condition variable in a Hub shared by the N ranks:
//
//  * Point to point (send/recv, and all_to_all_v, which is a batch of them). A send posts a
//  descriptor
//    {pointer, bytes} in the FIFO mailbox of its (source, destination) pair; the matching recv
//    copies straight out of the sender's buffer and marks the descriptor consumed. Outside a group
//    a send waits until it is consumed; inside a group all sends are posted first and group_end()
//    waits for them after serving its receives, so batches never deadlock.
//
//  * Collectives (all_gather, all_reduce_sum, barrier): every rank posts its arguments in its slot,
//  waits
//    until all have arrived (generation counter), checks that all ranks called the same thing,
//    reads its peers' buffers, and waits again before anyone may return (so no buffer is reused
//    while a peer reads).
//
// Every wait is bounded by LoopbackOptions::timeout. A rank that times out marks the hub broken and
// wakes everybody: all pending and later operations on any rank fail with kCommError naming the
// cause, instead of hanging.
#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "common/check.h"
#include "ulysses/communicator.h"

namespace ulysses {
namespace {

using detail::str_cat;

struct PostedSend {
  const void* data = nullptr;
  std::size_t bytes = 0;
  bool consumed = false;
  Status status;  // set by the receiver when the sizes disagree
};

enum class CollKind : int { kNone, kAllGather, kAllReduce, kBarrier };

struct CollSlot {
  CollKind kind = CollKind::kNone;
  const void* send = nullptr;
  void* recv = nullptr;
  std::size_t bytes = 0;  // all_gather: per rank; all_reduce: count
  DType dtype = DType::kFloat32;
};

class Hub {
 public:
  Hub(int size, LoopbackOptions options)
      : size_(size),
        options_(options),
        mailbox_(static_cast<std::size_t>(size) * static_cast<std::size_t>(size)),
        slots_(static_cast<std::size_t>(size)) {}

  int size() const { return size_; }

  // --- point to point
  // -------------------------------------------------------------------------------

  std::shared_ptr<PostedSend> post_send(int src, int dst, const void* data, std::size_t bytes) {
    auto s = std::make_shared<PostedSend>();
    s->data = data;
    s->bytes = bytes;
    std::lock_guard<std::mutex> lock(mu_);
    box(src, dst).push_back(s);
    cv_.notify_all();
    return s;
  }

  Status wait_consumed(const std::shared_ptr<PostedSend>& s, int src, int dst) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!wait(
            lock, [&] { return s->consumed; },
            str_cat("rank ", src, " waiting for rank ", dst, " to receive ", s->bytes, " bytes"))) {
      return broken_status_;
    }
    return s->status;
  }

  Status receive(int src, int dst, void* data, std::size_t bytes) {
    std::unique_lock<std::mutex> lock(mu_);
    auto& q = box(src, dst);
    if (!wait(
            lock, [&] { return !q.empty(); },
            str_cat("rank ", dst, " waiting for ", bytes, " bytes from rank ", src))) {
      return broken_status_;
    }
    std::shared_ptr<PostedSend> s = q.front();
    q.pop_front();
    Status st;
    if (s->bytes != bytes) {
      st = Status(StatusCode::kCommError, str_cat("ulysses::LoopbackComm: rank ", dst, " expects ",
                                                  bytes, " bytes from rank ", src, ", which sends ",
                                                  s->bytes, " (send and recv sizes must match)"));
    } else if (bytes > 0) {
      // Copying under the lock keeps the protocol trivially race-free; the loopback is for
      // correctness, not speed.
      std::memcpy(data, s->data, bytes);
    }
    s->status = st;
    s->consumed = true;
    cv_.notify_all();
    return st;
  }

  // --- collectives
  // -----------------------------------------------------------------------------------

  // Posts `slot` for `rank`, waits for all ranks, runs `body` (which may read every slot), waits
  // again.
  template <typename Body>
  Status collective(int rank, const CollSlot& slot, std::string_view what, Body&& body) {
    std::unique_lock<std::mutex> lock(mu_);
    slots_[static_cast<std::size_t>(rank)] = slot;
    if (!arrive(lock, str_cat("rank ", rank, " in ", what, " (first barrier)"))) {
      return broken_status_;
    }
    // All slots are posted and stay untouched until everybody passed the second barrier.
    Status verdict = check_same_kind(what);
    if (verdict.is_ok()) {
      lock.unlock();
      body(slots_);
      lock.lock();
    }
    if (!arrive(lock, str_cat("rank ", rank, " in ", what, " (second barrier)"))) {
      return broken_status_;
    }
    return verdict;
  }

 private:
  std::deque<std::shared_ptr<PostedSend>>& box(int src, int dst) {
    return mailbox_[static_cast<std::size_t>(src * size_ + dst)];
  }

  // Generation barrier. Returns false (and the hub is broken) on timeout or when another rank broke
  // it.
  bool arrive(std::unique_lock<std::mutex>& lock, const std::string& who) {
    const std::uint64_t gen = generation_;
    if (++arrived_ == size_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return !broken_;
    }
    return wait(
        lock, [&] { return generation_ != gen; }, who);
  }

  template <typename Pred>
  bool wait(std::unique_lock<std::mutex>& lock, Pred pred, const std::string& who) {
    const bool done = cv_.wait_for(lock, options_.timeout, [&] { return broken_ || pred(); });
    if (broken_) return false;
    if (!done) {
      broken_ = true;
      broken_status_ = Status(
          StatusCode::kTimeout,
          str_cat("ulysses::LoopbackComm: timed out after ", options_.timeout.count(), " ms: ", who,
                  " (a peer never arrived; every communicator of this group is now aborted)"));
      cv_.notify_all();
      return false;
    }
    return true;
  }

  Status check_same_kind(std::string_view what) const {
    const CollSlot& first = slots_[0];
    for (int r = 1; r < size_; ++r) {
      const CollSlot& s = slots_[static_cast<std::size_t>(r)];
      if (s.kind != first.kind) {
        return Status(StatusCode::kConfigMismatch,
                      str_cat("ulysses::LoopbackComm::", what, ": rank ", r,
                              " called a different collective than rank 0"));
      }
      if (s.bytes != first.bytes || s.dtype != first.dtype) {
        return Status(StatusCode::kConfigMismatch,
                      str_cat("ulysses::LoopbackComm::", what, ": rank ", r, " passed size ",
                              s.bytes, " but rank 0 passed ", first.bytes,
                              " (every rank must pass the same size and dtype)"));
      }
    }
    return Status::ok();
  }

  const int size_;
  const LoopbackOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::deque<std::shared_ptr<PostedSend>>> mailbox_;
  std::vector<CollSlot> slots_;
  int arrived_ = 0;
  std::uint64_t generation_ = 0;
  bool broken_ = false;
  Status broken_status_;
};

class LoopbackComm final : public Communicator {
 public:
  LoopbackComm(std::shared_ptr<Hub> hub, int rank) : hub_(std::move(hub)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return hub_->size(); }
  Device device() const override { return Device::host(); }
  std::string_view backend_name() const override { return "loopback"; }

  Status all_to_all_v(const void* send, std::span<const std::size_t> send_counts,
                      std::span<const std::size_t> send_offsets, void* recv,
                      std::span<const std::size_t> recv_counts,
                      std::span<const std::size_t> recv_offsets, Stream) override {
    constexpr std::string_view kApi = "ulysses::LoopbackComm::all_to_all_v";
    const auto n = static_cast<std::size_t>(size());
    if (send_counts.size() != n || send_offsets.size() != n || recv_counts.size() != n ||
        recv_offsets.size() != n) {
      return detail::arg_error(kApi, "counts/offsets", "have the wrong length",
                               str_cat(send_counts.size(), "/", send_offsets.size(), "/",
                                       recv_counts.size(), "/", recv_offsets.size()),
                               str_cat(n, " entries each (one per rank)"));
    }
    for (std::size_t p = 0; p < n; ++p) {  // validate everything before queueing anything
      if ((send_counts[p] > 0 && send == nullptr) || (recv_counts[p] > 0 && recv == nullptr)) {
        return detail::arg_error(kApi, "send/recv", "is null", "nullptr", "host pointers");
      }
    }
    const bool own_group = !in_group_;
    if (own_group) ULYSSES_RETURN_IF_ERROR(group_start());
    for (std::size_t p = 0; p < n; ++p) {
      const int peer = static_cast<int>(p);
      pending_.push_back(Op{true,
                            const_cast<char*>(static_cast<const char*>(send)) + send_offsets[p],
                            send_counts[p], peer});
      pending_.push_back(
          Op{false, static_cast<char*>(recv) + recv_offsets[p], recv_counts[p], peer});
    }
    return own_group ? group_end() : Status::ok();
  }

  Status send(const void* data, std::size_t bytes, int peer, Stream) override {
    ULYSSES_RETURN_IF_ERROR(check_p2p("send", data, bytes, peer));
    if (in_group_) {
      pending_.push_back(Op{true, const_cast<void*>(data), bytes, peer});
      return Status::ok();
    }
    auto s = hub_->post_send(rank_, peer, data, bytes);
    return hub_->wait_consumed(s, rank_, peer);
  }

  Status recv(void* data, std::size_t bytes, int peer, Stream) override {
    ULYSSES_RETURN_IF_ERROR(check_p2p("recv", data, bytes, peer));
    if (in_group_) {
      pending_.push_back(Op{false, data, bytes, peer});
      return Status::ok();
    }
    return hub_->receive(peer, rank_, data, bytes);
  }

  Status all_gather(const void* send, void* recv, std::size_t bytes_per_rank, Stream) override {
    if (bytes_per_rank > 0 && (send == nullptr || recv == nullptr)) {
      return detail::arg_error("ulysses::LoopbackComm::all_gather", "send/recv", "is null",
                               "nullptr", "host pointers");
    }
    CollSlot slot{CollKind::kAllGather, send, recv, bytes_per_rank, DType::kFloat32};
    return hub_->collective(rank_, slot, "all_gather", [&](const std::vector<CollSlot>& slots) {
      for (int r = 0; r < size(); ++r) {
        if (bytes_per_rank == 0) continue;
        std::memcpy(static_cast<char*>(recv) + static_cast<std::size_t>(r) * bytes_per_rank,
                    slots[static_cast<std::size_t>(r)].send, bytes_per_rank);
      }
    });
  }

  Status all_reduce_sum(const void* send, void* recv, std::size_t count, DType dtype,
                        Stream) override {
    constexpr std::string_view kApi = "ulysses::LoopbackComm::all_reduce_sum";
    if (dtype != DType::kFloat32 && dtype != DType::kFloat64) {
      return detail::arg_error(kApi, "dtype", "is not supported", dtype_name(dtype),
                               "fp32 or fp64");
    }
    if (count > 0 && (send == nullptr || recv == nullptr)) {
      return detail::arg_error(kApi, "send/recv", "is null", "nullptr", "host pointers");
    }
    // send may alias recv: every rank first sums into private storage (reading all peers' send
    // buffers), and writes recv only after the second barrier, when no peer reads any more.
    std::vector<double> acc(count, 0.0);
    CollSlot slot{CollKind::kAllReduce, send, recv, count, dtype};
    Status st =
        hub_->collective(rank_, slot, "all_reduce_sum", [&](const std::vector<CollSlot>& s) {
          for (int r = 0; r < size(); ++r) {  // rank order: every rank gets bit-identical sums
            const void* src = s[static_cast<std::size_t>(r)].send;
            for (std::size_t i = 0; i < count; ++i) {
              if (dtype == DType::kFloat32) {
                acc[i] = static_cast<float>(acc[i] + static_cast<const float*>(src)[i]);
              } else {
                acc[i] += static_cast<const double*>(src)[i];
              }
            }
          }
        });
    ULYSSES_RETURN_IF_ERROR(st);
    for (std::size_t i = 0; i < count; ++i) {
      if (dtype == DType::kFloat32) {
        static_cast<float*>(recv)[i] = static_cast<float>(acc[i]);
      } else {
        static_cast<double*>(recv)[i] = acc[i];
      }
    }
    return Status::ok();
  }

  Status barrier(Stream) override {
    CollSlot slot{CollKind::kBarrier, nullptr, nullptr, 0, DType::kFloat32};
    return hub_->collective(rank_, slot, "barrier", [](const std::vector<CollSlot>&) {});
  }

  Status group_start() override {
    if (in_group_) {
      return detail::arg_error("ulysses::LoopbackComm::group_start", "group", "is already open",
                               "nested group_start()", "group_end() first");
    }
    in_group_ = true;
    pending_.clear();
    return Status::ok();
  }

  Status group_end() override {
    if (!in_group_) {
      return detail::arg_error("ulysses::LoopbackComm::group_end", "group", "is not open",
                               "group_end() without group_start()", "group_start() first");
    }
    in_group_ = false;
    std::vector<Op> ops;
    ops.swap(pending_);
    std::vector<std::pair<std::shared_ptr<PostedSend>, int>> posted;
    for (const Op& op : ops) {
      if (op.is_send)
        posted.emplace_back(hub_->post_send(rank_, op.peer, op.data, op.bytes), op.peer);
    }
    Status first;
    for (const Op& op : ops) {
      if (op.is_send) continue;
      Status st = hub_->receive(op.peer, rank_, op.data, op.bytes);
      if (first.is_ok() && !st.is_ok()) first = st;
      if (st.code() == StatusCode::kTimeout) break;  // the hub is broken: nothing more can complete
    }
    for (const auto& [s, peer] : posted) {
      Status st = hub_->wait_consumed(s, rank_, peer);
      if (first.is_ok() && !st.is_ok()) first = st;
      if (st.code() == StatusCode::kTimeout) break;
    }
    return first;
  }

 private:
  struct Op {
    bool is_send;
    void* data;
    std::size_t bytes;
    int peer;
  };

  Status check_p2p(std::string_view what, const void* data, std::size_t bytes, int peer) const {
    const std::string api = str_cat("ulysses::LoopbackComm::", what);
    if (peer < 0 || peer >= size()) {
      return detail::arg_error(api, "peer", "is out of range", peer, str_cat("0..", size() - 1));
    }
    if (bytes > 0 && data == nullptr) {
      return detail::arg_error(api, "data", "is null", "nullptr", "a host pointer");
    }
    return Status::ok();
  }

  std::shared_ptr<Hub> hub_;
  const int rank_;
  bool in_group_ = false;
  std::vector<Op> pending_;
};

}  // namespace

Result<std::vector<std::unique_ptr<Communicator>>> create_loopback_group(int size,
                                                                         LoopbackOptions options) {
  if (size < 1) {
    return detail::arg_error("ulysses::create_loopback_group", "size", "must be positive", size,
                             ">= 1");
  }
  if (options.timeout.count() <= 0) {
    return detail::arg_error("ulysses::create_loopback_group", "options.timeout",
                             "must be positive", str_cat(options.timeout.count(), " ms"), "> 0 ms");
  }
  auto hub = std::make_shared<Hub>(size, options);
  std::vector<std::unique_ptr<Communicator>> comms;
  for (int r = 0; r < size; ++r) comms.push_back(std::make_unique<LoopbackComm>(hub, r));
  return comms;
}

}  // namespace ulysses
