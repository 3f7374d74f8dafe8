// NCCL communicator.
//
// Non-blocking NCCL communicators (config.blocking = 0): any call may return ncclInProgress, after
// which the communicator's state is polled with ncclCommGetAsyncError until it settles, for at most
// NcclOptions::timeout. A timeout or an asynchronous error aborts *every* communicator ulysses
// holds (registry below): a hung or dead peer gives the survivors no error of its own (a dead peer
// on the same node is only noticed by the survivors' timeouts), so aborting all of them together is
// what turns a hang into a Status on every surviving rank.
//
// Stream contract: every operation is enqueued on the caller's stream (ordered after its work;
// later work sees the results). Nothing here synchronises the device except synchronize(),
// host_all_gather() and warm_up(), which are not on the hot path.
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>

#include "comm/exchange_shape.h"
#include "common/cuda_check.h"
#include "ulysses/gpu.h"

namespace ulysses {
namespace {

using detail::str_cat;
using Clock = std::chrono::steady_clock;

Status nccl_error(ncclResult_t r, const char* expr, const char* file, int line, ncclComm_t comm) {
  const char* last = comm ? ncclGetLastError(comm) : nullptr;
  return Status(StatusCode::kCommError,
                str_cat("NCCL error ", ncclGetErrorString(r), " in ", expr, " at ", file, ":", line,
                        (last && *last) ? str_cat(": ", last) : std::string()));
}

class NcclComm;

// Every live NcclComm, so that a timeout on one aborts all of them.
std::mutex g_registry_mu;
std::set<NcclComm*> g_registry;

class NcclComm final : public Communicator {
 public:
  NcclComm(ncclComm_t comm, bool owned, int device, NcclOptions options)
      : comm_(comm), owned_(owned), device_(device), options_(options) {
    ncclCommUserRank(comm_, &rank_);
    ncclCommCount(comm_, &size_);
    int version = 0;
    native_a2a_ = kHeaderHasNativeAllToAll && options_.native_all_to_all &&
                  ncclGetVersion(&version) == ncclSuccess && version >= kFirstNativeAllToAll;
    std::lock_guard<std::mutex> lock(g_registry_mu);
    g_registry.insert(this);
  }

  ~NcclComm() override {
    {
      std::lock_guard<std::mutex> lock(g_registry_mu);
      g_registry.erase(this);
    }
    cudaSetDevice(device_);
    if (scratch_) cudaFree(scratch_);
    if (!owned_ || aborted_) return;
    if (ncclCommFinalize(comm_) == ncclInProgress) (void)wait_ready("ncclCommFinalize");
    ncclCommDestroy(comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Device device() const override { return Device::cuda(device_); }
  std::string_view backend_name() const override { return "nccl"; }
  ncclComm_t handle() const { return comm_; }
  const NcclOptions& options() const { return options_; }

  Status all_to_all_v(const void* send, std::span<const std::size_t> send_counts,
                      std::span<const std::size_t> send_offsets, void* recv,
                      std::span<const std::size_t> recv_counts,
                      std::span<const std::size_t> recv_offsets, Stream stream) override {
    const auto n = static_cast<std::size_t>(size_);
    if (send_counts.size() != n || send_offsets.size() != n || recv_counts.size() != n ||
        recv_offsets.size() != n) {
      return detail::arg_error("ulysses::NcclComm::all_to_all_v", "counts/offsets",
                               "have the wrong length", send_counts.size(),
                               str_cat(n, " entries each (one per rank)"));
    }
    ULYSSES_RETURN_IF_ERROR(usable());
    if (native_a2a_) {
      const std::size_t bytes = comm::uniform_exchange_bytes(send, send_counts, send_offsets, recv,
                                                             recv_counts, recv_offsets);
      if (bytes > 0) return native_all_to_all(send, recv, bytes, stream);
    }
    return grouped_all_to_all(send, send_counts, send_offsets, recv, recv_counts, recv_offsets,
                              stream);
  }

  Status native_all_to_all(const void* send, void* recv, std::size_t bytes, Stream stream) {
#if NCCL_VERSION_CODE >= 22800  // kFirstNativeAllToAll: the header declares ncclAlltoAll
    return check(ncclAlltoAll(send, recv, bytes, ncclUint8, comm_, stream), "ncclAlltoAll");
#else
    (void)send, (void)recv, (void)bytes, (void)stream;
    return internal_error("ulysses::NcclComm: built against an NCCL without ncclAlltoAll");
#endif
  }

  Status grouped_all_to_all(const void* send, std::span<const std::size_t> send_counts,
                            std::span<const std::size_t> send_offsets, void* recv,
                            std::span<const std::size_t> recv_counts,
                            std::span<const std::size_t> recv_offsets, Stream stream) {
    ULYSSES_RETURN_IF_ERROR(check(ncclGroupStart(), "ncclGroupStart"));
    for (std::size_t p = 0; p < send_counts.size(); ++p) {
      const int peer = static_cast<int>(p);
      ULYSSES_RETURN_IF_ERROR(check(ncclSend(static_cast<const char*>(send) + send_offsets[p],
                                             send_counts[p], ncclUint8, peer, comm_, stream),
                                    "ncclSend"));
      ULYSSES_RETURN_IF_ERROR(check(ncclRecv(static_cast<char*>(recv) + recv_offsets[p],
                                             recv_counts[p], ncclUint8, peer, comm_, stream),
                                    "ncclRecv"));
    }
    return check(ncclGroupEnd(), "ncclGroupEnd");
  }

  Status send(const void* data, std::size_t bytes, int peer, Stream stream) override {
    ULYSSES_RETURN_IF_ERROR(check_peer("send", peer));
    ULYSSES_RETURN_IF_ERROR(usable());
    return check(ncclSend(data, bytes, ncclUint8, peer, comm_, stream), "ncclSend");
  }

  Status recv(void* data, std::size_t bytes, int peer, Stream stream) override {
    ULYSSES_RETURN_IF_ERROR(check_peer("recv", peer));
    ULYSSES_RETURN_IF_ERROR(usable());
    return check(ncclRecv(data, bytes, ncclUint8, peer, comm_, stream), "ncclRecv");
  }

  Status all_gather(const void* send, void* recv, std::size_t bytes_per_rank,
                    Stream stream) override {
    ULYSSES_RETURN_IF_ERROR(usable());
    return check(ncclAllGather(send, recv, bytes_per_rank, ncclUint8, comm_, stream),
                 "ncclAllGather");
  }

  Status all_reduce_sum(const void* send, void* recv, std::size_t count, DType dtype,
                        Stream stream) override {
    if (dtype != DType::kFloat32 && dtype != DType::kFloat64) {
      return detail::arg_error("ulysses::NcclComm::all_reduce_sum", "dtype", "is not supported",
                               dtype_name(dtype), "fp32 or fp64");
    }
    ULYSSES_RETURN_IF_ERROR(usable());
    return check(
        ncclAllReduce(send, recv, count, dtype == DType::kFloat32 ? ncclFloat32 : ncclFloat64,
                      ncclSum, comm_, stream),
        "ncclAllReduce");
  }

  Status barrier(Stream stream) override {
    ULYSSES_RETURN_IF_ERROR(ensure_scratch());
    ULYSSES_RETURN_IF_ERROR(usable());
    return check(ncclAllReduce(scratch_, scratch_, 1, ncclFloat32, ncclSum, comm_, stream),
                 "ncclAllReduce (barrier)");
  }

  Status host_all_gather(const void* send, void* recv, std::size_t bytes_per_rank) override {
    ULYSSES_CUDA_CHECK(cudaSetDevice(device_));
    ULYSSES_RETURN_IF_ERROR(usable());
    const std::size_t total = bytes_per_rank * static_cast<std::size_t>(size_);
    void* dev = nullptr;
    ULYSSES_CUDA_CHECK(cudaMalloc(&dev, total + bytes_per_rank));
    cudaStream_t s = nullptr;
    Status st = [&]() -> Status {
      ULYSSES_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
      char* mine = static_cast<char*>(dev) + total;
      ULYSSES_CUDA_CHECK(cudaMemcpyAsync(mine, send, bytes_per_rank, cudaMemcpyHostToDevice, s));
      ULYSSES_RETURN_IF_ERROR(check(ncclAllGather(mine, dev, bytes_per_rank, ncclUint8, comm_, s),
                                    "ncclAllGather (host_all_gather)"));
      ULYSSES_CUDA_CHECK(cudaMemcpyAsync(recv, dev, total, cudaMemcpyDeviceToHost, s));
      return wait_stream(s);
    }();
    if (s) cudaStreamDestroy(s);
    cudaFree(dev);
    return st;
  }

  Status warm_up() override {
    // One byte to and from every peer, so NCCL sets up its connections now: point-to-point ones,
    // and ncclAlltoAll's when uniform exchanges use it.
    ULYSSES_CUDA_CHECK(cudaSetDevice(device_));
    const std::size_t n = static_cast<std::size_t>(size_);
    void* dev = nullptr;
    ULYSSES_CUDA_CHECK(cudaMalloc(&dev, 2 * n));
    cudaStream_t s = nullptr;
    Status st = [&]() -> Status {
      ULYSSES_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
      std::vector<std::size_t> counts(n, 1), offsets(n);
      for (std::size_t p = 0; p < n; ++p) offsets[p] = p;
      ULYSSES_RETURN_IF_ERROR(usable());
      ULYSSES_RETURN_IF_ERROR(grouped_all_to_all(dev, counts, offsets, static_cast<char*>(dev) + n,
                                                 counts, offsets, s));
      if (native_a2a_) {
        ULYSSES_RETURN_IF_ERROR(native_all_to_all(dev, static_cast<char*>(dev) + n, 1, s));
      }
      return wait_stream(s);
    }();
    if (s) cudaStreamDestroy(s);
    cudaFree(dev);
    return st;
  }

  Status group_start() override { return check(ncclGroupStart(), "ncclGroupStart"); }
  Status group_end() override { return check(ncclGroupEnd(), "ncclGroupEnd"); }

  // Polls `stream` to completion with the timeout, watching the communicator's async error.
  Status wait_stream(cudaStream_t stream) {
    const auto deadline = Clock::now() + options_.timeout;
    while (true) {
      // Done only when the stream is idle *and* NCCL has nothing in progress: a non-blocking
      // operation still waiting for its peer (e.g. for a connection) has not reached the stream
      // yet, so an idle stream alone proves nothing (seen on 2x H200: a send to a peer that never
      // called left the stream empty).
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(comm_, &state);
      const cudaError_t q = cudaStreamQuery(stream);
      if (q == cudaSuccess && state == ncclSuccess) return Status::ok();
      if (q != cudaSuccess && q != cudaErrorNotReady) ULYSSES_CUDA_CHECK(q);
      ncclResult_t async = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &async) == ncclSuccess && async != ncclSuccess &&
          async != ncclInProgress) {
        Status err = nccl_error(async, "an operation in flight", __FILE__, __LINE__, comm_);
        abort_all(err.message());
        return err;
      }
      if (Clock::now() > deadline) return timed_out("waiting for the stream");
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  void mark_aborted() { aborted_ = true; }

  // Waits until a non-blocking call that returned ncclInProgress has settled.
  Status wait_ready(std::string_view what) {
    const auto deadline = Clock::now() + options_.timeout;
    while (true) {
      ncclResult_t state = ncclSuccess;
      const ncclResult_t r = ncclCommGetAsyncError(comm_, &state);
      if (r != ncclSuccess)
        return nccl_error(r, "ncclCommGetAsyncError", __FILE__, __LINE__, comm_);
      if (state == ncclSuccess) return Status::ok();
      if (state != ncclInProgress) {
        Status err = nccl_error(state, std::string(what).c_str(), __FILE__, __LINE__, comm_);
        abort_all(err.message());
        return err;
      }
      if (Clock::now() > deadline) return timed_out(what);
      std::this_thread::yield();
    }
  }

  static void abort_all(const std::string& reason);

 private:
  Status check(ncclResult_t r, const char* what) {
    if (r == ncclSuccess) return Status::ok();
    if (r == ncclInProgress) return wait_ready(what);
    Status err = nccl_error(r, what, __FILE__, __LINE__, comm_);
    abort_all(err.message());
    return err;
  }

  Status timed_out(std::string_view what) {
    const std::string msg = str_cat("ulysses::NcclComm: rank ", rank_, " timed out after ",
                                    options_.timeout.count(), " ms ", what,
                                    " (a peer is hung, dead or never called; every ulysses NCCL "
                                    "communicator is now aborted)");
    abort_all(msg);
    return Status(StatusCode::kTimeout, msg);
  }

  Status usable() const {
    if (!aborted_) return Status::ok();
    return Status(StatusCode::kCommError, str_cat("ulysses::NcclComm: rank ", rank_,
                                                  " was aborted earlier: ", abort_reason_));
  }

  Status check_peer(std::string_view what, int peer) const {
    if (peer >= 0 && peer < size_) return Status::ok();
    return detail::arg_error(str_cat("ulysses::NcclComm::", what), "peer", "is out of range", peer,
                             str_cat("0..", size_ - 1));
  }

  Status ensure_scratch() {
    if (scratch_) return Status::ok();
    ULYSSES_CUDA_CHECK(cudaSetDevice(device_));
    ULYSSES_CUDA_CHECK(cudaMalloc(&scratch_, 256));
    ULYSSES_CUDA_CHECK(cudaMemset(scratch_, 0, 256));
    return Status::ok();
  }

  ncclComm_t comm_;
  bool owned_;
  int device_;
  NcclOptions options_;
  // NCCL_VERSION_CODE of the first library with ncclAlltoAll; whether this build's header has it.
  static constexpr int kFirstNativeAllToAll = 22800;
  static constexpr bool kHeaderHasNativeAllToAll = NCCL_VERSION_CODE >= kFirstNativeAllToAll;
  int rank_ = 0, size_ = 1;
  bool native_a2a_ = false;  // uniform exchanges through ncclAlltoAll (see NcclOptions)
  void* scratch_ = nullptr;
  bool aborted_ = false;
  std::string abort_reason_;
};

void NcclComm::abort_all(const std::string& reason) {
  std::lock_guard<std::mutex> lock(g_registry_mu);
  for (NcclComm* c : g_registry) {
    if (c->aborted_) continue;
    c->aborted_ = true;
    c->abort_reason_ = reason;
    ncclCommAbort(c->comm_);
  }
}

ncclConfig_t make_config() {
  // NVLink multicast (NVLS) stays off unless the caller's environment says otherwise.
  setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  return config;
}

// Waits for a communicator under construction (non-blocking init/split).
Status wait_init(ncclComm_t comm, ncclResult_t r, const NcclOptions& options, const char* what) {
  if (r != ncclSuccess && r != ncclInProgress) return nccl_error(r, what, __FILE__, __LINE__, comm);
  const auto deadline = Clock::now() + options.timeout;
  while (true) {
    ncclResult_t state = ncclSuccess;
    if (comm == nullptr) return Status::ok();
    const ncclResult_t q = ncclCommGetAsyncError(comm, &state);
    if (q != ncclSuccess) return nccl_error(q, "ncclCommGetAsyncError", __FILE__, __LINE__, comm);
    if (state == ncclSuccess) return Status::ok();
    if (state != ncclInProgress) {
      ncclCommAbort(comm);
      return nccl_error(state, what, __FILE__, __LINE__, nullptr);
    }
    if (Clock::now() > deadline) {
      ncclCommAbort(comm);
      return Status(StatusCode::kTimeout,
                    str_cat(what, " did not complete within ", options.timeout.count(),
                            " ms (did every rank call it with the same unique id and size?)"));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

// The communicator under any ForwardingCommunicator wrappers.
Communicator& unwrapped(Communicator& comm) {
  Communicator* c = &comm;
  while (auto* f = dynamic_cast<ForwardingCommunicator*>(c)) c = &f->inner();
  return *c;
}

}  // namespace

Result<NcclUniqueId> create_nccl_unique_id() {
  ncclUniqueId id;
  const ncclResult_t r = ncclGetUniqueId(&id);
  if (r != ncclSuccess) return nccl_error(r, "ncclGetUniqueId", __FILE__, __LINE__, nullptr);
  NcclUniqueId out;
  static_assert(sizeof(id.internal) == sizeof(out.bytes));
  std::memcpy(out.bytes.data(), id.internal, sizeof(id.internal));
  return out;
}

Result<std::unique_ptr<Communicator>> create_nccl_communicator(const NcclUniqueId& id, int size,
                                                               int rank, int device,
                                                               NcclOptions options) {
  constexpr std::string_view api = "ulysses::create_nccl_communicator";
  if (size < 1) return detail::arg_error(api, "size", "must be positive", size, ">= 1");
  if (rank < 0 || rank >= size) {
    return detail::arg_error(api, "rank", "is out of range", rank, str_cat("0..", size - 1));
  }
  const int n = cuda_device_count();
  if (device < 0 || device >= n) {
    return detail::arg_error(api, "device", "is not a visible CUDA device", device,
                             str_cat("0..", n - 1, " (", n, " visible)"));
  }
  ULYSSES_CUDA_CHECK(cudaSetDevice(device));
  ncclUniqueId uid;
  std::memcpy(uid.internal, id.bytes.data(), sizeof(uid.internal));
  ncclConfig_t config = make_config();
  ncclComm_t comm = nullptr;
  const ncclResult_t r = ncclCommInitRankConfig(&comm, size, uid, rank, &config);
  ULYSSES_RETURN_IF_ERROR(wait_init(comm, r, options, "ncclCommInitRankConfig"));
  return std::unique_ptr<Communicator>(std::make_unique<NcclComm>(comm, true, device, options));
}

Result<std::unique_ptr<Communicator>> wrap_nccl_communicator(ncclComm* comm, int device,
                                                             NcclOptions options) {
  constexpr std::string_view api = "ulysses::wrap_nccl_communicator";
  if (comm == nullptr) {
    return detail::arg_error(api, "comm", "is null", "nullptr", "an initialised ncclComm_t");
  }
  const int n = cuda_device_count();
  if (device < 0 || device >= n) {
    return detail::arg_error(api, "device", "is not a visible CUDA device", device,
                             str_cat("0..", n - 1, " (", n, " visible)"));
  }
  // The device the communicator was created on (a framework's comm for another GPU would run
  // ulysses' exchanges on the wrong device's streams).
  int comm_device = -1;
  if (ncclCommCuDevice(comm, &comm_device) == ncclSuccess && comm_device != device) {
    return detail::arg_error(api, "device", "is not the communicator's device", device,
                             str_cat(comm_device, " (ncclCommCuDevice)"));
  }
  return std::unique_ptr<Communicator>(std::make_unique<NcclComm>(comm, false, device, options));
}

Result<std::unique_ptr<Communicator>> split_nccl_communicator(Communicator& parent,
                                                              const Mesh& mesh, MeshAxis axis) {
  constexpr std::string_view api = "ulysses::split_nccl_communicator";
  auto* p = dynamic_cast<NcclComm*>(&unwrapped(parent));
  if (p == nullptr) {
    return detail::arg_error(api, "parent", "is not an NCCL communicator", parent.backend_name(),
                             "a communicator from create_nccl_communicator()");
  }
  if (mesh.world_size() != parent.size()) {
    return detail::arg_error(api, "mesh", "does not cover the parent communicator",
                             mesh.world_size(), str_cat(parent.size(), " ranks"));
  }
  // Groups are created with ncclCommInitRankConfig from an id that each group's first rank makes
  // and the parent all-gathers, rather than with ncclCommSplit: on NCCL 2.28 with non-blocking
  // communicators, ncclCommSplit handed back no child communicator in our runs (docs/DESIGN.md).
  const int color = mesh.group_color(axis, parent.rank());
  const auto group = mesh.group(axis, parent.rank());
  const int index =
      static_cast<int>(std::find(group.begin(), group.end(), parent.rank()) - group.begin());
  NcclUniqueId mine;
  if (index == 0) {
    ULYSSES_ASSIGN_OR_RETURN(mine, create_nccl_unique_id());
  }
  std::vector<NcclUniqueId> ids(static_cast<std::size_t>(parent.size()));
  ULYSSES_RETURN_IF_ERROR(parent.host_all_gather(&mine, ids.data(), sizeof(NcclUniqueId)));
  auto child = create_nccl_communicator(ids[static_cast<std::size_t>(group.front())],
                                        static_cast<int>(group.size()), index,
                                        parent.device().index, p->options());
  if (!child.is_ok()) {
    return Status(
        child.status().code(),
        str_cat(api, ": group ", color, " along the mesh axis: ", child.status().message()));
  }
  return child;
}

Status synchronize(Communicator& comm, Stream stream) {
  if (comm.device().is_host()) return Status::ok();
  if (auto* n = dynamic_cast<NcclComm*>(&unwrapped(comm))) return n->wait_stream(stream);
  ULYSSES_CUDA_CHECK(cudaSetDevice(comm.device().index));
  ULYSSES_CUDA_CHECK(cudaStreamSynchronize(stream));
  return Status::ok();
}

}  // namespace ulysses
