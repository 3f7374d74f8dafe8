// The host StreamSet (no-ops), and the factory's host branch.
#include <cstddef>
#include <memory>
#include <new>

#include "common/check.h"
#include "kernels/streams.h"

namespace ulysses::kernels {

namespace cuda {
Result<std::unique_ptr<StreamSet>> create_stream_set(int device, int events, int sides);
}

namespace {
class HostStreams final : public StreamSet {
 public:
  Stream side(int) const override { return nullptr; }
  Status record(int, Stream) override { return Status::ok(); }
  Status wait(Stream, int) override { return Status::ok(); }
  Result<void*> scratch(std::size_t bytes, Stream) override {
    if (bytes > bytes_) {
      buffer_.reset(static_cast<std::byte*>(::operator new(bytes, kAlign)));
      bytes_ = bytes;
    }
    return static_cast<void*>(buffer_.get());
  }
  std::size_t scratch_bytes() const override { return bytes_; }
  Status release_scratch(Stream) override {
    buffer_.reset();
    bytes_ = 0;
    return Status::ok();
  }

 private:
  static constexpr std::align_val_t kAlign{256};
  struct Free {
    void operator()(std::byte* p) const { ::operator delete(p, kAlign); }
  };
  std::unique_ptr<std::byte, Free> buffer_;
  std::size_t bytes_ = 0;
};
}  // namespace

Result<std::unique_ptr<StreamSet>> StreamSet::create(Device device, int events, int sides) {
  if (device.is_host()) return std::unique_ptr<StreamSet>(std::make_unique<HostStreams>());
  return cuda::create_stream_set(device.index, events, sides);
}

}  // namespace ulysses::kernels
