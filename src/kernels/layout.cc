// Dispatch of the layout operations to the host or CUDA implementation, by the activation's device.
#include "kernels/layout.h"

#include <algorithm>
#include <cmath>

#include "common/check.h"

namespace ulysses::kernels {

Status pack_heads(const TensorView& act, std::span<const int> head_begin, int heads,
                  const MessageLayout& msg, int c_begin, Stream stream) {
  if (act.device.is_host()) return host::pack_heads(act, head_begin, heads, msg, c_begin);
  return cuda::pack_heads(act, head_begin, heads, msg, c_begin, stream);
}

Status unpack_heads(const MessageLayout& msg, int c_begin, std::span<const int> head_begin,
                    int heads, const TensorView& act, Stream stream) {
  if (act.device.is_host()) return host::unpack_heads(msg, c_begin, head_begin, heads, act);
  return cuda::unpack_heads(msg, c_begin, head_begin, heads, act, stream);
}

Status move_heads(bool pack, std::span<const HeadMove> moves, Stream stream) {
  if (moves.empty()) return Status::ok();
  if (moves.front().act.device.is_host()) return host::move_heads(pack, moves);
  return cuda::move_heads(pack, moves, stream);
}

Status unpack_sum_replicas(const MessageLayout& msg, int c_begin, std::span<const int> head_begin,
                           const TensorView& act, Stream stream) {
  if (act.device.is_host()) return host::unpack_sum_replicas(msg, c_begin, head_begin, act);
  return cuda::unpack_sum_replicas(msg, c_begin, head_begin, act, stream);
}

Status unpack_lse(const MessageLayout& msg, std::span<const int> head_begin, const TensorView& lse,
                  Stream stream) {
  if (lse.device.is_host()) return host::unpack_lse(msg, head_begin, lse);
  return cuda::unpack_lse(msg, head_begin, lse, stream);
}

int fp8_row_exponent(double amax) {
  if (!(amax > 0.0) || std::isinf(amax)) return 0;
  int e = 0;
  const double m = std::frexp(amax, &e);  // amax = m 2^e, m in [0.5, 1); 448 = 0.875 2^9
  const int k = m <= 0.875 ? e - 9 : e - 8;
  return std::clamp(k, -127, 127);
}

Status pack_heads_fp8(const TensorView& act, std::span<const int> head_begin, int heads,
                      const Fp8MessageLayout& msg, int c_begin, Stream stream) {
  if (act.device.is_host()) return host::pack_heads_fp8(act, head_begin, heads, msg, c_begin);
  return cuda::pack_heads_fp8(act, head_begin, heads, msg, c_begin, stream);
}

Status dequantize_fp8(const Fp8MessageLayout& src, const MessageLayout& dst, Device device,
                      Stream stream) {
  if (device.is_host()) return host::dequantize_fp8(src, dst);
  return cuda::dequantize_fp8(src, dst, stream);
}

}  // namespace ulysses::kernels
