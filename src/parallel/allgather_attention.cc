// All-gather context parallelism (Strategy::kAllGather): every rank keeps all heads of its zigzag
// shard, gathers the K/V rows its queries can see, and runs the kernel on its own queries against
// them. Forward and backward.
//
// Legend: P = cp ranks, S global tokens in 2P zigzag chunks of c = S / (2P) rows; rank j holds
// chunks j and J = 2P-1-j (shard rows [0, c) and [c, 2c)). H: all query heads, G: all KV heads.
//
//   k [B, 2c, G, D], v [B, 2c, G, Dv] (this rank's two chunks; Dv = head_dim_v, D unless MLA)
//      | pack into kv_all at the chunks' global rows, then one grouped exchange: chunk x goes to
//      | every rank whose queries see some key of x (needs(): causal rank j needs chunks
//      | 0..2P-1-j, a window fewer), nowhere else
//      v
//   kv_all [rows][B][G D + G Dv]   the chunks this rank sees, in global order (the others take
//      |                           no room), so the keys of any call are one strided view; rows
//      |                           travel as channels of gcd(D, Dv) (one K|V row of two widths)
//      | per query chunk one kernel call: q rows of the chunk x keys [k_lo, k_hi), the chunk's
//      | whole visible range (masks in global positions through the call's diagonal offset); calls
//      | without masks, P = 1, and small adjacent chunks (rank P-1) take both chunks at once
//      v
//   o [B, 2c, H, Dv] written in place, lse [B, H, 2c]   (sinks inside the kernel: it sees all keys)
//
// Backward: the same calls on (q, k, v, o, lse, dO), a causal one whose keys start before its
// queries split in two (split_parts()); dQ is complete per call and written in place (a split
// call's parts sum it in fp32 first); dK/dV are partial sums over this rank's queries, kept in fp32
// rows of dkv_all (laid out as kv_all).
// Each chunk's partials go back to the chunk's owner (the exchange of forward, reversed), which
// adds them to its own in rank order and rounds once into dk, dv. dSinks: each call's entries,
// summed on the rank, then over ranks (packed: from O, dO and the LSE of the rank's rows,
// kernels::sink_grad, with the kernel's backward run without sinks).
//
// Packed documents (thd), as Llama 3 does it: the packed stream is sharded like one sequence (the
// zigzag chunks above cut documents wherever a chunk boundary falls; cu_seqlens are offsets in it,
// no padding between documents), K/V are gathered as above, and each call covers the documents its
// query rows meet: one VarlenRows entry per document piece, its keys from the document's start (or
// the window's) to where its queries end, the mask aligned at that bottom-right corner
// (LocalProblem::bottom_right: the piece starts a different number of keys into each document;
// only calls whose keys start before their queries need it, see call_problem()).
// Backward's split parts need no per-document offset (keys before the chunk: unmasked, or with a
// window a band whose offset is the window; the chunk's own rows: causal from 0; see Table).
// Everything else is the dense plan's. A window without causal (keys after a row too) has no one
// alignment for all pieces: forward runs each chunk's rows in three classes, one call each, and
// merges them (row_parts()); backward runs the square of the chunk's rows plus the keys before and
// after it (window_parts(), dense too).
//
// Versus Ulysses: no head constraint (any H, G, P), the kernel runs on all heads of 1/P of the
// queries, and the bytes moved per rank are K/V rows (2G of H + 2G channels): fewer when G << H
// and P is small (P = 2, H = 32, G = 8: 16 MiB in, 32 MiB of fp32 partials out per 8k tokens,
// against Ulysses' 80 MiB), more at large P. Payload::kFp8: the K/V chunks travel as FP8 rows
// (gather_kv()), about half the bytes in; the partials go back in fp32. `saved` (kHeadSharded)
// keeps kv_all and copies of q and o, so backward gathers nothing; kLseOnly keeps only the LSE and
// gathers K/V again.
#include <algorithm>
#include <array>
#include <numeric>
#include <vector>

#include "common/check.h"
#include "kernels/layout.h"
#include "kernels/merge.h"
#include "parallel/plan_common.h"
#include "parallel/plans.h"

namespace ulysses::parallel {

using detail::str_cat;

namespace {

// One kernel call: shard rows [q_row, q_row + q_rows) (global rows from q_global) against global
// key rows [k_lo, k_hi).
struct Call {
  std::int64_t q_row = 0, q_rows = 0, q_global = 0, k_lo = 0, k_hi = 0;
  bool masked = false;
  int part = -1;        // backward: index among the parts of a split call (-1: not split)
  bool packed = false;  // thd: the rows hold documents (VarlenRows), masks per document
  // Packed: which document pieces its table holds (packed_tables()): kWhole, or one part of a
  // split backward call.
  int table = 0;
  std::int64_t packed_offset = 0;  // packed: the diagonal offset of every piece (top-left)
  std::int64_t diagonal_offset() const { return packed ? packed_offset : q_global - k_lo; }
};

// Packed tables (Call::table). A call whose keys start before its queries (q_global = g) splits
// in backward into the chunk's own rows and the keys before it; only the document that crosses g
// has keys before it. With window w that document's rows see
//   kBefore  all of its keys before g, for rows whose window reaches its first key (unmasked), and
//   kBand    keys [row - w, g), for the later rows (masked: top-left with diagonal offset w,
//            since each such piece starts its keys w rows before its first query),
// so no piece needs an offset that depends on where the document starts.
// Windows without causal (a row also sees keys after it) add two mirrored tables for backward's
// keys after the chunk, and three for forward (see row_parts()).
enum Table : int {
  kWhole = 0,
  kBefore = 1,
  kOwn = 2,
  kBand = 3,
  kAfter = 4,      // keys after the chunk, rows whose window reaches the document's last key
  kAfterBand = 5,  // keys [g1, row + wr] after the chunk for the other rows (bottom-right)
  kRowsBand = 6,   // forward, rows whose window starts after the document's first key
  kRowsLeft = 7,   // forward, rows that see the document's first key but not its last
  kRowsOpen = 8,   // forward, rows that see the whole document
  kTables = 9
};

// The key rows [lo, hi) that query rows [q0, q1) can see (global positions).
std::pair<std::int64_t, std::int64_t> key_range(const AttentionConfig& a, std::int64_t S,
                                                std::int64_t q0, std::int64_t q1) {
  const std::int64_t lo = a.window_left >= 0 ? std::max<std::int64_t>(0, q0 - a.window_left) : 0;
  std::int64_t hi = S;
  if (a.causal) {
    hi = q1;
  } else if (a.window_right >= 0) {
    hi = std::min(S, q1 + a.window_right);
  }
  return {lo, hi};
}

bool has_mask(const AttentionConfig& a) {
  return a.causal || a.window_left >= 0 || a.window_right >= 0;
}

// Rank P - 1's chunks are adjacent. One call of both (2c query rows) saves a call's fixed costs,
// but needs twice the kernel workspace of the other ranks' calls of c rows (cuDNN's fp32 dQ
// accumulator) and twice the fp32 dQ rows of its backward parts, so at cp = 2 that rank set the
// step's peak memory. So one call only while batch x c x num_heads_q is at most this (8k tokens at
// cp = 2 with 32 heads is half of it: there one call kept rank 1's kernels at 2.19 ms against
// 2.35 as two), two calls beyond (32k: as fast; 128k: rank 1's workspace + saved 6.52 -> 5.52 GiB
// against rank 0's 6.27; docs/PERF.md, "All-gather").
constexpr std::int64_t kAdjacentInOneCall = std::int64_t{1} << 17;

// The kernel calls of zigzag rank j (see the file comment).
std::vector<Call> calls_of(const AttentionConfig& a, int P, int j, std::int64_t c, bool packed,
                           std::int64_t batch) {
  const std::int64_t S = 2 * P * c;
  const int J = 2 * P - 1 - j;
  const bool masked = has_mask(a);
  // Both chunks in one call when (dense) nothing is masked, when they are the whole sequence
  // (P = 1), or when they are adjacent and small (kAdjacentInOneCall); packed documents need each
  // call's query rows to be one run of the stream.
  const bool small = batch * c * a.num_heads_q <= kAdjacentInOneCall;
  if ((!masked && !packed) || P == 1 || (J == j + 1 && small)) {
    const std::int64_t q0 = masked || packed ? j * c : 0;
    const auto [lo, hi] = key_range(a, S, j * c, (J + 1) * c);
    return {{0, 2 * c, q0, lo, hi, masked, -1, packed}};
  }
  std::vector<Call> out;
  for (int qi = 0; qi < 2; ++qi) {
    const std::int64_t q0 = (qi == 0 ? j : J) * c;
    const auto [lo, hi] = key_range(a, S, q0, q0 + c);
    out.push_back({qi * c, c, q0, lo, hi, masked, -1, packed});
  }
  return out;
}

// Backward of one call. A causal call whose keys start before its queries runs as two: the keys
// before the queries and the square of the queries' own rows (causal, no offset). cuDNN's backward
// computes the tiles past the diagonal of such a rectangle and masks them (measured on H200, cuDNN
// 9.19: q 64k x kv 96k took 436 ms, its two parts 139 + 140 ms; with a 128-key window, q 16k x kv
// 16.5k took 21.6 ms, the window without the offset 0.62 ms per 8k rows), while its forward
// skips them (95 ms, as fast as the parts). Without a window every row sees every key before it
// (no mask; the part comes first). With window_left w only rows i < w see keys before the chunk,
// the last w - i of them: that part keeps the mask (diagonal offset), covers rows [0, min(c, w))
// so that each of its rows sees a key, and comes second, adding its dQ into the square's, which
// covers every row (and gives dSinks). Packed with a window, the keys before the chunk are two
// parts over the same rows (kBefore unmasked, kBand masked; see Table), after the square.
// Dense, when the keys before the chunk are fewer than those rows (K = q_global - k_lo < w near
// the sequence's start, with both chunks in one call), the part splits again: rows i < w - K see
// all K keys (unmasked), rows from w - K on a suffix of them (masked, at most K rows, diagonal
// offset w: cuDNN's left bound w + 1 - offset stays >= 1). A windowed call with more query than
// key rows is one cuDNN refuses ("sliding window ... max_s_q <= max_s_kv" without a padding
// mask).
std::vector<Call> window_parts(const AttentionConfig& a, const Call& call);

std::vector<Call> split_parts(const AttentionConfig& a, const Call& call) {
  if (call.masked && !a.causal) return window_parts(a, call);
  if (!call.masked || !a.causal || call.q_global - call.k_lo <= 0) return {call};
  const std::int64_t keys = call.q_global - call.k_lo;
  Call before = call, square = call;
  before.k_hi = call.q_global;
  before.table = kBefore;
  square.k_lo = call.q_global;
  square.table = kOwn;
  if (a.window_left < 0) {
    before.masked = false;
    before.part = 0;
    square.part = 1;
    return {before, square};
  }
  before.q_rows = std::min<std::int64_t>(call.q_rows, a.window_left);
  square.part = 0;
  before.part = 1;
  if (!call.packed && before.q_rows <= keys) return {square, before};
  if (!call.packed) {
    Call all = before, suffix = before;
    all.masked = false;
    // >= 1 rows: keys < before.q_rows <= w here.
    all.q_rows = std::min<std::int64_t>(before.q_rows, a.window_left - keys);
    if (all.q_rows == before.q_rows) return {square, all};
    suffix.q_row += all.q_rows;
    suffix.q_global += all.q_rows;
    suffix.q_rows -= all.q_rows;
    suffix.part = 2;
    return {square, all, suffix};
  }
  Call band = before;
  before.masked = false;
  band.table = kBand;
  band.packed_offset = a.window_left;
  band.part = 2;
  return {square, before, band};
}

// Backward of a call under a window without causal (its rows see keys on both sides): the square
// of its own rows (the window at offset 0, every row: part 0, dSinks), then the keys before the
// chunk and the keys after it, each only for the rows whose window reaches them. cuDNN 9.19's
// backward under such a window computes every tile at any offset (measured: the 16k square at
// offset 0 as slow as the rectangle with its offset); the square at offset 0 with as many key as
// query rows is what the backend runs as causal bands (detail::causal_bands()), which it skips
// tiles for, and the parts before and after are at most a window of rows. Keys before, window_left
// w: the first min(rows, w) rows, as split_parts() does for causal (dense: an unmasked part for the
// rows that see all of them when they are fewer than w; packed: kBefore and kBand). No window_left:
// every row sees every key before it (one unmasked part). Keys after, window_right w: the last n =
// min(rows, w) rows see keys [g1, row + w]: dense, a masked part at diagonal offset -n (cuDNN's
// right bound w - n >= 0) and an unmasked one for the rows whose window reaches past the last key;
// packed, kAfter (unmasked: rows that see the document's last key) and kAfterBand (the band,
// bottom-right, see call_problem()). No window_right: one unmasked part.
std::vector<Call> window_parts(const AttentionConfig& a, const Call& call) {
  const std::int64_t g0 = call.q_global, g1 = g0 + call.q_rows;
  std::vector<Call> out;
  Call square = call;
  square.k_lo = g0;
  square.k_hi = g1;
  square.table = kOwn;
  out.push_back(square);
  auto add = [&](Call part, int table, bool masked) {
    part.table = table;
    part.masked = masked;
    part.packed_offset = table == kBand ? a.window_left : 0;
    out.push_back(part);
  };
  // Rows [g0 + r0, g0 + r1) of the call against keys [k_lo, k_hi).
  auto rows = [&](std::int64_t r0, std::int64_t r1, std::int64_t k_lo, std::int64_t k_hi) {
    Call part = call;
    part.q_row += r0;
    part.q_global += r0;
    part.q_rows = r1 - r0;
    part.k_lo = k_lo;
    part.k_hi = k_hi;
    return part;
  };
  if (call.k_lo < g0) {
    const std::int64_t keys = g0 - call.k_lo, w = a.window_left;
    if (w < 0) {
      add(rows(0, call.q_rows, call.k_lo, g0), kBefore, false);
    } else {
      // Rows [g0, g0 + n) see keys before g0; those below w - keys see all of them.
      const std::int64_t n = std::min(call.q_rows, w),
                         all = std::clamp(w - keys, std::int64_t{0}, n);
      if (call.packed) {
        add(rows(0, n, call.k_lo, g0), kBefore, false);
        add(rows(0, n, call.k_lo, g0), kBand, true);
      } else {
        if (all > 0) add(rows(0, all, call.k_lo, g0), kWhole, false);
        if (all < n) add(rows(all, n, call.k_lo, g0), kWhole, true);
      }
    }
  }
  if (call.k_hi > g1) {
    const std::int64_t keys = call.k_hi - g1, w = a.window_right;
    if (w < 0) {
      add(rows(0, call.q_rows, g1, call.k_hi), kAfter, false);
    } else {
      // Rows [g1 - n, g1) see keys after g1; those from g1 - 1 + keys - w on see all of them.
      const std::int64_t n = std::min(call.q_rows, w);
      const std::int64_t all = std::clamp(w + 1 - keys, std::int64_t{0}, n);
      if (call.packed) {
        add(rows(call.q_rows - n, call.q_rows, g1, call.k_hi), kAfter, false);
        add(rows(call.q_rows - n, call.q_rows, g1, call.k_hi), kAfterBand, true);
      } else {
        if (all < n) add(rows(call.q_rows - n, call.q_rows - all, g1, call.k_hi), kWhole, true);
        if (all > 0) add(rows(call.q_rows - all, call.q_rows, g1, call.k_hi), kWhole, false);
      }
    }
  }
  if (out.size() == 1) return out;  // the square (packed: kOwn's keys end with the chunk)
  for (std::size_t i = 0; i < out.size(); ++i) out[i].part = static_cast<int>(i);
  return out;
}

// Forward of a packed call under a window without causal. Each document piece's keys would start
// and end at distances from its queries that differ between documents (the window cut by the
// document's ends), which no single alignment expresses; but each row falls in one of three
// classes whose pieces share one (rows i of document [d0, d1), windows wl, wr):
//   kRowsBand  i > d0 + wl: keys [i - wl, min(d1, i + wr + 1)), top-left at offset wl;
//   kRowsLeft  i <= d0 + wl, i + wr < d1 - 1: keys [d0, i + wr], bottom-right, right bound 0;
//   kRowsOpen  the rest: every key of the document, unmasked.
// One call per class (a class no window can make is left out), each over all of the chunk's rows:
// the first writes O and the LSE, the others are staged and merged in (each row's keys are all in
// its class's call, so the merge copies: a row another call left at LSE -inf takes the staged
// one, bit for bit).
std::vector<Call> row_parts(const AttentionConfig& a, const Call& call) {
  if (!call.packed || !call.masked || a.causal) return {call};
  std::vector<Call> out;
  auto add = [&](int table, bool masked) {
    Call part = call;
    part.table = table;
    part.masked = masked;
    part.packed_offset = table == kRowsBand ? a.window_left : 0;
    part.part = static_cast<int>(out.size());
    out.push_back(part);
  };
  if (a.window_left >= 0) add(kRowsBand, true);
  if (a.window_right >= 0) add(kRowsLeft, true);
  add(kRowsOpen, false);
  return out;
}

// Whether rank r's queries see some key of chunk x.
bool needs(const AttentionConfig& a, int P, int r, int x, std::int64_t c, bool packed) {
  // (Which calls a rank's chunks make does not change the keys they see: batch 1 will do.)
  for (const Call& call : calls_of(a, P, r, c, packed, 1)) {
    if (call.k_lo < (x + 1) * c && x * c < call.k_hi) return true;
  }
  return false;
}

class AllGatherAttention final : public DistributedAttention {
  // Which columns of a K|V row (kv_all, dkv_all) a view takes: K's heads, V's, or all of them.
  enum class Cols { kK, kV, kAll };

 public:
  AllGatherAttention(const PlanConfig& config, Communicator& comm, LocalAttention& kernel)
      : config_(config), comm_(comm), kernel_(kernel) {
    P_ = config.parallel.cp;
    j_ = comm.rank();
    B_ = config.batch;
    S_ = config.seqlen;
    c_ = S_ / (2 * P_);
    Sl_ = 2 * c_;
    D_ = config.attention.head_dim;
    Dv_ = config.attention.value_dim();
    U_ = std::gcd(D_, Dv_);
    H_ = config.attention.num_heads_q;
    G_ = config.attention.num_heads_kv;
    kv_row_ = G_ * (D_ + Dv_);
    dtype_ = config.dtype;
    acc_ = dtype_ == DType::kFloat64 ? DType::kFloat64 : DType::kFloat32;
    accumulate_ = kernel.accumulates_grads();
    lse_only_ = config.training && config.saved_activations == SavedActivations::kLseOnly;
    packed_ = config.layout == Layout::kTHD;
    fp8_ = config.payload == Payload::kFp8;
    calls_ = calls_of(config.attention, P_, j_, c_, packed_, config.batch);
    for (const Call& call : calls_) {
      fwd_parts_.push_back(row_parts(config.attention, call));
      parts_.push_back(split_parts(config.attention, call));
    }
    refs_.resize(calls_.size());
    for (int r = 0; r < P_; ++r) {
      for (int x = 0; x < 2 * P_; ++x) {
        sees_.push_back(needs(config.attention, P_, r, x, c_, packed_));
      }
    }
    layout_buffers();
  }

  static LocalProblem call_problem(const PlanConfig& c, const Call& call) {
    LocalProblem p =
        LocalProblem::unsharded(c.attention, c.dtype, c.batch, call.q_rows, call.packed);
    p.varlen_rows = call.packed;
    // Packed: each document's keys end where its queries do (a split's parts: uniform). Only a
    // call whose keys start before its queries has pieces with keys before their first query; in
    // any other every piece's keys start at its first query, bottom-right is top-left, and
    // top-left is what cuDNN runs fast: its backward with bottom-right took 45.8 ms where the
    // same call top-left needs about 24 (1x H200, cuDNN 9.19, docs/PERF.md).
    p.bottom_right = call.packed && call.masked && call.part < 0 && call.k_lo < call.q_global;
    // Forward's row classes each hold their rows' every key (sinks too); a backward part's dSinks
    // come from the group's first part.
    const bool row_class =
        call.table == kRowsBand || call.table == kRowsLeft || call.table == kRowsOpen;
    if (call.part > 0 && !row_class) p.config.sinks = false;
    if (!call.masked) {
      p.config.causal = false;
      p.config.window_left = p.config.window_right = -1;
    } else if (call.table == kRowsLeft || call.table == kAfterBand) {
      // Each piece's keys end at its last row + window_right: that corner, right bound 0.
      p.bottom_right = true;
      p.config.causal = true;
      p.config.window_left = p.config.window_right = -1;
    }
    p.seqlen_kv = call.k_hi - call.k_lo;
    p.diagonal_offset = call.masked ? call.diagonal_offset() : 0;
    p.grad_kv_dtype = c.dtype == DType::kFloat64 ? DType::kFloat64 : DType::kFloat32;
    if (call.part >= 0 && !row_class) {  // one part of a split backward call: dQ summed in fp32
      p.partial_keys = true;
      p.grad_q_fp32 = c.dtype != DType::kFloat64;
    }
    p.backward = c.training;
    return p;
  }

  // Every kernel problem of rank `rank`: forward calls and backward parts, as run.
  static std::vector<LocalProblem> all_problems(const PlanConfig& c, int rank, bool accumulate) {
    const int P = c.parallel.cp;
    const std::vector<Call> calls =
        calls_of(c.attention, P, rank, c.seqlen / (2 * P), c.layout == Layout::kTHD, c.batch);
    std::vector<LocalProblem> out;
    for (const Call& call : calls) {
      for (const Call& part : row_parts(c.attention, call)) out.push_back(call_problem(c, part));
    }
    if (!c.training) return out;
    for (const Call& call : calls) {
      for (const Call& part : split_parts(c.attention, call)) {
        out.push_back(backward_problem(c, part, accumulate));
      }
    }
    return out;
  }

  // The backward problem of one call or part. Packed with sinks: the kernel runs without them on
  // the final O and LSE (which hold the sinks' share: the same dQ, dK, dV), and dSinks come from
  // kernels::sink_grad over the rank's rows (cuDNN before 9.26 has no sinks backward with packed
  // batches).
  static LocalProblem backward_problem(const PlanConfig& c, const Call& call, bool accumulate) {
    LocalProblem p = call_problem(c, call);
    p.accumulate_dkv = accumulate;
    p.accumulate_dq = accumulate && call.part > 0;
    if (call.packed && p.config.sinks) {
      p.config.sinks = false;
      p.partial_keys = true;
    }
    return p;
  }
  static bool sinks_outside_kernel(const PlanConfig& c) {
    return c.layout == Layout::kTHD && c.attention.sinks;
  }

  const PlanConfig& config() const override { return config_; }
  std::size_t workspace_bytes() const override { return workspace_bytes_; }
  std::size_t saved_bytes() const override { return saved_bytes_; }

  Status forward(const ForwardArgs& a, Stream stream) override {
    ULYSSES_RETURN_IF_ERROR(checks().forward(a));
    ULYSSES_RETURN_IF_ERROR(packed_tables(a.cu_seqlens, a.workspace, stream));
    void* keep = config_.training ? a.saved : a.workspace;
    char* kv_all = at(lse_only_ ? a.workspace : keep, kv_all_);
    char* lse = at(keep, lse_);
    ULYSSES_RETURN_IF_ERROR(gather_kv(a.k, a.v, kv_all, a.workspace, stream));
    for (std::size_t g = 0; g < calls_.size(); ++g) {
      const std::vector<Call>& parts = fwd_parts_[g];
      for (std::size_t i = 0; i < parts.size(); ++i) {
        const Call& call = parts[i];
        // Row classes (row_parts()): the first writes every row, a later one with no piece would
        // merge nothing.
        if (i > 0 && no_pieces(g, call.table)) continue;
        const TensorView o = sequence_rows(act(a.o), call.q_row, call.q_rows);
        const TensorView l = lse_view(lse, call.q_row, call.q_rows);
        LocalForwardArgs la;
        la.rows = varlen_rows(g, call.table);
        la.q = sequence_rows(act(a.q), call.q_row, call.q_rows);
        la.k = kv_rows(kv_all, Cols::kK, call.k_lo, call.k_hi - call.k_lo);
        la.v = kv_rows(kv_all, Cols::kV, call.k_lo, call.k_hi - call.k_lo);
        la.sinks = a.sinks;
        la.o = i == 0 ? o : stage_o(a.workspace, call.q_rows);
        la.lse = i == 0 ? l : stage_lse(a.workspace, call.q_rows);
        la.workspace = kernel_ws_bytes_ ? at(a.workspace, kernel_ws_) : nullptr;
        ULYSSES_RETURN_IF_ERROR(kernel_.forward(call_problem(config_, call), la, stream));
        if (i > 0) ULYSSES_RETURN_IF_ERROR(kernels::merge_partial(o, l, la.o, la.lse, stream));
      }
    }
    if (!a.lse.empty_view()) {
      ULYSSES_RETURN_IF_ERROR(kernels::convert(as4(lse_as_bhs(a.lse, config_.layout)),
                                               as4(lse_view(lse, 0, Sl_)), stream));
    }
    if (config_.training && !lse_only_) {  // backward must not depend on the caller's q and o
      ULYSSES_RETURN_IF_ERROR(kernels::convert(saved_act(a.saved, q_copy_, D_), act(a.q), stream));
      ULYSSES_RETURN_IF_ERROR(kernels::convert(saved_act(a.saved, o_copy_, Dv_), act(a.o), stream));
    }
    return Status::ok();
  }

  Status backward(const BackwardArgs& a, Stream stream) override {
    ULYSSES_RETURN_IF_ERROR(checks().backward(a));
    ULYSSES_RETURN_IF_ERROR(packed_tables(a.cu_seqlens, a.workspace, stream));
    char* ws = static_cast<char*>(a.workspace);
    char* kv_all = at(lse_only_ ? a.workspace : a.saved, kv_all_);
    char* lse = at(a.saved, lse_);
    if (lse_only_) ULYSSES_RETURN_IF_ERROR(gather_kv(a.k, a.v, kv_all, ws, stream));
    const TensorView q = lse_only_ ? act(a.q) : saved_act(a.saved, q_copy_, D_);
    const TensorView o = lse_only_ ? act(a.o) : saved_act(a.saved, o_copy_, Dv_);
    char* dkv_all = at(ws, dkv_all_);
    // dK/dV: every call adds its partial to fp32 sums over the chunks this rank's queries see
    // (all of dkv_all).
    ULYSSES_RETURN_IF_ERROR(kernels::zero(acc_rows(dkv_all, Cols::kAll, seen_rows_), stream));
    for (std::size_t g = 0; g < calls_.size(); ++g) {
      const std::vector<Call>& parts = parts_[g];
      const bool split = parts.size() > 1;
      for (const Call& call : parts) {
        // A later part with no document piece (no document crosses the chunk's start, or none
        // reaches back that far) would add nothing.
        if (call.part > 0 && no_pieces(g, call.table)) continue;
        const std::int64_t n = call.k_hi - call.k_lo;
        const LocalProblem p = backward_problem(config_, call, accumulate_);
        LocalBackwardArgs lb;
        lb.rows = varlen_rows(g, call.table);
        lb.q = sequence_rows(q, call.q_row, call.q_rows);
        lb.k = kv_rows(kv_all, Cols::kK, call.k_lo, n);
        lb.v = kv_rows(kv_all, Cols::kV, call.k_lo, n);
        lb.o = sequence_rows(o, call.q_row, call.q_rows);
        lb.lse = lse_view(lse, call.q_row, call.q_rows);
        lb.d_o = sequence_rows(act(a.d_o), call.q_row, call.q_rows);
        if (p.config.sinks) {
          lb.sinks = a.sinks;
          lb.dsinks = dsinks_view(ws, g);
        }
        // The group's fp32 dQ sum has the first part's rows; a later part may cover a prefix.
        const Call& first = parts.front();
        const TensorView dq_sum = sequence_rows(grad_rows(at(ws, dq_acc_), H_, first.q_rows),
                                                call.q_row - first.q_row, call.q_rows);
        if (!split) {
          lb.dq = sequence_rows(act(a.dq), call.q_row, call.q_rows);
        } else {
          lb.dq =
              call.part == 0 || accumulate_ ? dq_sum : grad_rows(at(ws, dq_blk_), H_, call.q_rows);
        }
        char* dkv_blk = at(ws, dkv_blk_);
        lb.dk = accumulate_ ? dkv_rows(dkv_all, Cols::kK, call.k_lo, n)
                            : acc_rows(dkv_blk, Cols::kK, n);
        lb.dv = accumulate_ ? dkv_rows(dkv_all, Cols::kV, call.k_lo, n)
                            : acc_rows(dkv_blk, Cols::kV, n);
        lb.workspace = kernel_ws_bytes_ ? at(ws, kernel_ws_) : nullptr;
        ULYSSES_RETURN_IF_ERROR(kernel_.backward(p, lb, stream));
        if (!accumulate_) {
          ULYSSES_RETURN_IF_ERROR(kernels::accumulate(dkv_rows(dkv_all, Cols::kAll, call.k_lo, n),
                                                      acc_rows(dkv_blk, Cols::kAll, n), stream));
          if (split && call.part > 0) {
            ULYSSES_RETURN_IF_ERROR(kernels::accumulate(dq_sum, lb.dq, stream));
          }
        }
      }
      if (split) {
        const Call& c0 = parts.front();
        ULYSSES_RETURN_IF_ERROR(kernels::convert(sequence_rows(act(a.dq), c0.q_row, c0.q_rows),
                                                 grad_rows(at(ws, dq_acc_), H_, c0.q_rows),
                                                 stream));
      }
    }

    // Partials to the chunks' owners; this rank's chunks summed in rank order, rounded once.
    const std::size_t part = chunk_bytes(acc_);
    ULYSSES_RETURN_IF_ERROR(comm_.group_start());
    std::size_t slot = 0;
    for (int p = 0; p < P_; ++p) {
      if (p == j_) continue;
      for (const int x : chunks_of(p)) {
        if (sees(j_, x)) {
          ULYSSES_RETURN_IF_ERROR(
              comm_.send(dkv_all + row_bytes(slot_row(x * c_), acc_), part, p, stream));
        }
      }
      for (const int y : chunks_of(j_)) {
        if (sees(p, y)) {
          ULYSSES_RETURN_IF_ERROR(comm_.recv(at(ws, recv_) + slot++ * part, part, p, stream));
        }
      }
    }
    ULYSSES_RETURN_IF_ERROR(comm_.group_end());
    for (int g = 0; g < 2; ++g) {
      const int y = chunks_of(j_)[g];
      const TensorView own = dkv_rows(dkv_all, Cols::kAll, y * c_, c_);
      std::size_t s = 0;
      for (int p = 0; p < P_; ++p) {
        if (p == j_) continue;
        for (const int z : chunks_of(j_)) {
          if (!sees(p, z)) continue;
          if (z == y) {
            ULYSSES_RETURN_IF_ERROR(kernels::accumulate(
                own, acc_rows(at(ws, recv_) + s * part, Cols::kAll, c_), stream));
          }
          ++s;
        }
      }
      ULYSSES_RETURN_IF_ERROR(kernels::convert(sequence_rows(act(a.dk), g * c_, c_),
                                               dkv_rows(dkv_all, Cols::kK, y * c_, c_), stream));
      ULYSSES_RETURN_IF_ERROR(kernels::convert(sequence_rows(act(a.dv), g * c_, c_),
                                               dkv_rows(dkv_all, Cols::kV, y * c_, c_), stream));
    }
    if (sinks_outside_kernel(config_)) {
      ULYSSES_RETURN_IF_ERROR(kernels::sink_grad(o, act(a.d_o), lse_view(lse, 0, Sl_), a.sinks, 0,
                                                 dsinks_view(ws, 0), stream));
    }
    if (config_.attention.sinks) {
      for (std::size_t i = 1; i < calls_.size() && !sinks_outside_kernel(config_); ++i) {
        ULYSSES_RETURN_IF_ERROR(
            kernels::accumulate(as4(dsinks_view(ws, 0)), as4(dsinks_view(ws, i)), stream));
      }
      ULYSSES_RETURN_IF_ERROR(comm_.all_reduce_sum(dsinks_view(ws, 0).data, a.dsinks.data,
                                                   static_cast<std::size_t>(H_), DType::kFloat32,
                                                   stream));
    }
    return Status::ok();
  }

 private:
  std::array<int, 2> chunks_of(int rank) const { return {rank, 2 * P_ - 1 - rank}; }
  // Whether rank r's queries see a key of chunk x (needs(), computed once).
  bool sees(int r, int x) const { return sees_[static_cast<std::size_t>(r * 2 * P_ + x)]; }

  // Packed: every call's documents from cu_seqlens (offsets in the packed stream), on the host and,
  // for a device plan, in the workspace. Per call g and Table kind (kWhole: the call, or forward of
  // a split one; the others: its backward parts) one table of n documents: q_begin [n], q_len [n],
  // kv_begin [n], kv_len [n], rows relative to the call's (part's) first query row and first key
  // row. A document piece whose queries or keys are empty is left out; a table with none holds one
  // empty entry.
  Status packed_tables(std::span<const std::int32_t> cu, void* workspace, Stream stream) {
    if (!packed_) return Status::ok();
    tables_.clear();
    const AttentionConfig& ac = config_.attention;
    const std::int64_t w = ac.window_left, wr = ac.window_right;
    for (std::size_t g = 0; g < calls_.size(); ++g) {
      for (const Call* call : tabled(g)) {
        TableRef& ref = refs_[g][static_cast<std::size_t>(call->table)];
        ref = {tables_.size(), 0};
        const std::int64_t g0 = call->q_global, g1 = g0 + call->q_rows;
        std::vector<std::int32_t> qb, ql, kb, kl;
        for (std::size_t s = 0; s + 1 < cu.size(); ++s) {
          const std::int64_t d0 = cu[s], d1 = cu[s + 1];
          std::int64_t q0 = std::max(d0, g0), q1 = std::min(d1, g1);
          std::int64_t k0 = d0, k1 = ac.causal ? q1 : d1;
          // The first row past the rows whose window reaches d0, and the first row whose window
          // reaches d1 - 1 (no window: every row).
          const std::int64_t sees_d0 = w >= 0 ? d0 + w + 1 : d1;
          const std::int64_t sees_last = wr >= 0 ? d1 - 1 - wr : d0;
          switch (call->table) {
            case kWhole:
              if (w >= 0) k0 = std::max(d0, q0 - w);
              break;
            case kBefore:  // the keys before the chunk; with a window, rows that see d0
              k1 = std::max(d0, g0);
              if (w >= 0) q1 = std::min(q1, d0 + w + 1);
              break;
            case kOwn:  // the chunk's own rows
              k0 = q0;
              k1 = q1;
              break;
            case kBand:  // rows whose window starts after d0: keys [row - w, g)
              k1 = std::max(d0, g0);
              q0 = std::max(q0, d0 + w + 1);
              k0 = q0 - w;
              break;
            case kAfter:  // the keys after the chunk, rows that see d1 - 1
              k0 = std::min(d1, g1);
              q0 = std::max(q0, sees_last);
              break;
            case kAfterBand:  // rows whose window ends before d1 - 1: keys [g1, row + wr]
              k0 = g1;
              q1 = std::min(q1, sees_last);
              k1 = q1 + wr;
              break;
            case kRowsBand:
              q0 = std::max(q0, sees_d0);
              k0 = q0 - w;
              k1 = wr >= 0 ? std::min(d1, q1 + wr) : d1;
              break;
            case kRowsLeft:
              q1 = std::min({q1, sees_d0, sees_last});
              k1 = q1 + wr;
              break;
            case kRowsOpen:
              q0 = std::max(q0, sees_last);
              q1 = std::min(q1, sees_d0);
              break;
          }
          if (q0 >= q1 || k0 >= k1) continue;
          qb.push_back(static_cast<std::int32_t>(q0 - g0));
          ql.push_back(static_cast<std::int32_t>(q1 - q0));
          kb.push_back(static_cast<std::int32_t>(k0 - call->k_lo));
          kl.push_back(static_cast<std::int32_t>(k1 - k0));
        }
        if (qb.empty()) qb = ql = kb = kl = {0};
        ref.n = qb.size();
        for (const auto* v : {&qb, &ql, &kb, &kl})
          tables_.insert(tables_.end(), v->begin(), v->end());
      }
    }
    tables_device_ = tables_.data();
    if (!comm_.device().is_host()) {
      auto* dev = reinterpret_cast<std::int32_t*>(at(workspace, tables_off_));
      ULYSSES_RETURN_IF_ERROR(kernels::write_table(tables_, dev, comm_.device(), stream));
      tables_device_ = dev;
    }
    return Status::ok();
  }
  // The calls and parts whose tables packed_tables() writes for call g: forward's and backward's,
  // each table once.
  std::vector<const Call*> tabled(std::size_t g) const {
    std::vector<const Call*> out;
    for (const auto* list : {&fwd_parts_[g], &parts_[g]}) {
      for (const Call& c : *list) {
        const bool seen =
            std::any_of(out.begin(), out.end(), [&](const Call* o) { return o->table == c.table; });
        if (!seen) out.push_back(&c);
      }
    }
    return out;
  }
  // Whether call g's table of kind k holds no document piece (packed only; see packed_tables()).
  bool no_pieces(std::size_t g, int k) const {
    if (!packed_) return false;
    const TableRef& ref = refs_[g][static_cast<std::size_t>(k)];
    return ref.n == 1 && tables_[ref.at + 1] == 0;  // the one empty entry: q_len 0
  }
  // The VarlenRows of call g, Table kind k (empty unless packed).
  VarlenRows varlen_rows(std::size_t g, int k) const {
    if (!packed_) return {};
    const TableRef& ref = refs_[g][static_cast<std::size_t>(k)];
    auto host = [&](std::size_t i) {
      return std::span<const std::int32_t>(tables_.data() + ref.at + i * ref.n, ref.n);
    };
    auto dev = [&](std::size_t i) { return tables_device_ + ref.at + i * ref.n; };
    return {host(0), host(1), host(2), host(3), dev(0), dev(1), dev(2), dev(3)};
  }
  // This rank's K and V into kv_all at their global rows, then the chunks other ranks' queries see
  // to them, and the ones this rank's see from their owners, in one grouped exchange. fp8: this
  // rank's chunks are packed as FP8 rows into the workspace and turned back into kv_all (so it
  // computes with the values its peers decode), the codes travel, and each arriving chunk is
  // turned back into its rows of kv_all.
  Status gather_kv(const TensorView& k, const TensorView& v, char* kv_all, void* ws,
                   Stream stream) {
    const std::array<int, 2> own = chunks_of(j_);
    // Where chunk x lies in kv_all.
    auto chunk_at = [&](int x) { return kv_all + row_bytes(slot_row(x * c_), dtype_); };
    auto message = [&](int x) {
      return kernels::MessageLayout{chunk_at(x), dtype_, 1, c_, B_, static_cast<int>(kv_row_ / U_),
                                    U_};
    };
    auto codes = [&](std::size_t slot) {
      return fp8_chunk(at(ws, codes_ + slot * fp8_chunk_bytes()));
    };
    std::array<kernels::HeadMove, 4> moves{};  // native rows: both chunks' K and V, one launch
    for (std::size_t g = 0; g < 2; ++g) {
      const TensorView kg = sequence_rows(act(k), static_cast<std::int64_t>(g) * c_, c_);
      const TensorView vg = sequence_rows(act(v), static_cast<std::int64_t>(g) * c_, c_);
      if (fp8_) {
        ULYSSES_RETURN_IF_ERROR(kernels::pack_heads_fp8(kg, zero_map_, G_, codes(g), 0, stream));
        ULYSSES_RETURN_IF_ERROR(kernels::pack_heads_fp8(vg, zero_map_, G_, codes(g),
                                                        static_cast<int>(G_ * D_ / U_), stream));
        ULYSSES_RETURN_IF_ERROR(
            kernels::dequantize_fp8(codes(g), message(own[g]), comm_.device(), stream));
      } else {
        moves[2 * g] = {kg, zero_map_, G_, message(own[g]), 0};
        moves[2 * g + 1] = {vg, zero_map_, G_, message(own[g]), static_cast<int>(G_ * D_ / U_)};
      }
    }
    if (!fp8_) ULYSSES_RETURN_IF_ERROR(kernels::move_heads(true, moves, stream));
    if (P_ == 1) return Status::ok();
    const std::size_t bytes = fp8_ ? fp8_chunk_bytes() : chunk_bytes(dtype_);
    std::vector<std::pair<std::size_t, int>> arriving;  // fp8: (codes slot, chunk)
    ULYSSES_RETURN_IF_ERROR(comm_.group_start());
    for (int p = 0; p < P_; ++p) {
      if (p == j_) continue;
      for (std::size_t g = 0; g < 2; ++g) {
        if (sees(p, own[g])) {
          void* send = fp8_ ? codes(g).data : chunk_at(own[g]);
          ULYSSES_RETURN_IF_ERROR(comm_.send(send, bytes, p, stream));
        }
      }
      for (const int y : chunks_of(p)) {
        if (!sees(j_, y)) continue;
        void* recv = chunk_at(y);
        if (fp8_) {
          arriving.push_back({2 + arriving.size(), y});
          recv = codes(arriving.back().first).data;
        }
        ULYSSES_RETURN_IF_ERROR(comm_.recv(recv, bytes, p, stream));
      }
    }
    ULYSSES_RETURN_IF_ERROR(comm_.group_end());
    for (const auto& [slot, y] : arriving) {
      ULYSSES_RETURN_IF_ERROR(
          kernels::dequantize_fp8(codes(slot), message(y), comm_.device(), stream));
    }
    return Status::ok();
  }
  // fp8: one chunk's K|V as FP8 rows of gcd(D, Dv) values (a K head spans D / gcd of them, a V
  // head Dv / gcd), and its bytes.
  kernels::Fp8MessageLayout fp8_chunk(void* data) const {
    return {data, 1, c_, B_, static_cast<int>(kv_row_ / U_), U_};
  }
  std::size_t fp8_chunk_bytes() const { return fp8_chunk(nullptr).peer_bytes(); }

  CallChecks checks() const {
    return {config_, comm_, kernel_, Sl_, workspace_bytes_, saved_bytes_};
  }
  TensorView act(const TensorView& t) const { return as_bshd(t, config_.layout); }

  // A [B, 2c, H, width] contiguous copy in `saved` (q: D, o: Dv).
  TensorView saved_act(void* saved, std::size_t offset, std::int64_t width) const {
    return TensorView::contiguous(at(saved, offset), dtype_, {B_, Sl_, H_, width}, comm_.device());
  }
  // Bytes of `rows` rows of a [rows][B][G D + G Dv] buffer of `dtype`, and of one chunk.
  std::size_t row_bytes(std::int64_t rows, DType dtype) const {
    return static_cast<std::size_t>(rows * B_ * kv_row_) * dtype_size(dtype);
  }
  std::size_t chunk_bytes(DType dtype) const { return row_bytes(c_, dtype); }
  // The row of kv_all / dkv_all that holds global row `row` (of a chunk this rank sees): the
  // chunks this rank sees lie there in global order, the others take no room, so a call's key
  // range (consecutive seen chunks) is one run of rows.
  std::int64_t slot_row(std::int64_t row) const {
    return chunk_slot_[static_cast<std::size_t>(row / c_)] * c_ + row % c_;
  }
  // Rows [row0, row0 + rows) of a [rows][B][G D + G Dv] buffer as a [B, rows, heads, width] view:
  // K heads [B, rows, G, D], V heads [B, rows, G, Dv], or the whole row as gcd(D, Dv)-wide
  // channels (element-wise sums over K and V at once).
  TensorView rows_of(char* base, DType dtype, Cols cols, std::int64_t row0,
                     std::int64_t rows) const {
    const std::int64_t c0 = cols == Cols::kV ? G_ * D_ : 0;
    const std::int64_t heads = cols == Cols::kAll ? kv_row_ / U_ : G_;
    const std::int64_t width = cols == Cols::kAll ? U_ : cols == Cols::kK ? D_ : Dv_;
    return TensorView::strided(
        base + row_bytes(row0, dtype) + static_cast<std::size_t>(c0) * dtype_size(dtype), dtype,
        {B_, rows, heads, width}, {kv_row_, B_ * kv_row_, width, 1}, comm_.device());
  }
  // Global rows [row0, row0 + rows) of kv_all, of dkv_all; rows of a plain fp32 buffer.
  TensorView kv_rows(char* base, Cols cols, std::int64_t row0, std::int64_t rows) const {
    return rows_of(base, dtype_, cols, slot_row(row0), rows);
  }
  TensorView dkv_rows(char* base, Cols cols, std::int64_t row0, std::int64_t rows) const {
    return rows_of(base, acc_, cols, slot_row(row0), rows);
  }
  TensorView acc_rows(char* base, Cols cols, std::int64_t rows) const {
    return rows_of(base, acc_, cols, 0, rows);
  }
  // A contiguous [B, rows, heads, D] fp32 (fp64) gradient buffer.
  TensorView grad_rows(char* base, int heads, std::int64_t rows) const {
    return TensorView::contiguous(base, acc_, {B_, rows, heads, D_}, comm_.device());
  }
  // [B, H, rows] view of shard rows [row0, row0 + rows) of a [B][H][2c] fp32 LSE buffer.
  TensorView lse_view(char* base, std::int64_t row0, std::int64_t rows) const {
    return TensorView::strided(base + static_cast<std::size_t>(row0) * 4, DType::kFloat32,
                               {B_, H_, rows}, {H_ * Sl_, Sl_, 1}, comm_.device());
  }
  // A [B, H, S] view as [B, H, S, 1] (the elementwise kernels take four dimensions).
  static TensorView as4(const TensorView& t) {
    if (t.ndim == 4) return t;
    TensorView v = t;
    v.ndim = 4;
    for (int d = t.ndim; d < 4; ++d) {
      v.shape[static_cast<std::size_t>(d)] = 1;
      v.strides[static_cast<std::size_t>(d)] = 1;
    }
    return v;
  }
  // Forward's staging of a row class (row_parts()): O [B, rows, H, Dv], LSE [B, H, rows].
  TensorView stage_o(void* ws, std::int64_t rows) const {
    return TensorView::contiguous(at(ws, o_stage_), dtype_, {B_, rows, H_, Dv_}, comm_.device());
  }
  TensorView stage_lse(void* ws, std::int64_t rows) const {
    return TensorView::contiguous(at(ws, lse_stage_), DType::kFloat32, {B_, H_, rows},
                                  comm_.device());
  }
  // Call i's dSinks entries [H] fp32 in the workspace.
  TensorView dsinks_view(char* ws, std::size_t i) const {
    return TensorView::contiguous(at(ws, dsinks_ + i * static_cast<std::size_t>(H_) * 4),
                                  DType::kFloat32, {H_}, comm_.device());
  }

  void layout_buffers() {
    zero_map_ = {0};
    for (const LocalProblem& p : all_problems(config_, j_, accumulate_)) {
      kernel_ws_bytes_ = std::max(kernel_ws_bytes_, kernel_.workspace_bytes(p));
    }
    const std::size_t act_q = static_cast<std::size_t>(B_ * Sl_ * H_ * D_) * dtype_size(dtype_);
    const std::size_t act_o = static_cast<std::size_t>(B_ * Sl_ * H_ * Dv_) * dtype_size(dtype_);
    std::int64_t seen = 0;  // chunks this rank's queries see: kv_all's and dkv_all's rows
    for (int x = 0; x < 2 * P_; ++x) {
      chunk_slot_.push_back(sees(j_, x) ? seen++ : -1);
    }
    seen_rows_ = seen * c_;
    const std::size_t kv_bytes = row_bytes(seen_rows_, dtype_);
    Arena saved, fwd, bwd;
    Arena& keep = config_.training ? saved : fwd;
    if (packed_) {  // first in both arenas: the tables of packed_tables()
      // Each table: 4 ints per document piece, at most one piece per query row (or one entry).
      std::size_t ints = 0;
      for (std::size_t g = 0; g < calls_.size(); ++g) {
        ints += tabled(g).size() * 4 *
                static_cast<std::size_t>(std::max<std::int64_t>(1, calls_[g].q_rows));
      }
      tables_off_ = fwd.take(ints * 4);
      bwd.take(ints * 4);
    }
    if (fp8_) {  // this rank's two chunks and every arriving one as FP8 rows (gather_kv())
      std::size_t slots = 2;
      for (int p = 0; p < P_; ++p) {
        for (const int y : chunks_of(p)) slots += p != j_ && sees(j_, y) ? 1 : 0;
      }
      codes_ = fwd.take(slots * fp8_chunk_bytes());
      if (lse_only_) bwd.take(slots * fp8_chunk_bytes());  // backward gathers again
    }
    kv_all_ = (lse_only_ ? fwd : keep).take(kv_bytes);
    lse_ = keep.take(static_cast<std::size_t>(B_ * H_ * Sl_) * 4);
    if (config_.training && !lse_only_) {
      q_copy_ = saved.take(act_q);
      o_copy_ = saved.take(act_o);
    }
    // Forward's row classes after the first (row_parts()); after kv_all, which backward (kLseOnly)
    // finds at forward's offset.
    std::int64_t staged_rows = 0;
    for (std::size_t g = 0; g < calls_.size(); ++g) {
      if (fwd_parts_[g].size() > 1) staged_rows = std::max(staged_rows, calls_[g].q_rows);
    }
    if (staged_rows > 0) {
      o_stage_ =
          fwd.take(static_cast<std::size_t>(B_ * staged_rows * H_ * Dv_) * dtype_size(dtype_));
      lse_stage_ = fwd.take(static_cast<std::size_t>(B_ * H_ * staged_rows) * 4);
    }
    std::size_t scratch = fwd.total();
    if (config_.training) {
      if (lse_only_) bwd.take(kv_bytes);  // kv_all_, at forward's offset
      dkv_all_ = bwd.take(row_bytes(seen_rows_, acc_));
      std::int64_t max_kv = 0, max_q = 0;
      for (std::size_t i = 0; i < calls_.size(); ++i) {
        for (const Call& part : parts_[i]) max_kv = std::max(max_kv, part.k_hi - part.k_lo);
        if (parts_[i].size() > 1) max_q = std::max(max_q, calls_[i].q_rows);
      }
      const std::size_t q_row = static_cast<std::size_t>(B_ * H_ * D_) * dtype_size(acc_);
      if (!accumulate_) dkv_blk_ = bwd.take(row_bytes(max_kv, acc_));
      if (max_q > 0) dq_acc_ = bwd.take(static_cast<std::size_t>(max_q) * q_row);
      if (max_q > 0 && !accumulate_) dq_blk_ = bwd.take(static_cast<std::size_t>(max_q) * q_row);
      std::size_t slots = 0;
      for (int p = 0; p < P_; ++p) {
        for (const int y : chunks_of(j_)) {
          if (p != j_ && sees(p, y)) ++slots;
        }
      }
      recv_ = bwd.take(std::max<std::size_t>(1, slots) * chunk_bytes(acc_));
      dsinks_ = bwd.take(calls_.size() * static_cast<std::size_t>(H_) * 4);
      scratch = std::max(scratch, bwd.total());
    }
    kernel_ws_ = scratch;
    workspace_bytes_ = scratch + align_up(kernel_ws_bytes_);
    saved_bytes_ = saved.total();
  }

  PlanConfig config_;
  Communicator& comm_;
  LocalAttention& kernel_;
  std::vector<Call> calls_;
  std::vector<std::vector<Call>> fwd_parts_;  // [call]: its forward calls (row_parts())
  std::vector<std::vector<Call>> parts_;      // [call]: its backward parts (split_parts())
  std::vector<char> sees_;                    // [r][x]: needs(r, x)
  std::vector<std::int64_t> chunk_slot_;      // [2P]: where chunk x lies in kv_all / dkv_all, or -1
  std::int64_t seen_rows_ = 0;                // rows of kv_all / dkv_all
  std::vector<int> zero_map_;
  int P_ = 1, j_ = 0, H_ = 0, G_ = 0;
  std::int64_t B_ = 1, S_ = 0, c_ = 0, Sl_ = 0;
  std::int64_t D_ = 0, Dv_ = 0;  // head_dim (Q, K), head_dim_v (V, O)
  std::int64_t U_ = 0;           // gcd(D, Dv): the channel width that K|V rows are cut into
  std::int64_t kv_row_ = 0;      // elements of one K|V row: G D + G Dv
  DType dtype_ = DType::kBFloat16, acc_ = DType::kFloat32;
  bool accumulate_ = false;  // the kernel adds dK/dV into the fp32 sums itself
  bool lse_only_ = false;    // SavedActivations::kLseOnly (training)
  bool packed_ = false;      // layout thd
  bool fp8_ = false;         // Payload::kFp8: K/V chunks travel as FP8 rows
  std::size_t codes_ = 0;    // fp8: workspace offset of the FP8 rows (gather_kv())
  // Packed: this call's tables (packed_tables()), on the host and where the kernels read them.
  struct TableRef {
    std::size_t at = 0, n = 0;
  };
  std::vector<std::int32_t> tables_;
  std::vector<std::array<TableRef, kTables>> refs_;  // [call][Table]
  const std::int32_t* tables_device_ = nullptr;
  // Offsets into `saved` (training) or the workspace, and into the workspace.
  std::size_t kv_all_ = 0, lse_ = 0, q_copy_ = 0, o_copy_ = 0;
  std::size_t dkv_all_ = 0, dkv_blk_ = 0, dq_acc_ = 0, dq_blk_ = 0, recv_ = 0, dsinks_ = 0;
  std::size_t tables_off_ = 0;               // packed
  std::size_t o_stage_ = 0, lse_stage_ = 0;  // forward's row classes
  std::size_t kernel_ws_ = 0, kernel_ws_bytes_ = 0, workspace_bytes_ = 0, saved_bytes_ = 0;
};

}  // namespace

Status allgather_check_support(const PlanConfig& config, const Communicator& comm,
                               const LocalAttention& kernel) {
  if (!kernel.provides_lse()) {
    return unsupported(str_cat(kCreateApi, ": kernel ", kernel.name(),
                               " provides no softmax statistics (LSE), which strategy allgather "
                               "keeps for backward and returns; use strategy ulysses with this "
                               "kernel"));
  }
  for (const LocalProblem& p :
       AllGatherAttention::all_problems(config, comm.rank(), kernel.accumulates_grads())) {
    ULYSSES_RETURN_IF_ERROR(check_plan_call(kernel, p, "allgather"));
  }
  return Status::ok();
}

Result<std::unique_ptr<DistributedAttention>> create_allgather_plan(const PlanConfig& config,
                                                                    Communicator& comm,
                                                                    LocalAttention& kernel) {
  return std::unique_ptr<DistributedAttention>(
      std::make_unique<AllGatherAttention>(config, comm, kernel));
}

}  // namespace ulysses::parallel
