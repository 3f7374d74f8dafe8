// ulysses: division of 32-bit indices by a runtime divisor with one multiply-high, an add and a
// shift (Granlund and Montgomery 1994, the round-up method), for decomposing flat indices in
// device kernels. A 64-bit `/` and `%` per element costs more than moving the element.
//
// Host and device: the divisor is prepared on the host and passed to a kernel by value.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define ULYSSES_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define ULYSSES_HOST_DEVICE inline
#endif

namespace ulysses::kernels {

/// n / d and n % d for every n < 2^32 and a fixed d in [1, 2^32).
class FastDiv {
 public:
  FastDiv() = default;
  /// d >= 1 (d = 0 is treated as 1).
  explicit FastDiv(std::uint32_t d) : d_(d == 0 ? 1 : d) {
    // shift = ceil(log2 d); magic = floor(2^32 (2^shift - d) / d) + 1, which is < 2^32.
    while ((std::uint64_t{1} << shift_) < d_) ++shift_;
    magic_ = static_cast<std::uint32_t>(
        ((std::uint64_t{1} << 32) * ((std::uint64_t{1} << shift_) - d_)) / d_ + 1);
  }

  ULYSSES_HOST_DEVICE std::uint32_t divisor() const { return d_; }

  ULYSSES_HOST_DEVICE std::uint32_t div(std::uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const std::uint32_t hi = __umulhi(n, magic_);
#else
    const auto hi = static_cast<std::uint32_t>((std::uint64_t{n} * magic_) >> 32);
#endif
    return static_cast<std::uint32_t>((std::uint64_t{hi} + n) >> shift_);
  }

  /// q = n / d, r = n % d.
  ULYSSES_HOST_DEVICE void divmod(std::uint32_t n, std::uint32_t& q, std::uint32_t& r) const {
    q = div(n);
    r = n - q * d_;
  }

 private:
  std::uint32_t d_ = 1;
  std::uint32_t magic_ = 1;
  std::uint32_t shift_ = 0;
};

}  // namespace ulysses::kernels
