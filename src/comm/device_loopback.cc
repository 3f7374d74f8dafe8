// Device loopback (P virtual ranks on one GPU) and the peer-copy group (ranks on several GPUs of
// one process). Each rank is a host thread with its own stream; a send records an event when its
// data is ready, the matching receive makes its own stream wait for that event and copies from the
// sender's buffer (same device, or a peer device over NVLink/PCIe: the copy engine either way),
// then records an event the sender's stream waits on before it may overwrite the buffer. No host
// synchronisation on the data path; copies are bit-exact. A rank's copy to itself on one stream
// needs no events. Events come from a pool per transport (creating and destroying two per send cost
// host time on every exchange).
#include <cuda_runtime.h>

#include <mutex>
#include <vector>

#include "comm/loopback_transport.h"
#include "common/cuda_check.h"
#include "ulysses/gpu.h"

namespace ulysses {
namespace {

using comm::PostedSend;

// Events of one device, reused: a token holds one until its last owner lets go, then it returns
// here (re-recording an event that a stream still waits on is safe: the wait captured the earlier
// record). Destroyed with the last token and the transport.
class EventPool : public std::enable_shared_from_this<EventPool> {
 public:
  ~EventPool() {
    for (cudaEvent_t e : free_) cudaEventDestroy(e);
  }

  // An event of the current device (the caller set it), as a token that gives it back.
  Result<std::shared_ptr<void>> take() {
    cudaEvent_t e = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        e = free_.back();
        free_.pop_back();
      }
    }
    if (e == nullptr) ULYSSES_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return std::shared_ptr<void>(e, [pool = shared_from_this()](void* p) {
      std::lock_guard<std::mutex> lock(pool->mu_);
      pool->free_.push_back(static_cast<cudaEvent_t>(p));
    });
  }

 private:
  std::mutex mu_;
  std::vector<cudaEvent_t> free_;
};

class DeviceTransport final : public comm::LoopbackTransport {
 public:
  DeviceTransport(int device, std::string_view name)
      : device_(device), name_(name), events_(std::make_shared<EventPool>()) {}
  Device device() const override { return Device::cuda(device_); }
  std::string_view name() const override { return name_; }

  Result<std::shared_ptr<void>> ready_token(Stream stream) override {
    ULYSSES_CUDA_CHECK(cudaSetDevice(device_));
    ULYSSES_ASSIGN_OR_RETURN(auto token, events_->take());
    ULYSSES_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(token.get()), stream));
    return token;
  }

  Status copy(void* dst, PostedSend& send, Stream stream) override {
    ULYSSES_CUDA_CHECK(cudaSetDevice(device_));
    if (send.ready) {
      ULYSSES_CUDA_CHECK(
          cudaStreamWaitEvent(stream, static_cast<cudaEvent_t>(send.ready.get()), 0));
    }
    // cudaMemcpyDefault: the source may live on a peer device (unified addressing finds it).
    ULYSSES_CUDA_CHECK(cudaMemcpyAsync(dst, send.data, send.bytes, cudaMemcpyDefault, stream));
    ULYSSES_ASSIGN_OR_RETURN(send.done, events_->take());
    ULYSSES_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(send.done.get()), stream));
    return Status::ok();
  }

  Status local_copy(void* dst, const void* src, std::size_t bytes, Stream stream) override {
    ULYSSES_CUDA_CHECK(cudaSetDevice(device_));
    ULYSSES_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream));
    return Status::ok();
  }

  Status after_consumed(const PostedSend& send, Stream stream) override {
    if (!send.done) return Status::ok();
    ULYSSES_CUDA_CHECK(cudaSetDevice(device_));
    ULYSSES_CUDA_CHECK(cudaStreamWaitEvent(stream, static_cast<cudaEvent_t>(send.done.get()), 0));
    return Status::ok();
  }

  Status to_host(void* dst, const void* src, std::size_t bytes, Stream stream) override {
    ULYSSES_CUDA_CHECK(cudaSetDevice(device_));
    if (bytes > 0)
      ULYSSES_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream));
    ULYSSES_CUDA_CHECK(cudaStreamSynchronize(stream));
    return Status::ok();
  }

  Status from_host(void* dst, const void* src, std::size_t bytes, Stream stream) override {
    ULYSSES_CUDA_CHECK(cudaSetDevice(device_));
    if (bytes > 0)
      ULYSSES_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
    ULYSSES_CUDA_CHECK(cudaStreamSynchronize(stream));  // `src` is a temporary host buffer
    return Status::ok();
  }

 private:
  int device_;
  std::string_view name_;
  std::shared_ptr<EventPool> events_;
};

}  // namespace

Result<std::vector<std::unique_ptr<Communicator>>> create_device_loopback_group(
    int size, int device, LoopbackOptions options) {
  constexpr std::string_view api = "ulysses::create_device_loopback_group";
  if (size < 1) return detail::arg_error(api, "size", "must be positive", size, ">= 1");
  const int n = cuda_device_count();
  if (device < 0 || device >= n) {
    return detail::arg_error(api, "device", "is not a visible CUDA device", device,
                             detail::str_cat("0..", n - 1, " (", n, " devices visible)"));
  }
  return comm::make_loopback_comms(size, options,
                                   std::make_shared<DeviceTransport>(device, "device-loopback"));
}

Result<std::vector<std::unique_ptr<Communicator>>> create_peer_copy_group(
    std::span<const int> devices, LoopbackOptions options) {
  constexpr std::string_view api = "ulysses::create_peer_copy_group";
  if (devices.empty()) {
    return detail::arg_error(api, "devices", "is empty", "[]", "one device per rank");
  }
  if (options.timeout.count() <= 0) {
    return detail::arg_error(api, "options.timeout", "must be positive",
                             detail::str_cat(options.timeout.count(), " ms"), "> 0 ms");
  }
  const int n = cuda_device_count();
  for (std::size_t r = 0; r < devices.size(); ++r) {
    if (devices[r] < 0 || devices[r] >= n) {
      return detail::arg_error(api, detail::str_cat("devices[", r, "]"),
                               "is not a visible CUDA device", devices[r],
                               detail::str_cat("0..", n - 1, " (", n, " devices visible)"));
    }
  }
  // Peer access both ways between every two distinct devices (idempotent across groups).
  for (int a : devices) {
    for (int b : devices) {
      if (a == b) continue;
      int can = 0;
      ULYSSES_CUDA_CHECK(cudaDeviceCanAccessPeer(&can, a, b));
      if (!can) {
        return unsupported(detail::str_cat(api, ": device ", a, " cannot access device ", b,
                                           " directly (no NVLink or PCIe peer access; got devices ",
                                           a, " and ", b, ", expected peers): use NCCL"));
      }
      ULYSSES_CUDA_CHECK(cudaSetDevice(a));
      const cudaError_t e = cudaDeviceEnablePeerAccess(b, 0);
      if (e == cudaErrorPeerAccessAlreadyEnabled) {
        (void)cudaGetLastError();  // not sticky: clear it so later checks do not see it
      } else {
        ULYSSES_CUDA_CHECK(e);
      }
    }
  }
  std::vector<std::shared_ptr<comm::LoopbackTransport>> transports;
  for (int d : devices) transports.push_back(std::make_shared<DeviceTransport>(d, "peer-copy"));
  return comm::make_loopback_comms(options, std::move(transports));
}

}  // namespace ulysses
