// Attention work by rank, and an order of a packed batch's sequences that evens it out
// (sharding.h: attention_pairs_by_rank(), balance_packed_sequences()).
//
// The work of a query row is the number of keys its mask leaves visible inside its own sequence;
// pairs_before() sums it over a sequence's first n rows in closed form, so a rank's work is a few
// operations per token range and a candidate order is scored in O(sequences + chunks).
#include <algorithm>
#include <numeric>
#include <random>

#include "common/check.h"
#include "parallel/head_routing.h"
#include "ulysses/sharding.h"

namespace ulysses {

using detail::arg_error;
using detail::str_cat;

namespace {

// Visible (query, key) pairs of rows [0, n) of an l-token sequence: query i sees keys
// [lo(i), hi(i)], lo(i) = max(0, i - window_left), hi(i) = i (causal) or min(l - 1, i +
// window_right). Every term stays below n * l <= 2^62.
std::int64_t pairs_before(const AttentionConfig& a, std::int64_t l, std::int64_t n) {
  if (n <= 0) return 0;
  std::int64_t hi = 0;  // sum of hi(i)
  if (a.causal) {
    hi = n * (n - 1) / 2;
  } else if (a.window_right >= 0) {
    const std::int64_t k = std::clamp<std::int64_t>(l - 1 - a.window_right, 0, n);  // i + w < l
    hi = k * (k - 1) / 2 + k * a.window_right + (n - k) * (l - 1);
  } else {
    hi = n * (l - 1);
  }
  std::int64_t lo = 0;  // sum of lo(i)
  if (a.window_left >= 0) {
    const std::int64_t t = std::max<std::int64_t>(0, n - 1 - a.window_left);
    lo = t * (t + 1) / 2;
  }
  return hi - lo + n;
}

// Sequences as laid out on the global rows: sequence s at [start[s], start[s] + len[s]).
struct Layout1D {
  std::vector<std::int64_t> start, len;
};

// Pairs of the query rows in [b, e) (global rows; rows outside every sequence are padding).
std::int64_t range_pairs(const AttentionConfig& a, const Layout1D& seqs, std::int64_t b,
                         std::int64_t e) {
  std::int64_t sum = 0;
  auto it = std::upper_bound(seqs.start.begin(), seqs.start.end(), b);
  std::size_t s =
      it == seqs.start.begin() ? 0 : static_cast<std::size_t>(it - seqs.start.begin()) - 1;
  for (; s < seqs.start.size() && seqs.start[s] < e; ++s) {
    const std::int64_t l = seqs.len[s];
    const std::int64_t lo = std::clamp<std::int64_t>(b - seqs.start[s], 0, l);
    const std::int64_t hi = std::clamp<std::int64_t>(e - seqs.start[s], 0, l);
    sum += pairs_before(a, l, hi) - pairs_before(a, l, lo);
  }
  return sum;
}

// A candidate order's score: the largest ring index's pairs, then the sum of squares (towards
// even ranks when the largest ties).
struct Score {
  std::int64_t max = 0;
  long double squares = 0;
  bool operator<(const Score& o) const { return max != o.max ? max < o.max : squares < o.squares; }
};

// Scores orders of the packed stream cut into 2R zigzag chunks of `chunk` rows (ring index j
// holds chunks j and 2R - 1 - j).
class StreamScorer {
 public:
  StreamScorer(const AttentionConfig& a, std::span<const std::int32_t> cu, int R,
               std::int64_t chunk)
      : a_(a), R_(R), chunk_(chunk), chunks_(static_cast<std::size_t>(2 * R)) {
    for (std::size_t s = 0; s + 1 < cu.size(); ++s) len_.push_back(cu[s + 1] - cu[s]);
  }

  Score operator()(const std::vector<std::int32_t>& order) {
    std::fill(chunks_.begin(), chunks_.end(), 0);
    std::int64_t pos = 0;
    for (const std::int32_t s : order) {
      const std::int64_t l = len_[static_cast<std::size_t>(s)];
      for (std::int64_t i = 0; i < l;) {  // the sequence's rows, chunk by chunk
        const std::int64_t c = (pos + i) / chunk_;
        const std::int64_t end = std::min(l, (c + 1) * chunk_ - pos);
        chunks_[static_cast<std::size_t>(c)] += pairs_before(a_, l, end) - pairs_before(a_, l, i);
        i = end;
      }
      pos += l;
    }
    Score sc;
    for (int j = 0; j < R_; ++j) {
      const std::int64_t w =
          chunks_[static_cast<std::size_t>(j)] + chunks_[static_cast<std::size_t>(2 * R_ - 1 - j)];
      sc.max = std::max(sc.max, w);
      sc.squares += static_cast<long double>(w) * static_cast<long double>(w);
    }
    return sc;
  }

  std::size_t size() const { return len_.size(); }

 private:
  const AttentionConfig& a_;
  int R_;
  std::int64_t chunk_;
  std::vector<std::int64_t> len_;
  std::vector<std::int64_t> chunks_;
};

// Every order (n <= kExhaustive), else local search: random swaps and moves of one sequence,
// kept when the score does not get worse, from the given order and from kStarts - 1 shuffles.
// The random draws are mt19937_64's (specified by the standard), so every rank finds the same.
constexpr std::size_t kExhaustive = 8;
constexpr int kStarts = 8;
constexpr std::int64_t kScoredRows = 10'000'000;  // search effort: orders scored x their size

// Moves v[from] to position `to`, the entries between shifting by one (undone by the reverse move).
void move_entry(std::vector<std::int32_t>& v, std::size_t from, std::size_t to) {
  const auto at = [&](std::size_t k) { return v.begin() + static_cast<std::ptrdiff_t>(k); };
  if (from < to) {
    std::rotate(at(from), at(from + 1), at(to + 1));
  } else {
    std::rotate(at(to), at(from), at(from + 1));
  }
}

std::vector<std::int32_t> best_order(StreamScorer& score, int R) {
  const std::size_t n = score.size();
  std::vector<std::int32_t> given(n);
  std::iota(given.begin(), given.end(), 0);
  std::vector<std::int32_t> best = given;
  Score best_score = score(given);
  if (n <= kExhaustive) {
    std::vector<std::int32_t> p = given;
    while (std::next_permutation(p.begin(), p.end())) {
      const Score sc = score(p);
      if (sc < best_score) best = p, best_score = sc;
    }
    return best;
  }
  const std::int64_t per_order = static_cast<std::int64_t>(n) + 2 * R;
  const std::int64_t steps =
      std::clamp<std::int64_t>(kScoredRows / per_order / kStarts, 100, 12'500);
  std::mt19937_64 rng(0x756c7973736573);  // "ulysses"
  const auto draw = [&](std::size_t k) { return static_cast<std::size_t>(rng() % k); };
  for (int start = 0; start < kStarts; ++start) {
    std::vector<std::int32_t> cur = given;
    for (std::size_t i = n - 1; start > 0 && i > 0; --i) std::swap(cur[i], cur[draw(i + 1)]);
    Score cur_score = score(cur);
    for (std::int64_t step = 0; step < steps; ++step) {
      const std::size_t i = draw(n), j = draw(n);
      if (i == j) continue;
      const bool swap = (rng() & 1) != 0;
      if (swap) {
        std::swap(cur[i], cur[j]);
      } else {
        move_entry(cur, i, j);
      }
      const Score sc = score(cur);
      if (!(cur_score < sc)) {
        cur_score = sc;
      } else if (swap) {  // undo
        std::swap(cur[i], cur[j]);
      } else {
        move_entry(cur, j, i);
      }
    }
    if (cur_score < best_score) best = cur, best_score = cur_score;
  }
  return best;
}

// Only the masks matter here: the rest of the config need not be filled in.
Status validate_masks(const AttentionConfig& attention) {
  AttentionConfig masks = attention;
  masks.num_heads_q = masks.num_heads_kv = masks.head_dim = 1;
  masks.softmax_scale.reset();
  return masks.validate();
}

}  // namespace

Result<std::vector<double>> attention_pairs_by_rank(const ParallelConfig& parallel,
                                                    const AttentionConfig& attention,
                                                    std::int64_t seqlen,
                                                    std::span<const std::int32_t> cu_seqlens) {
  constexpr std::string_view api = "ulysses::attention_pairs_by_rank";
  ULYSSES_RETURN_IF_ERROR(parallel.validate());
  ULYSSES_RETURN_IF_ERROR(validate_masks(attention));
  Layout1D seqs;
  if (cu_seqlens.empty()) {
    seqs = {{0}, {seqlen}};
  } else {
    ULYSSES_RETURN_IF_ERROR(validate_cu_seqlens(cu_seqlens, seqlen, api));
    ULYSSES_ASSIGN_OR_RETURN(auto offsets, packed_sequence_offsets(parallel, cu_seqlens));
    for (std::size_t s = 0; s + 1 < cu_seqlens.size(); ++s) {
      seqs.start.push_back(offsets[s]);
      seqs.len.push_back(cu_seqlens[s + 1] - cu_seqlens[s]);
    }
  }
  // Ranks that split heads (a Ulysses group of U) share their tokens' work as they share the query
  // heads: evenly, or, split unevenly (head_routing.h), by each rank's count of them.
  const int cp = parallel.cp, U = parallel.ulysses_size();
  std::vector<double> share(static_cast<std::size_t>(U), 1.0 / U);
  if (attention.num_heads_q > 0 && attention.num_heads_kv > 0 &&
      attention.num_heads_q % attention.num_heads_kv == 0) {
    if (auto routing = parallel::HeadRouting::create(attention, parallel, api); routing.is_ok()) {
      for (int u = 0; u < U; ++u) {
        share[static_cast<std::size_t>(u)] =
            static_cast<double>(routing->q_heads_of(u)) / attention.num_heads_q;
      }
    }
  }
  std::vector<double> out(static_cast<std::size_t>(cp));
  for (int group = 0; group < cp / U; ++group) {
    std::int64_t sum = 0;
    for (int u = 0; u < U; ++u) {
      ULYSSES_ASSIGN_OR_RETURN(auto ranges,
                               shard_token_ranges(parallel, seqlen, group * U + u, cu_seqlens));
      for (const TokenRange& r : ranges) sum += range_pairs(attention, seqs, r.begin, r.end);
    }
    for (int u = 0; u < U; ++u) {
      out[static_cast<std::size_t>(group * U + u)] =
          static_cast<double>(sum) * share[static_cast<std::size_t>(u)];
    }
  }
  return out;
}

Result<PackedOrder> balance_packed_sequences(const ParallelConfig& parallel,
                                             const AttentionConfig& attention, std::int64_t seqlen,
                                             std::span<const std::int32_t> cu_seqlens) {
  constexpr std::string_view api = "ulysses::balance_packed_sequences";
  ULYSSES_RETURN_IF_ERROR(parallel.validate());
  ULYSSES_RETURN_IF_ERROR(validate_masks(attention));
  if (cu_seqlens.empty()) return arg_error(api, "cu_seqlens", "is empty", 0, ">= 2 entries");
  ULYSSES_RETURN_IF_ERROR(validate_cu_seqlens(cu_seqlens, seqlen, api));
  // seqlen's multiple and the per-sequence padding fitting, as for the shards themselves.
  ULYSSES_RETURN_IF_ERROR(shard_token_ranges(parallel, seqlen, 0, cu_seqlens).status());
  PackedOrder out;
  out.order.resize(cu_seqlens.size() - 1);
  std::iota(out.order.begin(), out.order.end(), 0);
  const int R = parallel.ring_size();
  // Only the stream cut into zigzag chunks depends on the order: Ulysses splits heads, and
  // per-sequence sharding cuts each sequence on its own.
  if (parallel.strategy != Strategy::kUlysses && !parallel.packed_per_sequence() && R > 1 &&
      out.order.size() > 1) {
    StreamScorer score(attention, cu_seqlens, R, seqlen / (2 * R));
    out.order = best_order(score, R);
  }
  out.cu_seqlens.push_back(0);
  for (const std::int32_t s : out.order) {
    const auto i = static_cast<std::size_t>(s);
    out.cu_seqlens.push_back(out.cu_seqlens.back() + (cu_seqlens[i + 1] - cu_seqlens[i]));
  }
  return out;
}

}  // namespace ulysses
