#include "ulysses/status.h"

namespace ulysses {

std::string_view status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "OK";
    case StatusCode::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case StatusCode::kConfigMismatch:
      return "CONFIG_MISMATCH";
    case StatusCode::kUnsupported:
      return "UNSUPPORTED";
    case StatusCode::kCommError:
      return "COMM_ERROR";
    case StatusCode::kTimeout:
      return "TIMEOUT";
    case StatusCode::kOutOfMemory:
      return "OUT_OF_MEMORY";
    case StatusCode::kInternal:
      return "INTERNAL";
  }
  return "UNKNOWN";
}

std::string Status::to_string() const {
  if (is_ok()) return "OK";
  std::string out(status_code_name(code_));
  out += ": ";
  out += message_;
  return out;
}

}  // namespace ulysses
