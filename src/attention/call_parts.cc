#include "attention/call_parts.h"

#include <algorithm>

#include "common/check.h"

namespace ulysses::detail {

std::int64_t next_pow2(std::int64_t n) {
  std::int64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

std::int64_t packed_rows(std::int64_t longest) {
  return std::max<std::int64_t>(64, next_pow2(longest));
}

std::int64_t packed_slots(std::int64_t count, std::int64_t longest) {
  return next_pow2(count) * packed_rows(longest);
}

Result<std::vector<RaggedGroup>> ragged_groups(std::span<const std::int32_t> q_begin,
                                               std::span<const std::int32_t> q_len,
                                               std::span<const std::int32_t> kv_begin,
                                               std::span<const std::int32_t> kv_len, RaggedExtent q,
                                               RaggedExtent kv, std::int64_t limit,
                                               std::int64_t max_slots) {
  const std::size_t n = q_begin.size();
  if (q_len.size() != n || kv_begin.size() != n || kv_len.size() != n) {
    return internal_error("ulysses::detail::ragged_groups: row tables of different lengths");
  }
  // Rows [r0, r1) of one side, measured from r0.
  auto fits = [limit](std::int64_t r0, std::int64_t r1, RaggedExtent e) {
    return (r1 - 1 - r0) * e.row_stride + e.row_last < limit;
  };
  std::vector<RaggedGroup> groups;
  std::size_t i = 0;
  while (i < n || groups.empty()) {
    RaggedGroup g{.first = static_cast<int>(i)};
    bool any = false;
    std::int64_t q0 = 0, q1 = 0, k0 = 0, k1 = 0, longest = 0;
    for (; i < n; ++i) {
      // Every sequence counts towards the graph's batch, rows or not.
      const std::int64_t longer = std::max<std::int64_t>({longest, q_len[i], kv_len[i]});
      const std::int64_t count = static_cast<std::int64_t>(i) + 1 - g.first;
      if (max_slots > 0 && packed_slots(count, longer) > max_slots) {
        if (count > 1) break;
        return invalid_argument(str_cat("sequence ", i, " (", longer, " rows) spans ",
                                        packed_slots(1, longer),
                                        " graph rows alone, expected at most ", max_slots));
      }
      if (q_len[i] == 0 || kv_len[i] == 0) {  // given no rows: bounds nothing
        longest = longer;
        continue;
      }
      const std::int64_t qb = q_begin[i], qe = qb + q_len[i], kb = kv_begin[i], ke = kb + kv_len[i];
      const std::int64_t nq0 = any ? std::min(q0, qb) : qb, nq1 = any ? std::max(q1, qe) : qe;
      const std::int64_t nk0 = any ? std::min(k0, kb) : kb, nk1 = any ? std::max(k1, ke) : ke;
      if (!fits(nq0, nq1, q) || !fits(nk0, nk1, kv)) {
        if (any) break;
        return invalid_argument(str_cat("sequence ", i, " (query rows ", qb, "..", qe - 1,
                                        ", key rows ", kb, "..", ke - 1, ") spans ",
                                        std::max((qe - 1 - qb) * q.row_stride + q.row_last,
                                                 (ke - 1 - kb) * kv.row_stride + kv.row_last) +
                                            1,
                                        " elements from its first row, expected at most ", limit));
      }
      any = true;
      longest = longer;
      q0 = nq0, q1 = nq1, k0 = nk0, k1 = nk1;
    }
    g.last = static_cast<int>(i);
    g.q_row = q0;
    g.kv_row = k0;
    groups.push_back(g);
  }
  return groups;
}

Result<std::vector<DensePart>> dense_parts(std::int64_t batch, std::int64_t q_rows,
                                           std::int64_t kv_rows, std::int64_t hq, std::int64_t hkv,
                                           std::int64_t head_dim, bool views_fit,
                                           std::int64_t limit) {
  if (views_fit) return std::vector<DensePart>{{0, batch, 0, hkv}};
  const std::int64_t ratio = hq / hkv;
  // Elements of one batch entry's compact K, O or dO (the largest) for g KV heads.
  auto entry = [&](std::int64_t g) { return std::max(kv_rows, q_rows * ratio) * g * head_dim; };
  std::int64_t g = hkv;
  while (g > 0 && entry(g) > limit) --g;
  if (g == 0) {
    return invalid_argument(str_cat("one KV head of one batch entry holds ", entry(1),
                                    " elements of K, O or dO (", q_rows, " query rows x ", ratio,
                                    " query heads x ", head_dim, ", ", kv_rows,
                                    " key rows), expected at most ", limit));
  }
  const std::int64_t head_parts = (hkv + g - 1) / g, widest = (hkv + head_parts - 1) / head_parts;
  const std::int64_t nb = std::min(batch, limit / entry(widest));
  std::vector<DensePart> parts;
  for (std::int64_t b0 = 0; b0 < batch; b0 += nb) {
    for (std::int64_t i = 0, kv0 = 0; i < head_parts; ++i) {
      const std::int64_t n = hkv / head_parts + (i < hkv % head_parts ? 1 : 0);
      parts.push_back({b0, std::min(nb, batch - b0), kv0, n});
      kv0 += n;
    }
  }
  return parts;
}

}  // namespace ulysses::detail
