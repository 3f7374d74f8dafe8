// ulysses: the one error model of the library.
//
// Every public call that can fail returns a [[nodiscard]] Status or Result<T>. No exception crosses
// the public API, the library never aborts and never reports an error by printing alone.
//
// Argument errors follow one template so that they can be read (and grepped) the same way
// everywhere:
//   "<api>: <argument> <problem> (got <value>, expected <constraint>)"
// e.g. "ulysses::DistributedAttention::create: num_heads_q 12 must be divisible by cp (got 12,
// expected a multiple of 8)".
//
// Host-only header: no CUDA, NCCL or cuDNN include.
#pragma once

#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace ulysses {

enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument = 1,  // a caller's argument breaks a documented constraint
  kConfigMismatch = 2,   // ranks of one group were given configurations that disagree
  kUnsupported = 3,      // valid request that this build, backend or library version cannot run
  kCommError = 4,    // the communication library reported an error (or a peer broke the protocol)
  kTimeout = 5,      // a bounded wait expired (peer dead, hung, or never called the collective)
  kOutOfMemory = 6,  // an allocation failed
  kInternal = 7,     // a bug in ulysses or a dependency returned something impossible
};

/// Stable upper-case name of a code ("INVALID_ARGUMENT", ...).
std::string_view status_code_name(StatusCode code);

/// Outcome of an operation: a code and, when not OK, a human-readable message.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return Status(); }

  bool is_ok() const { return code_ == StatusCode::kOk; }
  explicit operator bool() const { return is_ok(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  /// "INVALID_ARGUMENT: <message>", or "OK".
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status invalid_argument(std::string message) {
  return Status(StatusCode::kInvalidArgument, std::move(message));
}
inline Status unsupported(std::string message) {
  return Status(StatusCode::kUnsupported, std::move(message));
}
inline Status internal_error(std::string message) {
  return Status(StatusCode::kInternal, std::move(message));
}

/// Either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
  static_assert(!std::is_same_v<T, Status>, "Result<Status> is meaningless");

 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design, like absl::StatusOr
  Result(Status status) : v_(std::move(status)) {
    if (std::get<Status>(v_).is_ok()) {
      v_ = Status(StatusCode::kInternal, "Result constructed from an OK Status without a value");
    }
  }

  bool is_ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return is_ok(); }

  /// The status: OK when a value is held.
  Status status() const { return is_ok() ? Status::ok() : std::get<Status>(v_); }

  /// The value; only valid when is_ok().
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }

  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace ulysses
