// ulysses: the communication interface the parallel algorithms are written against, and the host
// loopback implementation (N ranks as threads of one process).
//
// Semantics follow NCCL: every rank of the group calls the same collectives in the same order;
// point to point sends and receives match in call order per (source, destination) pair. Byte counts
// are in bytes.
//
// Batching: calls between group_start() and group_end() are only queued; group_end() runs them
// together (so sends and receives to several peers cannot deadlock each other, and an all-to-all
// written as one send and one receive per peer is a single operation). Buffers must stay valid
// until group_end() returns (host) or until the work completes on the stream (device
// communicators).
//
// Stream contract (device communicators): work is ordered after what is already on `stream`, and
// later work on `stream` sees the results. Host communicators ignore the stream and complete before
// returning.
//
// Waits are bounded: a peer that never arrives produces StatusCode::kTimeout, never an endless
// hang.
//
// Host-only header: no CUDA, NCCL or cuDNN include.
#pragma once

#include <chrono>
#include <concepts>
#include <cstddef>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "ulysses/status.h"
#include "ulysses/types.h"

namespace ulysses {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// Where the buffers passed to this communicator must live.
  virtual Device device() const = 0;
  /// "loopback", "nccl", ...
  virtual std::string_view backend_name() const = 0;

  /// All-to-all with per-peer byte counts: rank r sends send_counts[p] bytes starting at
  /// send + send_offsets[p] to peer p, and receives recv_counts[p] bytes from peer p at
  /// recv + recv_offsets[p]. Each span has size() entries; recv_counts[p] on rank r must equal
  /// send_counts[r] on rank p. Send and receive regions must not overlap.
  virtual Status all_to_all_v(const void* send, std::span<const std::size_t> send_counts,
                              std::span<const std::size_t> send_offsets, void* recv,
                              std::span<const std::size_t> recv_counts,
                              std::span<const std::size_t> recv_offsets, Stream stream) = 0;

  /// Point to point: `bytes` from `data` to `peer`, matched by the peer's recv() in call order.
  virtual Status send(const void* data, std::size_t bytes, int peer, Stream stream) = 0;
  virtual Status recv(void* data, std::size_t bytes, int peer, Stream stream) = 0;

  /// recv[r * bytes_per_rank, (r + 1) * bytes_per_rank) receives rank r's `send` (bytes_per_rank
  /// bytes).
  virtual Status all_gather(const void* send, void* recv, std::size_t bytes_per_rank,
                            Stream stream) = 0;

  /// Element-wise sum over ranks of `count` elements of `dtype` (fp32 or fp64); send may equal
  /// recv.
  virtual Status all_reduce_sum(const void* send, void* recv, std::size_t count, DType dtype,
                                Stream stream) = 0;

  /// Returns once every rank has entered the barrier (device communicators: orders the stream).
  virtual Status barrier(Stream stream) = 0;

  /// Establishes the connections the exchanges of this group need (collective, blocking), so that
  /// the first real step allocates nothing. Called once by DistributedAttention::create().
  virtual Status warm_up() { return Status::ok(); }

  /// Blocking all-gather of small *host* buffers, for agreement at set-up time (plan creation), not
  /// for the hot path: device communicators stage through device memory and synchronise.
  virtual Status host_all_gather(const void* send, void* recv, std::size_t bytes_per_rank) = 0;

  /// Start / end a batch of send, recv and all_to_all_v calls (see the file comment). Not nestable
  /// beyond what the backend allows; collectives other than all_to_all_v are not batched.
  virtual Status group_start() = 0;
  virtual Status group_end() = 0;

  /// Whether a rank's rows to itself (all_to_all_v's own slot, a send to itself) cost a separate
  /// copy on its own device, which a caller saves by writing those rows where they arrive and
  /// leaving them out of the exchange (a zero count, no send). On a GPU such a copy runs on the
  /// SMs, so beside a kernel that fills the GPU it waits for that kernel's tail (docs/PERF.md).
  /// true for the loopback, device loopback and peer-copy groups (LoopbackOptions); false by
  /// default, e.g. NCCL, whose all-to-all takes every rank's slot in its one call.
  virtual bool copies_own_rows() const { return false; }
};

/// A Communicator that passes every call on to `inner` (which must outlive it). Derive from it to
/// observe or change some calls — count bytes, time exchanges, inject faults — and keep the rest
/// of `inner`'s behaviour, including calls added to the interface later. ulysses::synchronize()
/// and split_nccl_communicator() see through it to `inner` (gpu.h).
class ForwardingCommunicator : public Communicator {
 public:
  // (A template, so that wrapping a ForwardingCommunicator wraps it rather than copying it.)
  template <typename C>
  requires std::derived_from<C, Communicator>
  explicit ForwardingCommunicator(C& inner) : inner_(inner) {}
  ForwardingCommunicator(const ForwardingCommunicator&) = delete;
  ForwardingCommunicator& operator=(const ForwardingCommunicator&) = delete;

  Communicator& inner() const { return inner_; }

  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  Device device() const override { return inner_.device(); }
  std::string_view backend_name() const override { return inner_.backend_name(); }
  Status all_to_all_v(const void* send, std::span<const std::size_t> send_counts,
                      std::span<const std::size_t> send_offsets, void* recv,
                      std::span<const std::size_t> recv_counts,
                      std::span<const std::size_t> recv_offsets, Stream stream) override {
    return inner_.all_to_all_v(send, send_counts, send_offsets, recv, recv_counts, recv_offsets,
                               stream);
  }
  Status send(const void* data, std::size_t bytes, int peer, Stream stream) override {
    return inner_.send(data, bytes, peer, stream);
  }
  Status recv(void* data, std::size_t bytes, int peer, Stream stream) override {
    return inner_.recv(data, bytes, peer, stream);
  }
  Status all_gather(const void* send, void* recv, std::size_t bytes_per_rank,
                    Stream stream) override {
    return inner_.all_gather(send, recv, bytes_per_rank, stream);
  }
  Status all_reduce_sum(const void* send, void* recv, std::size_t count, DType dtype,
                        Stream stream) override {
    return inner_.all_reduce_sum(send, recv, count, dtype, stream);
  }
  Status barrier(Stream stream) override { return inner_.barrier(stream); }
  Status warm_up() override { return inner_.warm_up(); }
  Status host_all_gather(const void* send, void* recv, std::size_t bytes_per_rank) override {
    return inner_.host_all_gather(send, recv, bytes_per_rank);
  }
  Status group_start() override { return inner_.group_start(); }
  Status group_end() override { return inner_.group_end(); }
  bool copies_own_rows() const override { return inner_.copies_own_rows(); }

 private:
  Communicator& inner_;
};

/// Options of the host loopback communicator.
struct LoopbackOptions {
  /// Longest a rank waits for its peers in one operation before it returns kTimeout.
  std::chrono::milliseconds timeout{30000};
  /// What copies_own_rows() reports (a copy to itself is a separate copy here); false makes
  /// callers send their own rows through the exchange, as they do over NCCL.
  bool copies_own_rows = true;
};

/// Creates `size` host communicators that talk to each other through shared memory: give one to
/// each of `size` threads. Data movement is a plain memcpy, so it is bit-exact. Each communicator
/// must be used by one thread at a time. The communicators share state and can be destroyed in any
/// order.
Result<std::vector<std::unique_ptr<Communicator>>> create_loopback_group(
    int size, LoopbackOptions options = {});

}  // namespace ulysses
