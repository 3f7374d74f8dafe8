// Loopback communicator: N ranks as threads of one process, sharing a Hub (loopback_hub.h). A
// transport moves the bytes: host memcpy here, device copies ordered by CUDA events in
// device_loopback.cc. Either way data movement is a plain copy, so it is bit-exact. Outside a group
// a send waits until it is consumed; inside a group all sends are posted first and group_end()
// waits for them after serving its receives.
#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "comm/loopback_hub.h"
#include "comm/loopback_transport.h"
#include "common/check.h"
#include "ulysses/communicator.h"

namespace ulysses {
namespace {

using comm::CollKind;
using comm::CollSlot;
using comm::Hub;
using comm::PostedSend;
using detail::str_cat;

class LoopbackComm final : public Communicator {
 public:
  LoopbackComm(std::shared_ptr<Hub> hub, int rank,
               std::shared_ptr<comm::LoopbackTransport> transport, bool copies_own_rows)
      : hub_(std::move(hub)),
        rank_(rank),
        transport_(std::move(transport)),
        copies_own_rows_(copies_own_rows) {}

  int rank() const override { return rank_; }
  bool copies_own_rows() const override { return copies_own_rows_; }
  int size() const override { return hub_->size(); }
  Device device() const override { return transport_->device(); }
  std::string_view backend_name() const override { return transport_->name(); }

  Status all_to_all_v(const void* send, std::span<const std::size_t> send_counts,
                      std::span<const std::size_t> send_offsets, void* recv,
                      std::span<const std::size_t> recv_counts,
                      std::span<const std::size_t> recv_offsets, Stream stream) override {
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
        return detail::arg_error(kApi, "send/recv", "is null", "nullptr", "valid pointers");
      }
    }
    const bool own_group = !in_group_;
    if (own_group) ULYSSES_RETURN_IF_ERROR(group_start());
    for (std::size_t p = 0; p < n; ++p) {
      const int peer = static_cast<int>(p);
      pending_.push_back(Op{true,
                            const_cast<char*>(static_cast<const char*>(send)) + send_offsets[p],
                            send_counts[p], peer, stream});
      pending_.push_back(
          Op{false, static_cast<char*>(recv) + recv_offsets[p], recv_counts[p], peer, stream});
    }
    return own_group ? group_end() : Status::ok();
  }

  Status send(const void* data, std::size_t bytes, int peer, Stream stream) override {
    ULYSSES_RETURN_IF_ERROR(check_p2p("send", data, bytes, peer));
    const bool own_group = !in_group_;
    if (own_group) ULYSSES_RETURN_IF_ERROR(group_start());
    pending_.push_back(Op{true, const_cast<void*>(data), bytes, peer, stream});
    return own_group ? group_end() : Status::ok();
  }

  Status recv(void* data, std::size_t bytes, int peer, Stream stream) override {
    ULYSSES_RETURN_IF_ERROR(check_p2p("recv", data, bytes, peer));
    const bool own_group = !in_group_;
    if (own_group) ULYSSES_RETURN_IF_ERROR(group_start());
    pending_.push_back(Op{false, data, bytes, peer, stream});
    return own_group ? group_end() : Status::ok();
  }

  Status all_gather(const void* send, void* recv, std::size_t bytes_per_rank,
                    Stream stream) override {
    if (bytes_per_rank > 0 && (send == nullptr || recv == nullptr)) {
      return detail::arg_error("ulysses::LoopbackComm::all_gather", "send/recv", "is null",
                               "nullptr", "valid pointers");
    }
    // Every rank must pass the same size: compare on the host first, so a mismatch is a
    // ConfigMismatch on every rank rather than a failed pairwise copy.
    std::vector<std::size_t> sizes(static_cast<std::size_t>(size()));
    ULYSSES_RETURN_IF_ERROR(host_all_gather(&bytes_per_rank, sizes.data(), sizeof(std::size_t)));
    for (int r = 0; r < size(); ++r) {
      if (sizes[static_cast<std::size_t>(r)] != bytes_per_rank) {
        return Status(StatusCode::kConfigMismatch,
                      str_cat("ulysses::LoopbackComm::all_gather: rank ", r, " passed size ",
                              sizes[static_cast<std::size_t>(r)], " but rank ", rank_, " passed ",
                              bytes_per_rank, " (every rank must pass the same size)"));
      }
    }
    ULYSSES_RETURN_IF_ERROR(group_start());
    for (int p = 0; p < size(); ++p) {
      pending_.push_back(Op{true, const_cast<void*>(send), bytes_per_rank, p, stream});
      pending_.push_back(Op{false,
                            static_cast<char*>(recv) + static_cast<std::size_t>(p) * bytes_per_rank,
                            bytes_per_rank, p, stream});
    }
    return group_end();
  }

  Status all_reduce_sum(const void* send, void* recv, std::size_t count, DType dtype,
                        Stream stream) override {
    constexpr std::string_view kApi = "ulysses::LoopbackComm::all_reduce_sum";
    if (dtype != DType::kFloat32 && dtype != DType::kFloat64) {
      return detail::arg_error(kApi, "dtype", "is not supported", dtype_name(dtype),
                               "fp32 or fp64");
    }
    if (count > 0 && (send == nullptr || recv == nullptr)) {
      return detail::arg_error(kApi, "send/recv", "is null", "nullptr", "valid pointers");
    }
    // Device memory is staged through the host (the loopback is for correctness, not speed).
    const std::size_t bytes = count * dtype_size(dtype);
    std::vector<unsigned char> mine(bytes), out(bytes);
    ULYSSES_RETURN_IF_ERROR(transport_->to_host(mine.data(), send, bytes, stream));
    // send may alias recv: every rank first sums into private storage (reading all peers' send
    // buffers), and writes recv only after the second barrier, when no peer reads any more.
    std::vector<double> acc(count, 0.0);
    CollSlot slot{CollKind::kAllReduce, mine.data(), out.data(), count, dtype};
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
        reinterpret_cast<float*>(out.data())[i] = static_cast<float>(acc[i]);
      } else {
        reinterpret_cast<double*>(out.data())[i] = acc[i];
      }
    }
    return transport_->from_host(recv, out.data(), bytes, stream);
  }

  Status host_all_gather(const void* send, void* recv, std::size_t bytes_per_rank) override {
    if (bytes_per_rank > 0 && (send == nullptr || recv == nullptr)) {
      return detail::arg_error("ulysses::LoopbackComm::host_all_gather", "send/recv", "is null",
                               "nullptr", "host pointers");
    }
    CollSlot slot{CollKind::kAllGather, send, recv, bytes_per_rank, DType::kFloat32};
    return hub_->collective(
        rank_, slot, "host_all_gather", [&](const std::vector<CollSlot>& slots) {
          for (int r = 0; r < size(); ++r) {
            if (bytes_per_rank == 0) continue;
            std::memcpy(static_cast<char*>(recv) + static_cast<std::size_t>(r) * bytes_per_rank,
                        slots[static_cast<std::size_t>(r)].send, bytes_per_rank);
          }
        });
  }

  Status barrier(Stream stream) override {
    ULYSSES_RETURN_IF_ERROR(transport_->to_host(nullptr, nullptr, 0, stream));  // drains the stream
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
    Status first = copy_to_self(ops);
    struct Posted {
      std::shared_ptr<PostedSend> send;
      const Op* op;
    };
    std::vector<Posted> posted;
    for (const Op& op : ops) {
      if (!op.is_send || op.done) continue;
      ULYSSES_ASSIGN_OR_RETURN(auto ready, transport_->ready_token(op.stream));
      posted.push_back({hub_->post_send(rank_, op.peer, op.data, op.bytes, std::move(ready)), &op});
    }
    // Receives in a balanced pairwise order: rank r takes its own data first, then r + 1, r + 2,
    // ... (mod P), so at the k-th receive every rank reads from a different peer (with copy
    // engines, every GPU's outgoing link serves one reader at a time instead of all P - 1 readers
    // queueing on rank 0, then on rank 1, ...). Receives from one peer keep their order.
    std::vector<const Op*> receives;
    for (const Op& op : ops) {
      if (!op.is_send && !op.done) receives.push_back(&op);
    }
    const int n = size();
    std::stable_sort(receives.begin(), receives.end(), [&](const Op* a, const Op* b) {
      return (a->peer - rank_ + n) % n < (b->peer - rank_ + n) % n;
    });
    for (const Op* r : receives) {
      const Op& op = *r;
      Status st = hub_->receive(op.peer, rank_, op.data, op.bytes, [&](void* dst, PostedSend& s) {
        return transport_->copy(dst, s, op.stream);
      });
      if (first.is_ok() && !st.is_ok()) first = st;
      if (st.code() == StatusCode::kTimeout) break;  // the hub is broken: nothing more can complete
    }
    for (const Posted& p : posted) {
      Status st = hub_->wait_consumed(p.send, rank_, p.op->peer);
      if (st.is_ok()) st = transport_->after_consumed(*p.send, p.op->stream);
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
    Stream stream;
    bool done = false;  // served by copy_to_self(), not through the hub
  };

  // A group's sends to this rank meet its receives from it in order (the k-th with the k-th, as
  // through the hub). Pairs on one stream are copied here directly: no rendezvous, no events.
  // Other pairs (two streams) are left to the hub, which orders them with the transport's tokens.
  Status copy_to_self(std::vector<Op>& ops) {
    std::vector<Op*> sends, recvs;
    for (Op& op : ops) {
      if (op.peer == rank_) (op.is_send ? sends : recvs).push_back(&op);
    }
    Status first;
    for (std::size_t k = 0; k < std::min(sends.size(), recvs.size()); ++k) {
      Op& s = *sends[k];
      Op& r = *recvs[k];
      if (s.stream != r.stream) continue;
      s.done = r.done = true;
      Status st = Hub::size_mismatch(rank_, rank_, r.bytes, s.bytes);
      if (st.is_ok() && r.bytes > 0) st = transport_->local_copy(r.data, s.data, r.bytes, r.stream);
      if (first.is_ok() && !st.is_ok()) first = st;
    }
    return first;
  }

  Status check_p2p(std::string_view what, const void* data, std::size_t bytes, int peer) const {
    const std::string api = str_cat("ulysses::LoopbackComm::", what);
    if (peer < 0 || peer >= size()) {
      return detail::arg_error(api, "peer", "is out of range", peer, str_cat("0..", size() - 1));
    }
    if (bytes > 0 && data == nullptr) {
      return detail::arg_error(api, "data", "is null", "nullptr", "a valid pointer");
    }
    return Status::ok();
  }

  std::shared_ptr<Hub> hub_;
  const int rank_;
  std::shared_ptr<comm::LoopbackTransport> transport_;
  const bool copies_own_rows_;
  bool in_group_ = false;
  std::vector<Op> pending_;
};

class HostTransport final : public comm::LoopbackTransport {
 public:
  Device device() const override { return Device::host(); }
  std::string_view name() const override { return "loopback"; }
  Result<std::shared_ptr<void>> ready_token(Stream) override { return std::shared_ptr<void>(); }
  Status copy(void* dst, PostedSend& send, Stream) override { return comm::host_copy(dst, send); }
  Status local_copy(void* dst, const void* src, std::size_t bytes, Stream) override {
    std::memcpy(dst, src, bytes);
    return Status::ok();
  }
  Status after_consumed(const PostedSend&, Stream) override { return Status::ok(); }
  Status to_host(void* dst, const void* src, std::size_t bytes, Stream) override {
    if (bytes > 0) std::memcpy(dst, src, bytes);
    return Status::ok();
  }
  Status from_host(void* dst, const void* src, std::size_t bytes, Stream) override {
    if (bytes > 0) std::memcpy(dst, src, bytes);
    return Status::ok();
  }
};

}  // namespace

namespace comm {
std::vector<std::unique_ptr<Communicator>> make_loopback_comms(
    int size, LoopbackOptions options, std::shared_ptr<LoopbackTransport> transport) {
  return make_loopback_comms(options, std::vector<std::shared_ptr<LoopbackTransport>>(
                                          static_cast<std::size_t>(size), std::move(transport)));
}

std::vector<std::unique_ptr<Communicator>> make_loopback_comms(
    LoopbackOptions options, std::vector<std::shared_ptr<LoopbackTransport>> transports) {
  const int size = static_cast<int>(transports.size());
  auto hub = std::make_shared<Hub>(size, options);
  std::vector<std::unique_ptr<Communicator>> comms;
  for (int r = 0; r < size; ++r) {
    comms.push_back(std::make_unique<LoopbackComm>(
        hub, r, std::move(transports[static_cast<std::size_t>(r)]), options.copies_own_rows));
  }
  return comms;
}
}  // namespace comm

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
  return comm::make_loopback_comms(size, options, std::make_shared<HostTransport>());
}

}  // namespace ulysses
