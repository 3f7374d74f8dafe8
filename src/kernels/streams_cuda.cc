// The CUDA StreamSet: non-blocking side streams and a fixed pool of timing-free events.
#include <cuda_runtime.h>

#include <vector>

#include "common/cuda_check.h"
#include "kernels/streams.h"

namespace ulysses::kernels::cuda {
namespace {

class CudaStreams final : public StreamSet {
 public:
  explicit CudaStreams(int device) : device_(device) {}
  ~CudaStreams() override {
    cudaSetDevice(device_);
    if (scratch_) cudaFree(scratch_);  // waits for the work that used it
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
    for (cudaStream_t s : sides_) cudaStreamDestroy(s);
  }
  Status init(int events, int sides) {
    ULYSSES_CUDA_CHECK(cudaSetDevice(device_));
    for (int i = 0; i < sides; ++i) {
      cudaStream_t s = nullptr;
      ULYSSES_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
      sides_.push_back(s);
    }
    events_.resize(static_cast<std::size_t>(events), nullptr);
    for (cudaEvent_t& e : events_)
      ULYSSES_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return Status::ok();
  }
  Stream side(int i) const override { return sides_.at(static_cast<std::size_t>(i)); }
  Status record(int i, Stream stream) override {
    ULYSSES_CUDA_CHECK(cudaEventRecord(events_.at(static_cast<std::size_t>(i)), stream));
    return Status::ok();
  }
  Status wait(Stream stream, int i) override {
    ULYSSES_CUDA_CHECK(cudaStreamWaitEvent(stream, events_.at(static_cast<std::size_t>(i)), 0));
    return Status::ok();
  }
  Result<void*> scratch(std::size_t bytes, Stream stream) override {
    if (bytes > scratch_bytes_) {
      // (From the pool of the stream's device: the caller's current device is left alone.)
      ULYSSES_RETURN_IF_ERROR(release_scratch(stream));
      ULYSSES_CUDA_CHECK(cudaMallocAsync(&scratch_, bytes, stream));
      scratch_bytes_ = bytes;
    }
    return scratch_;
  }
  std::size_t scratch_bytes() const override { return scratch_bytes_; }
  Status release_scratch(Stream stream) override {
    if (scratch_) ULYSSES_CUDA_CHECK(cudaFreeAsync(scratch_, stream));
    scratch_ = nullptr;
    scratch_bytes_ = 0;
    return Status::ok();
  }

 private:
  int device_;
  std::vector<cudaStream_t> sides_;
  std::vector<cudaEvent_t> events_;
  void* scratch_ = nullptr;
  std::size_t scratch_bytes_ = 0;
};

}  // namespace

Result<std::unique_ptr<StreamSet>> create_stream_set(int device, int events, int sides) {
  auto s = std::make_unique<CudaStreams>(device);
  ULYSSES_RETURN_IF_ERROR(s->init(events, sides));
  return std::unique_ptr<StreamSet>(std::move(s));
}

}  // namespace ulysses::kernels::cuda
