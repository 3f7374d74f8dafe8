// ulysses: how a loopback communicator moves bytes: host memcpy, or device copies ordered by
// events.
#pragma once

#include <memory>

#include "comm/loopback_hub.h"
#include "ulysses/communicator.h"

namespace ulysses::comm {

class LoopbackTransport {
 public:
  virtual ~LoopbackTransport() = default;
  virtual Device device() const = 0;
  virtual std::string_view name() const = 0;
  /// Sender side, when a send is posted: a token marking "the data is ready" on `stream`.
  virtual Result<std::shared_ptr<void>> ready_token(Stream stream) = 0;
  /// Receiver side: copies the matched send into `dst`, ordered on `stream`; may set send.done.
  virtual Status copy(void* dst, PostedSend& send, Stream stream) = 0;
  /// A rank's copy to itself, ordered on `stream` (both sides' stream): no tokens needed.
  virtual Status local_copy(void* dst, const void* src, std::size_t bytes, Stream stream) = 0;
  /// Sender side, once its send was consumed: later work on `stream` must not overtake the copy.
  virtual Status after_consumed(const PostedSend& send, Stream stream) = 0;
  /// Makes `bytes` at `src` (transport memory) readable on the host in `dst` (blocking).
  virtual Status to_host(void* dst, const void* src, std::size_t bytes, Stream stream) = 0;
  virtual Status from_host(void* dst, const void* src, std::size_t bytes, Stream stream) = 0;
};

/// The N communicators of one loopback group over `transport` (shared by all of them).
std::vector<std::unique_ptr<Communicator>> make_loopback_comms(
    int size, LoopbackOptions options, std::shared_ptr<LoopbackTransport> transport);
/// The same with one transport per rank (rank r moves its bytes with transports[r]).
std::vector<std::unique_ptr<Communicator>> make_loopback_comms(
    LoopbackOptions options, std::vector<std::shared_ptr<LoopbackTransport>> transports);

}  // namespace ulysses::comm
