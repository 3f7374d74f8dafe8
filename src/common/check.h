// ulysses: internal check macros and message helpers (one error model: Status / Result).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <sstream>
#include <string>
#include <utility>

#include "ulysses/status.h"

namespace ulysses::detail {

/// Concatenates anything streamable into one string.
template <typename... Args>
std::string str_cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

/// The one template for argument errors:
///   "<api>: <argument> <problem> (got <value>, expected <constraint>)"
template <typename V>
Status arg_error(std::string_view api, std::string_view argument, std::string_view problem,
                 const V& value, std::string_view constraint) {
  return invalid_argument(
      str_cat(api, ": ", argument, " ", problem, " (got ", value, ", expected ", constraint, ")"));
}

/// Most elements a tensor of a configuration may hold (2^48: 512 TiB of bf16, far past any
/// device), so that the plans' size arithmetic (elements times bytes, chunks, ranks) fits in int64.
inline constexpr std::int64_t kMaxTensorElements = std::int64_t{1} << 48;

/// Where the product of non-negative factors exceeds `limit`, or int64 itself: its value for the
/// message ("more than 2^63 - 1" where it overflows); else nullopt. Sizes of configurations are
/// checked with it before any arithmetic on them.
inline std::optional<std::string> product_over(std::initializer_list<std::int64_t> factors,
                                               std::int64_t limit) {
  std::int64_t p = 1;
  for (const std::int64_t f : factors) {
    if (__builtin_mul_overflow(p, f, &p)) return std::string("more than 2^63 - 1");
  }
  if (p > limit) return str_cat(p);
  return std::nullopt;
}

}  // namespace ulysses::detail

/// Returns the Status of `expr` from the calling function when it is not OK.
#define ULYSSES_RETURN_IF_ERROR(expr)                     \
  do {                                                    \
    ::ulysses::Status ulysses_status_ = (expr);           \
    if (!ulysses_status_.is_ok()) return ulysses_status_; \
  } while (0)

#define ULYSSES_CONCAT_INNER_(a, b) a##b
#define ULYSSES_CONCAT_(a, b) ULYSSES_CONCAT_INNER_(a, b)

/// `ULYSSES_ASSIGN_OR_RETURN(auto x, make_x());` declares x from a Result or returns its Status.
#define ULYSSES_ASSIGN_OR_RETURN(lhs, rexpr) \
  ULYSSES_ASSIGN_OR_RETURN_IMPL_(ULYSSES_CONCAT_(ulysses_result_, __LINE__), lhs, rexpr)
#define ULYSSES_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                   \
  if (!tmp.is_ok()) return tmp.status();                \
  lhs = std::move(tmp).value()
