// The host StreamSet (no-ops), and the factory's host branch.
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
};
}  // namespace

Result<std::unique_ptr<StreamSet>> StreamSet::create(Device device, int events, int sides) {
  if (device.is_host()) return std::unique_ptr<StreamSet>(std::make_unique<HostStreams>());
  return cuda::create_stream_set(device.index, events, sides);
}

}  // namespace ulysses::kernels
