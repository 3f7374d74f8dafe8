// Host implementations of the pack/unpack operations (see layout.h). Copies are whole head_dim
// rows, memcpy'd, so data movement is bit-exact for every dtype.
#include <cmath>
#include <cstring>
#include <vector>

#include "common/check.h"
#include "common/dtype_convert.h"
#include "kernels/layout.h"

namespace ulysses::kernels::host {
namespace {

char* msg_row(const MessageLayout& m, int p, std::int64_t s, std::int64_t b, int c) {
  const std::int64_t row =
      ((static_cast<std::int64_t>(p) * m.seq_per_peer + s) * m.batch + b) * m.channels + c;
  return static_cast<char*>(m.data) +
         row * m.head_dim * static_cast<std::int64_t>(dtype_size(m.dtype));
}

char* act_row(const TensorView& t, std::int64_t b, std::int64_t s, std::int64_t h) {
  return static_cast<char*>(t.data) +
         t.offset({b, s, h, 0}) * static_cast<std::int64_t>(dtype_size(t.dtype));
}

// Channels one head of `act` spans (see MessageLayout), 0 if its head_dim is not a multiple of the
// message's.
std::int64_t head_channels(const TensorView& act, const MessageLayout& m) {
  return act.ndim == 4 && m.head_dim > 0 && act.size(3) % m.head_dim == 0 ? act.size(3) / m.head_dim
                                                                          : 0;
}

Status check_geometry(const TensorView& act, std::span<const int> head_begin, int heads,
                      const MessageLayout& m, int c_begin, std::string_view api) {
  const std::int64_t k = head_channels(act, m);
  if (act.ndim != 4 || act.size(0) != m.batch || act.size(1) != m.seq_per_peer || k == 0 ||
      (act.size(3) > 1 && act.stride(3) != 1)) {
    return internal_error(
        detail::str_cat(api, ": activation ", act.to_string(), " does not fit the message layout"));
  }
  if (static_cast<int>(head_begin.size()) != m.peers || c_begin < 0 ||
      c_begin + heads * k > m.channels) {
    return internal_error(detail::str_cat(api, ": head routing does not fit the message layout"));
  }
  for (int hb : head_begin) {
    if (hb < 0 || hb + heads > act.size(2)) {
      return internal_error(detail::str_cat(api, ": head_begin ", hb, " out of range"));
    }
  }
  return Status::ok();
}

}  // namespace

Status pack_heads(const TensorView& act, std::span<const int> head_begin, int heads,
                  const MessageLayout& msg, int c_begin) {
  ULYSSES_RETURN_IF_ERROR(check_geometry(act, head_begin, heads, msg, c_begin, "pack_heads"));
  if (act.dtype != msg.dtype) return internal_error("pack_heads: dtype mismatch");
  const std::int64_t k = head_channels(act, msg);
  const std::size_t row_bytes = static_cast<std::size_t>(act.size(3)) * dtype_size(msg.dtype);
  for (int p = 0; p < msg.peers; ++p) {
    for (std::int64_t s = 0; s < msg.seq_per_peer; ++s) {
      for (std::int64_t b = 0; b < msg.batch; ++b) {
        for (int h = 0; h < heads; ++h) {
          std::memcpy(msg_row(msg, p, s, b, static_cast<int>(c_begin + h * k)),
                      act_row(act, b, s, head_begin[static_cast<std::size_t>(p)] + h), row_bytes);
        }
      }
    }
  }
  return Status::ok();
}

Status unpack_heads(const MessageLayout& msg, int c_begin, std::span<const int> head_begin,
                    int heads, const TensorView& act) {
  ULYSSES_RETURN_IF_ERROR(check_geometry(act, head_begin, heads, msg, c_begin, "unpack_heads"));
  if (act.dtype != msg.dtype) return internal_error("unpack_heads: dtype mismatch");
  const std::int64_t k = head_channels(act, msg);
  const std::size_t row_bytes = static_cast<std::size_t>(act.size(3)) * dtype_size(msg.dtype);
  for (int p = 0; p < msg.peers; ++p) {
    for (std::int64_t s = 0; s < msg.seq_per_peer; ++s) {
      for (std::int64_t b = 0; b < msg.batch; ++b) {
        for (int h = 0; h < heads; ++h) {
          std::memcpy(act_row(act, b, s, head_begin[static_cast<std::size_t>(p)] + h),
                      msg_row(msg, p, s, b, static_cast<int>(c_begin + h * k)), row_bytes);
        }
      }
    }
  }
  return Status::ok();
}

Status move_heads(bool pack, std::span<const HeadMove> moves) {
  for (const HeadMove& m : moves) {
    ULYSSES_RETURN_IF_ERROR(pack ? pack_heads(m.act, m.head_begin, m.heads, m.msg, m.c_begin)
                                 : unpack_heads(m.msg, m.c_begin, m.head_begin, m.heads, m.act));
  }
  return Status::ok();
}

namespace {
// unpack_sum_replicas in the message's own precision (Acc: float for fp32 partials, double for the
// fp64 partials of fp64 plans).
template <typename Acc>
void sum_replicas(const MessageLayout& msg, int c_begin, std::span<const int> head_begin,
                  const TensorView& act) {
  const std::int64_t D = act.size(3);  // (head_channels() channels from c_begin on)
  std::vector<Acc> acc(static_cast<std::size_t>(D));
  for (std::int64_t g = 0; g < act.size(2); ++g) {
    for (std::int64_t s = 0; s < msg.seq_per_peer; ++s) {
      for (std::int64_t b = 0; b < msg.batch; ++b) {
        std::fill(acc.begin(), acc.end(), Acc{0});
        for (int p = 0; p < msg.peers; ++p) {  // peer order: deterministic
          if (head_begin[static_cast<std::size_t>(p)] != g) continue;
          const auto* part = reinterpret_cast<const Acc*>(msg_row(msg, p, s, b, c_begin));
          for (std::int64_t d = 0; d < D; ++d) acc[static_cast<std::size_t>(d)] += part[d];
        }
        const std::int64_t base = act.offset({b, s, g, 0});
        for (std::int64_t d = 0; d < D; ++d) {
          detail::store_from_double(act.data, act.dtype, base + d,
                                    static_cast<double>(acc[static_cast<std::size_t>(d)]));
        }
      }
    }
  }
}
}  // namespace

Status unpack_sum_replicas(const MessageLayout& msg, int c_begin, std::span<const int> head_begin,
                           const TensorView& act) {
  ULYSSES_RETURN_IF_ERROR(check_geometry(act, head_begin, 1, msg, c_begin, "unpack_sum_replicas"));
  if (msg.dtype == DType::kFloat32) {
    sum_replicas<float>(msg, c_begin, head_begin, act);
  } else if (msg.dtype == DType::kFloat64) {
    sum_replicas<double>(msg, c_begin, head_begin, act);
  } else {
    return internal_error("unpack_sum_replicas: msg must be fp32 or fp64");
  }
  return Status::ok();
}

Status unpack_lse(const MessageLayout& msg, std::span<const int> head_begin,
                  const TensorView& lse) {
  if (lse.ndim != 3 || lse.size(0) != msg.batch || lse.size(2) != msg.seq_per_peer ||
      msg.dtype != DType::kFloat32 || lse.dtype != DType::kFloat32 ||
      static_cast<int>(head_begin.size()) != msg.peers) {
    return internal_error("unpack_lse: geometry mismatch");
  }
  const auto* src = static_cast<const float*>(msg.data);
  auto* dst = static_cast<float*>(lse.data);
  for (int p = 0; p < msg.peers; ++p) {
    for (std::int64_t s = 0; s < msg.seq_per_peer; ++s) {
      for (std::int64_t b = 0; b < msg.batch; ++b) {
        for (int h = 0; h < msg.channels; ++h) {
          const std::int64_t i =
              ((static_cast<std::int64_t>(p) * msg.seq_per_peer + s) * msg.batch + b) *
                  msg.channels +
              h;
          dst[lse.offset({b, head_begin[static_cast<std::size_t>(p)] + h, s})] = src[i];
        }
      }
    }
  }
  return Status::ok();
}

Status pack_heads_fp8(const TensorView& act, std::span<const int> head_begin, int heads,
                      const Fp8MessageLayout& msg, int c_begin) {
  const MessageLayout geometry{nullptr,   act.dtype,    msg.peers,   msg.seq_per_peer,
                               msg.batch, msg.channels, msg.head_dim};
  ULYSSES_RETURN_IF_ERROR(
      check_geometry(act, head_begin, heads, geometry, c_begin, "pack_heads_fp8"));
  // A head spans k channels (rows of D values), each scaled on its own.
  const std::int64_t D = msg.head_dim, rows = msg.rows_per_peer(), k = act.size(3) / D;
  std::vector<double> x(static_cast<std::size_t>(D));
  for (int p = 0; p < msg.peers; ++p) {
    auto* codes = static_cast<std::uint8_t*>(msg.data) + p * msg.peer_bytes();
    std::uint8_t* exponents = codes + rows * D;
    for (std::int64_t s = 0; s < msg.seq_per_peer; ++s) {
      for (std::int64_t b = 0; b < msg.batch; ++b) {
        for (std::int64_t hj = 0; hj < heads * k; ++hj) {  // head hj / k, its channel hj % k
          const std::int64_t base =
              act.offset({b, s, head_begin[static_cast<std::size_t>(p)] + hj / k, 0}) +
              (hj % k) * D;
          double amax = 0.0;
          for (std::int64_t d = 0; d < D; ++d) {
            x[static_cast<std::size_t>(d)] = detail::load_as_double(act.data, act.dtype, base + d);
            const double a = std::fabs(x[static_cast<std::size_t>(d)]);
            if (a > amax) amax = a;  // NaN never compares greater
          }
          const int e = fp8_row_exponent(amax);
          const std::int64_t row = (s * msg.batch + b) * msg.channels + c_begin + hj;
          for (std::int64_t d = 0; d < D; ++d) {
            codes[row * D + d] =
                detail::double_to_fp8e4m3_bits(std::ldexp(x[static_cast<std::size_t>(d)], -e));
          }
          exponents[row] = static_cast<std::uint8_t>(e + 127);
        }
      }
    }
  }
  return Status::ok();
}

Status dequantize_fp8(const Fp8MessageLayout& src, const MessageLayout& dst) {
  if (dst.peers != src.peers || dst.seq_per_peer != src.seq_per_peer || dst.batch != src.batch ||
      dst.channels != src.channels || dst.head_dim != src.head_dim) {
    return internal_error("dequantize_fp8: geometry mismatch");
  }
  const std::int64_t D = src.head_dim, rows = src.rows_per_peer();
  for (int p = 0; p < src.peers; ++p) {
    const auto* codes = static_cast<const std::uint8_t*>(src.data) + p * src.peer_bytes();
    const std::uint8_t* exponents = codes + rows * D;
    for (std::int64_t r = 0; r < rows; ++r) {
      const int k = static_cast<int>(exponents[r]) - 127;
      const std::int64_t out = (p * rows + r) * D;
      for (std::int64_t d = 0; d < D; ++d) {
        detail::store_from_double(dst.data, dst.dtype, out + d,
                                  std::ldexp(detail::fp8e4m3_bits_to_double(codes[r * D + d]), k));
      }
    }
  }
  return Status::ok();
}

}  // namespace ulysses::kernels::host
