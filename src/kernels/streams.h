// ulysses: side streams and a pool of events on one device, for overlapping exchanges with
// compute (and one kernel call with the next), and one grow-only scratch buffer for the rare call
// that needs more than its caller's workspace. On the host (loopback) every stream operation is a
// no-op and side() is the null stream: host work is already ordered by program order.
#pragma once

#include <cstddef>
#include <memory>

#include "ulysses/status.h"
#include "ulysses/types.h"

namespace ulysses::kernels {

class StreamSet {
 public:
  virtual ~StreamSet() = default;
  /// Side stream `i` (0 <= i < the count given to create()), for work that should run beside the
  /// caller's stream.
  virtual Stream side(int i = 0) const = 0;
  /// Records event `i` on `stream`; wait(s, i) makes `s` wait for the last record of event `i`.
  virtual Status record(int i, Stream stream) = 0;
  virtual Status wait(Stream stream, int i) = 0;
  /// A buffer of at least `bytes` owned by the set, 256-byte aligned: allocated in stream order on
  /// `stream` the first time (on devices with cudaMallocAsync, after the previous buffer is freed
  /// in stream order), the same buffer afterwards while it is large enough; freed with the set.
  /// Work that uses it must be ordered after earlier work that did (e.g. one caller's stream).
  virtual Result<void*> scratch(std::size_t bytes, Stream stream) = 0;
  /// The scratch buffer's size now (0 before the first scratch() or after release_scratch()).
  virtual std::size_t scratch_bytes() const = 0;
  /// Frees the scratch buffer in stream order on `stream` (after the work that used it, ordered
  /// there by the caller); the next scratch() allocates again.
  virtual Status release_scratch(Stream stream) = 0;

  /// `events` reusable events and `sides` side streams on `device` (created once: nothing is
  /// allocated per call).
  static Result<std::unique_ptr<StreamSet>> create(Device device, int events, int sides = 1);
};

}  // namespace ulysses::kernels
