// The split-KV kernel (split_kv.h) on the host: loopback ranks and CPU tests run the plans that use
// it. Every dtype and width, FP64 arithmetic: each query row's scores, softmax and O over its
// slot's keys, O rounded once to the kernel's dtype, LSE to fp32.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/dtype_convert.h"
#include "kernels/split_kv.h"

namespace ulysses::kernels::host {

Status split_kv_attention(const SplitKvArgs& a) {
  using detail::load_as_double;
  const int g = a.heads_q / a.heads_kv;
  const double scale = a.scale;
  std::vector<double> scores, acc(static_cast<std::size_t>(a.head_dim_v));
  for (int s = 0; s < a.slots; ++s) {
    const std::int64_t first = a.table[s];
    const int kv_len = a.table[a.slots + s];
    const int b = a.table[2 * a.slots + s];
    const std::int64_t delta =
        static_cast<std::int64_t>(static_cast<std::uint32_t>(a.table[3 * a.slots + s])) |
        (static_cast<std::int64_t>(a.table[4 * a.slots + s]) << 32);
    const bool masked = s >= a.masked_from;
    const SlotOutput& out = masked ? a.edge : a.open;
    const std::int64_t slot = masked ? s - a.masked_from : s;
    auto cache_row = [&](std::int64_t j) -> std::int64_t {
      if (a.page_size == 0) return first + j;
      const std::int64_t r = first + j;
      return static_cast<std::int64_t>(a.pages[b * a.page_stride + r / a.page_size]) *
                 a.page_pitch +
             r % a.page_size;
    };
    scores.assign(static_cast<std::size_t>(kv_len), 0.0);
    for (int h = 0; h < a.heads_kv; ++h) {
      for (int t = 0; t < a.tokens; ++t) {
        for (int jj = 0; jj < g; ++jj) {
          const std::int64_t q0 = b * a.q_batch + t * a.q_token + (h * g + jj) * a.q_head;
          // Scores of the keys this row sees (-inf elsewhere), and their maximum.
          double mx = -std::numeric_limits<double>::infinity();
          for (int j = 0; j < kv_len; ++j) {
            const std::int64_t d = delta + t - j;
            const bool keep = !masked || ((a.window_right < 0 || d >= -a.window_right) &&
                                          (a.window_left < 0 || d <= a.window_left));
            double sc = -std::numeric_limits<double>::infinity();
            if (keep) {
              const std::int64_t k0 = cache_row(j) * a.k_row + h * a.k_head;
              sc = 0.0;
              for (int x = 0; x < a.head_dim; ++x) {
                sc += load_as_double(a.q, a.dtype, q0 + x) * load_as_double(a.k, a.dtype, k0 + x);
              }
              sc *= scale;
              mx = std::max(mx, sc);
            }
            scores[static_cast<std::size_t>(j)] = sc;
          }
          double sum = 0.0;
          acc.assign(acc.size(), 0.0);
          if (mx > -std::numeric_limits<double>::infinity()) {
            for (int j = 0; j < kv_len; ++j) {
              const double p = std::exp(scores[static_cast<std::size_t>(j)] - mx);
              if (p == 0.0) continue;
              sum += p;
              const std::int64_t v0 = cache_row(j) * a.v_row + h * a.v_head;
              for (int x = 0; x < a.head_dim_v; ++x) {
                acc[static_cast<std::size_t>(x)] += p * load_as_double(a.v, a.dtype, v0 + x);
              }
            }
          }
          const std::int64_t o0 =
              slot * out.o_slot + h * out.o_head + t * out.o_token + jj * out.o_row;
          for (int x = 0; x < a.head_dim_v; ++x) {
            detail::store_from_double(out.o, a.dtype, o0 + x,
                                      sum > 0.0 ? acc[static_cast<std::size_t>(x)] / sum : 0.0);
          }
          out.lse[slot * out.l_slot + h * out.l_head + t * out.l_token + jj * out.l_row] =
              sum > 0.0 ? static_cast<float>(mx + std::log(sum))
                        : -std::numeric_limits<float>::infinity();
        }
      }
    }
  }
  return Status::ok();
}

Status decode_slot_table(const DecodeSlotTableArgs& a) {
  // The device shares a sequence among a warp's lanes; here three lanes take turns, so that the
  // CPU tests cover that split of the work (the table is the same for any number).
  constexpr int kLanes = 3;
  for (int b = 0; b < a.batch; ++b) {
    for (int lane = 0; lane < kLanes; ++lane) write_decode_slots(a, b, lane, kLanes);
  }
  return Status::ok();
}

}  // namespace ulysses::kernels::host
