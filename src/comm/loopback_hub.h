// ulysses: the rendezvous hub shared by the host and device loopback communicators.
//
// Two mechanisms, both guarded by one mutex and condition variable shared by the N ranks:
//
//  * Point to point. A send posts a descriptor {pointer, bytes, token} in the FIFO mailbox of its
//    (source, destination) pair; the matching receive runs a caller-supplied copy straight out of
//    the sender's buffer and marks the descriptor consumed. The token carries whatever the copy
//    needs to order itself (the device loopback: CUDA events).
//
//  * Collectives: every rank posts its arguments in its slot, waits until all have arrived
//  (generation
//    counter), checks that all ranks called the same thing, runs its part, and waits again before
//    anyone may return (so no buffer is reused while a peer reads it).
//
// Every wait is bounded by LoopbackOptions::timeout. A rank that times out marks the hub broken and
// wakes everybody: all pending and later operations on any rank fail instead of hanging.
//
// A wait spins (yielding) for up to kSpin before it sleeps on the condition variable: the ranks of
// one step reach a rendezvous within microseconds of each other, while a sleep and its wake-up cost
// tens of microseconds per exchange (the peer-copy group drives real GPUs from these threads).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/check.h"
#include "ulysses/communicator.h"

namespace ulysses::comm {

using detail::str_cat;

struct PostedSend {
  const void* data = nullptr;
  std::size_t bytes = 0;
  bool consumed = false;
  Status status;                // set by the receiver (size mismatch, copy failure)
  std::shared_ptr<void> ready;  // sender's token (device loopback: event after the data is ready)
  std::shared_ptr<void> done;   // receiver's token (device loopback: event after the copy)
};

/// Copies a matched send into the receiver's buffer: (destination, the posted send) -> Status.
using CopyFn = std::function<Status(void* dst, PostedSend& send)>;

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

  std::shared_ptr<PostedSend> post_send(int src, int dst, const void* data, std::size_t bytes,
                                        std::shared_ptr<void> ready = nullptr) {
    auto s = std::make_shared<PostedSend>();
    s->data = data;
    s->bytes = bytes;
    s->ready = std::move(ready);
    std::lock_guard<std::mutex> lock(mu_);
    box(src, dst).push_back(s);
    changed();
    return s;
  }

  Status wait_consumed(const std::shared_ptr<PostedSend>& s, int src, int dst) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!wait(
            lock, [&] { return s->consumed; },
            [&] {
              return str_cat("rank ", src, " waiting for rank ", dst, " to receive ", s->bytes,
                             " bytes");
            })) {
      return broken_status_;
    }
    return s->status;
  }

  Status receive(int src, int dst, void* data, std::size_t bytes, const CopyFn& copy) {
    std::unique_lock<std::mutex> lock(mu_);
    auto& q = box(src, dst);
    if (!wait(
            lock, [&] { return !q.empty(); },
            [&] {
              return str_cat("rank ", dst, " waiting for ", bytes, " bytes from rank ", src);
            })) {
      return broken_status_;
    }
    std::shared_ptr<PostedSend> s = q.front();
    q.pop_front();
    // Taken off the mailbox, the send is this receiver's alone until it is marked consumed: the
    // copy runs outside the lock, so the ranks' copies (CUDA calls on their own devices) overlap.
    lock.unlock();
    Status st = size_mismatch(src, dst, bytes, s->bytes);
    if (st.is_ok() && bytes > 0) st = copy(data, *s);
    lock.lock();
    s->status = st;
    s->consumed = true;
    changed();
    return st;
  }

  /// The error a receive of `expected` bytes returns for a send of `sent` (ok when they match).
  static Status size_mismatch(int src, int dst, std::size_t expected, std::size_t sent) {
    if (sent == expected) return Status::ok();
    return Status(
        StatusCode::kCommError,
        str_cat("ulysses::LoopbackComm: rank ", dst, " expects ", expected, " bytes from rank ",
                src, ", which sends ", sent, " (send and recv sizes must match)"));
  }

  // --- collectives
  // -----------------------------------------------------------------------------------

  // Posts `slot` for `rank`, waits for all ranks, runs `body` (which may read every slot), waits
  // again.
  template <typename Body>
  Status collective(int rank, const CollSlot& slot, std::string_view what, Body&& body) {
    std::unique_lock<std::mutex> lock(mu_);
    slots_[static_cast<std::size_t>(rank)] = slot;
    if (!arrive(lock, [&] { return str_cat("rank ", rank, " in ", what, " (first barrier)"); })) {
      return broken_status_;
    }
    // All slots are posted and stay untouched until everybody passed the second barrier.
    Status verdict = check_same_kind(what);
    if (verdict.is_ok()) {
      lock.unlock();
      body(slots_);
      lock.lock();
    }
    if (!arrive(lock, [&] { return str_cat("rank ", rank, " in ", what, " (second barrier)"); })) {
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
  template <typename Who>
  bool arrive(std::unique_lock<std::mutex>& lock, Who&& who) {
    const std::uint64_t gen = generation_;
    if (++arrived_ == size_) {
      arrived_ = 0;
      ++generation_;
      changed();
      return !broken_;
    }
    return wait(
        lock, [&] { return generation_ != gen; }, who);
  }

  // Under mu_: the hub's state changed; wakes sleepers and ends spinners' current round.
  void changed() {
    changes_.fetch_add(1, std::memory_order_release);
    cv_.notify_all();
  }

  // Waits under `lock` until `pred` holds; `who()` names the waiter in the timeout's message.
  template <typename Pred, typename Who>
  bool wait(std::unique_lock<std::mutex>& lock, Pred pred, Who&& who) {
    using Clock = std::chrono::steady_clock;
    const auto spin_end = Clock::now() + kSpin;
    while (!broken_ && !pred() && Clock::now() < spin_end) {
      const std::uint64_t seen = changes_.load(std::memory_order_acquire);
      lock.unlock();
      while (changes_.load(std::memory_order_acquire) == seen && Clock::now() < spin_end) {
        std::this_thread::yield();
      }
      lock.lock();
    }
    const bool done = cv_.wait_for(lock, options_.timeout, [&] { return broken_ || pred(); });
    if (broken_) return false;
    if (!done) {
      broken_ = true;
      broken_status_ = Status(
          StatusCode::kTimeout,
          str_cat("ulysses::LoopbackComm: timed out after ", options_.timeout.count(),
                  " ms: ", who(),
                  " (a peer never arrived; every communicator of this group is now aborted)"));
      changed();
      return false;
    }
    return true;
  }

  static constexpr std::chrono::microseconds kSpin{200};

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
  std::atomic<std::uint64_t> changes_{0};  // bumped by changed(): what spinning waiters watch
  std::vector<std::deque<std::shared_ptr<PostedSend>>> mailbox_;
  std::vector<CollSlot> slots_;
  int arrived_ = 0;
  std::uint64_t generation_ = 0;
  bool broken_ = false;
  Status broken_status_;
};

/// Plain host memcpy.
inline Status host_copy(void* dst, PostedSend& s) {
  std::memcpy(dst, s.data, s.bytes);
  return Status::ok();
}

}  // namespace ulysses::comm
