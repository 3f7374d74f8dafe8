// ulysses: side streams and a pool of events on one device, for overlapping exchanges with
// compute (and one kernel call with the next). On the host (loopback) every operation is a no-op
// and side() is the null stream: host work is already ordered by program order.
#pragma once

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

  /// `events` reusable events and `sides` side streams on `device` (created once: nothing is
  /// allocated per call).
  static Result<std::unique_ptr<StreamSet>> create(Device device, int events, int sides = 1);
};

}  // namespace ulysses::kernels
