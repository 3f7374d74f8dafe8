// Ring attention, and the Ulysses x ring hybrid (ring is the hybrid with one rank per Ulysses
// group). Forward and backward.
//
// Legend: P = cp ranks = U (Ulysses group) x R (ring); rank r = j U + u. S global tokens, cut into
// 2R zigzag chunks of c = S / (2R); ring index j owns chunks j and J = 2R-1-j. Rank (j, u) holds
// piece u of U of each of those two chunks: Sl = S / P = 2c / U tokens. hq / hkv: query / KV
// heads per rank after the Ulysses exchange (all heads when U = 1; head_routing.h). Where U < Hkv
// does not divide Hkv, group positions own different head counts (ring peers, one position, the
// same): head-side buffers hold the rank's own heads, and on the sequence side of the in-group
// exchange peer p's rows sit in a region as wide as the busiest position's (move_group()).
//
//   q, k [B, Sl, H*, D], v [B, Sl, Hkv, Dv] (this rank's two pieces; Dv = head_dim_v, D unless MLA)
//      | Ulysses all-to-all inside the group (skipped when U = 1: a pack), two segments per peer
//      v
//   q_full [2c][B][hq D], kv_own [2c][B][hkv D + hkv Dv]   rows: chunk j (c rows), then chunk J
//      |                                                 (K|V rows as channels of gcd(D, Dv))
//      | R ring steps. Step t: the KV block of ring index s = j - t (chunks s, 2R-1-s) is here;
//      | it travels on to j + 1 on a side stream while the kernel runs on it (double-buffered).
//      | Each step is one to four kernel calls on (query rows, key rows) with global-position
//      | masks; blocks the mask hides entirely are skipped. Outputs merge in fp32 by LSE.
//      v
//   o_head [2c][B][hq Dv], lse_head [2c][B][hq]   (sinks folded in once, at the end)
//      | Ulysses all-to-all back (or an unpack when U = 1)
//      v
//   o [B, Sl, Hq, Dv], lse [B, Hq, Sl]
//
// Backward replays the steps with the final O and LSE: dQ accumulates in fp32 where it is; each KV
// block's fp32 dK/dV accumulator travels with the block (one hop behind it) and reaches its owner
// after the last step. dSinks come from O, dO and LSE directly and are summed over all ranks.
// `saved` holds q_full, kv_own, o_head and lse_head; with SavedActivations::kLseOnly only lse_head
// (and, with sinks, the fp32 O): backward then builds q_full, kv_own and o_head again from the
// caller's q, k, v, o in the workspace, in the same exchange as dO.
// Ring with bshd shards (U = 1) needs no copy where the caller's tensor will do: the shard's rows
// are the head buffers' rows, so backward reads dO in place, and with kLseOnly Q and O too (forward
// reads q and finalizes straight into o).
// Payload::kFp8: K and V travel the ring as FP8 rows. Once kv_own is built, it is packed into FP8
// rows in the first ring buffer and turned back in place, so this rank's kernels read the values
// every other rank will decode; the ring buffers then carry codes, and each arriving block is
// turned back into kv_cur (plan dtype) before its step's kernels. Backward only reads a kv_own kept
// in `saved`: its codes are decoded into kv_cur for step 0. The Ulysses exchange inside the group
// stays native.
//
// Causal zigzag steps without a window (c rows per chunk):
//   t = 0:  Q (2c) x KV (2c), causal: chunk order j < J makes the concatenation exact;
//   s < j:  Q (2c) x first chunk of KV (c), no mask (chunk 2R-1-s lies after both of ours);
//   s > j:  second chunk of Q (c) x KV (2c), no mask (our chunk j lies before both of theirs).
//
// Packed sequences (thd): every sequence is cut into 2R chunks of its own and "chunk x" above is
// H_x, the concatenation of every sequence's chunk x; a step is one call per pair of halves that
// see each other, each sequence a VarlenRows entry (docs/DESIGN.md, "Packed sequences"). Under a
// sliding window, a pair of different chunks is cut by the window's edge at a distance that
// differs from sequence to sequence (chunk sizes do), so it runs as two calls whose masks are the
// same for all: the pairs that see each other whole, unmasked, and the rest with the diagonal on
// the window's edge (kernels/packed_pairs.h); those calls' tables are written per call, and a
// call that takes no sequence's rows in this batch is skipped.
// The packed stream sharded like one sequence (PackedSharding::kStream): "chunk x" is chunk x of
// the stream, as for a dense sequence; a sequence's rows in a call are one run on each side, a
// pair of different chunks shares at most one sequence. Without a window the dense steps run as
// they are, each sequence a VarlenRows entry; with one, the per-pair calls above, the one shared
// sequence split by kernels::band_rows(), both calls over the rows the band lets see each other
// (reach(), as a dense pair). Every call's table is built on the host and written once per
// forward/backward call. Merges and staged gradient sums cover only the rows a call's sequences
// span (the rest of a call's output is O = 0, LSE = -inf, zero gradients).
#include <algorithm>
#include <array>
#include <limits>
#include <numeric>
#include <set>
#include <tuple>
#include <vector>

#include "common/check.h"
#include "kernels/layout.h"
#include "kernels/merge.h"
#include "kernels/streams.h"
#include "parallel/head_routing.h"
#include "parallel/plan_common.h"
#include "parallel/plans.h"
#include "ulysses/sharding.h"

namespace ulysses::parallel {

using detail::arg_error;
using detail::str_cat;

namespace {

// The sequences of `cu_seqlens` that hold tokens (repeated offsets are empty sequences: they take
// no rows and no table entries). Call after packed_sequence_offsets() has checked the offsets.
std::int64_t non_empty_sequences(std::span<const std::int32_t> cu_seqlens) {
  std::int64_t n = 0;
  for (std::size_t s = 0; s + 1 < cu_seqlens.size(); ++s) n += cu_seqlens[s + 1] > cu_seqlens[s];
  return n;
}

// Packed sequences: the padded offsets of `cu_seqlens` (packed_sequence_offsets()), or
// InvalidArgument naming cu_seqlens when the padded layout needs more than the plan's seqlen rows
// (so at most seqlen / (2 ring) sequences hold tokens: each pads to >= 2 ring rows; empty ones, any
// number of them, take none).
Result<std::vector<std::int32_t>> zigzag_packed_offsets(const PlanConfig& config,
                                                        std::span<const std::int32_t> cu_seqlens,
                                                        std::string_view api) {
  ULYSSES_ASSIGN_OR_RETURN(auto offsets, packed_sequence_offsets(config.parallel, cu_seqlens));
  if (offsets.back() > config.seqlen) {
    return arg_error(api, "cu_seqlens", "needs more tokens than the plan's seqlen once padded",
                     offsets.back(),
                     str_cat("<= ", config.seqlen, " (each sequence padded to a multiple of ",
                             2 * config.parallel.ring_size(), ": packed_sequence_offsets())"));
  }
  return offsets;
}

// One kernel call of a ring step: query rows [q_row, q_row + q_rows) of the local Q against key
// rows [kv_row, kv_row + kv_rows) of the KV block.
struct Block {
  std::int64_t q_row = 0, q_rows = 0, kv_row = 0, kv_rows = 0;
  bool masked = false;               // false: every pair visible, the call runs without masks
  std::int64_t diagonal_offset = 0;  // global position of query row 0 minus that of key row 0
  // Packed sequences: the zigzag chunk indices of the query and key halves (-1: not packed).
  int q_chunk = -1, kv_chunk = -1;
  // Packed under a window, chunks that differ: which of the pair's two calls (kernels::PairPart),
  // and the index of its host tables; -1: the chunks' rows as they are.
  int part = -1, table = -1;
};

enum class Visibility { kNone, kPartial, kFull };

constexpr std::int64_t kInf = std::numeric_limits<std::int64_t>::max() / 4;

// Query i sees key k when lo <= (i - k) + delta <= hi (delta: query position minus key position of
// row 0 of each); infinite bounds are +-kInf.
struct Band {
  std::int64_t lo = -kInf, hi = kInf;
};
Band band(const AttentionConfig& a) {
  Band b;
  if (a.causal) b.lo = 0;
  if (a.window_right >= 0) b.lo = std::max(b.lo, -static_cast<std::int64_t>(a.window_right));
  if (a.window_left >= 0) b.hi = a.window_left;
  return b;
}

// Which (query, key) pairs of two chunks of c tokens at global distance delta (query chunk start
// minus key chunk start) the mask lets through.
Visibility visibility(const Band& band, std::int64_t delta, std::int64_t c) {
  const auto [lo, hi] = band;
  const std::int64_t min_diff = delta - (c - 1), max_diff = delta + (c - 1);
  if (max_diff < lo || min_diff > hi) return Visibility::kNone;
  if (min_diff >= lo && max_diff <= hi) return Visibility::kFull;
  return Visibility::kPartial;
}

// The rows of two chunks of c tokens at global distance delta that can see anything of each other
// under the band: queries [q0, q0 + qn), keys [k0, k0 + kn). Past the band's upper edge the first
// queries see only the last keys (delta - hi keys of the chunk are seen by no query, and as many
// queries see no key); past its lower edge, the other way round. `margin` rows a side are kept
// of those.
struct Reach {
  std::int64_t q0 = 0, qn = 0, k0 = 0, kn = 0;
};
Reach reach(const Band& band, std::int64_t delta, std::int64_t c, std::int64_t margin = 0) {
  if (delta > band.hi) {
    const std::int64_t shift = std::max<std::int64_t>(0, std::min(delta - band.hi, c) - margin);
    return {0, c - shift, shift, c - shift};
  }
  if (delta < band.lo) {
    const std::int64_t shift = std::max<std::int64_t>(0, std::min(band.lo - delta, c) - margin);
    return {shift, c - shift, 0, c - shift};
  }
  return {0, c, 0, c};
}

// The kernel calls of step t on ring index j (see the file comment).
std::vector<Block> step_blocks(const AttentionConfig& a, int R, int j, int t, std::int64_t c) {
  const int s = ((j - t) % R + R) % R;
  const bool windowed = a.window_left >= 0 || a.window_right >= 0;
  if (!windowed && !a.causal) return {{0, 2 * c, 0, 2 * c, false, 0}};
  if (!windowed) {
    if (t == 0) return {{0, 2 * c, 0, 2 * c, true, 0}};
    if (s < j) return {{0, 2 * c, 0, c, false, 0}};
    return {{c, c, 0, 2 * c, false, 0}};
  }
  if (R == 1) return {{0, 2 * c, 0, 2 * c, true, 0}};  // chunks 0 and 1: one contiguous run
  const int q_chunks[2] = {j, 2 * R - 1 - j};
  const int kv_chunks[2] = {s, 2 * R - 1 - s};
  const Band bd = band(a);
  std::vector<Block> out;
  for (int qi = 0; qi < 2; ++qi) {
    for (int ki = 0; ki < 2; ++ki) {
      const std::int64_t delta = (q_chunks[qi] - kv_chunks[ki]) * c;
      const Visibility v = visibility(bd, delta, c);
      if (v == Visibility::kNone) continue;
      // A partial pair whose diagonal lies outside the band: the rows past reach() see nothing of
      // each other. Drop them, so the call's diagonal offset is inside the band (kernels such as
      // cuDNN can only express that) and no row of it is fully masked.
      const Reach r = reach(bd, delta, c);
      const std::int64_t offset = std::clamp(delta, bd.lo, bd.hi);
      out.push_back({qi * c + r.q0, r.qn, ki * c + r.k0, r.kn, v == Visibility::kPartial,
                     v == Visibility::kPartial ? offset : delta});
    }
  }
  return out;
}

// The kernel calls of step t with packed sequences: one per pair of halves (query half qh: chunk
// j or 2R-1-j of every sequence; key half kh likewise) whose chunks see each other. A sequence's
// rows inside a half are its own chunk (VarlenRows). Without a window the chunk order decides
// visibility for every sequence alike: a later chunk sees all of an earlier one, the same chunk is
// causal. With one, a chunk against itself is masked with offset 0 (the same for all), and a pair
// of different chunks d = qc - kc apart is two calls (kernels::pair_rows()): kFull unmasked, kEdge
// with the diagonal on the band's cutting side. A pair no sequence can see is dropped: its
// closest keys are |d| positions away (chunks of one token).
// With the packed stream sharded (stream), chunks are c rows of the stream: a pair of different
// chunks shares at most one sequence, and a pair the dense mask hides is dropped (so is the edge
// call of a pair the band holds whole).
std::vector<Block> packed_step_blocks(const AttentionConfig& a, int R, int j, int t, std::int64_t c,
                                      bool stream) {
  const int s = ((j - t) % R + R) % R;
  const int q_chunks[2] = {j, 2 * R - 1 - j};
  const int kv_chunks[2] = {s, 2 * R - 1 - s};
  const bool windowed = a.window_left >= 0 || a.window_right >= 0;
  const Band bd = band(a);
  std::vector<Block> out;
  for (int qh = 0; qh < 2; ++qh) {
    for (int kh = 0; kh < 2; ++kh) {
      const int qc = q_chunks[qh], kc = kv_chunks[kh], d = qc - kc;
      if (!windowed) {
        if (a.causal && qc < kc) continue;
        const bool masked = a.causal && qc == kc;
        out.push_back({qh * c, c, kh * c, c, masked, 0, qc, kc});
        continue;
      }
      if (d == 0) {
        out.push_back({qh * c, c, kh * c, c, true, 0, qc, kc});
        continue;
      }
      if ((d > 0 && d > bd.hi) || (d < 0 && d < bd.lo)) continue;
      const Visibility v = stream ? visibility(bd, d * c, c) : Visibility::kPartial;
      if (v == Visibility::kNone) continue;
      const auto full = static_cast<int>(kernels::PairPart::kFull);
      const auto edge = static_cast<int>(kernels::PairPart::kEdge);
      // The stream's chunks are c rows of one order, so both calls lie inside the rows the band
      // lets see each other (reach()): at a window w < c of adjacent chunks, w + 1 rows a side
      // instead of c (a call's fixed costs follow its rows). The one row more keeps a sequence's
      // piece starting outside the band where it did: kernels::band_rows() gives the unmasked
      // call the queries that see every key of the piece, and with the piece cut at the band's
      // edge query 0 (or, below the band, key 0) would be such a call of its own.
      const Reach r = stream ? reach(bd, d * c, c, 1) : Reach{0, c, 0, c};
      const std::int64_t q0 = qh * c + r.q0, k0 = kh * c + r.k0;
      out.push_back({q0, r.qn, k0, r.kn, false, 0, qc, kc, full});
      const bool cut = d > 0 ? bd.hi < kInf : bd.lo > -kInf;
      if (cut && v == Visibility::kPartial) {
        out.push_back({q0, r.qn, k0, r.kn, true, d > 0 ? bd.hi : bd.lo, qc, kc, edge});
      }
    }
  }
  return out;
}

// The packed stream sharded without a window: the dense steps (one call each, the first over
// both chunks), every sequence a piece of it. The local rows of a chunk pair keep their global
// order, and a sequence in two of them spans every chunk between, so its rows in a call are one
// run (its tail in the first chunk, its head in the second) on each side; causal inside it is
// causal in local rows. Window or not, a pair of different chunks shares at most one sequence.
std::vector<Block> blocks_of_step(const PlanConfig& config, int j, int t) {
  const int R = config.parallel.ring_size();
  const std::int64_t c = config.seqlen / (2 * R);
  const AttentionConfig& a = config.attention;
  if (config.layout != Layout::kTHD) return step_blocks(a, R, j, t, c);
  const bool stream = !config.parallel.packed_per_sequence();
  if (!stream || a.window_left >= 0 || a.window_right >= 0) {
    return packed_step_blocks(a, R, j, t, c, stream);
  }
  std::vector<Block> out = step_blocks(a, R, j, t, c);
  for (Block& b : out) {  // packed (varlen rows); the tables map rows by halves
    b.q_chunk = j;
    b.kv_chunk = ((j - t) % R + R) % R;
  }
  return out;
}

class RingAttention final : public DistributedAttention {
  // The heads of a group buffer a view or row takes (rows_view(), row_bytes()); kLse: one fp32
  // value per query head (row_bytes() and messages only, never rows_view()).
  enum class Heads { kQ, kO, kK, kV, kKV, kLse };

 public:
  RingAttention(const PlanConfig& config, Communicator& comm, LocalAttention& kernel,
                HeadRouting routing, std::unique_ptr<kernels::StreamSet> streams)
      : config_(config),
        comm_(comm),
        kernel_(kernel),
        routing_(std::move(routing)),
        streams_(std::move(streams)) {
    P_ = config.parallel.cp;
    U_ = config.parallel.ulysses_size();
    R_ = config.parallel.ring_size();
    rank_ = comm.rank();
    j_ = rank_ / U_;
    u_ = rank_ % U_;
    next_ = ((j_ + 1) % R_) * U_ + u_;
    prev_ = ((j_ - 1 + R_) % R_) * U_ + u_;
    B_ = config.batch;
    S_ = config.seqlen;
    c_ = S_ / (2 * R_);
    Sl_ = S_ / P_;
    half_ = Sl_ / 2;
    D_ = config.attention.head_dim;
    Dv_ = config.attention.value_dim();
    W_ = std::gcd(D_, Dv_);
    hq_ = routing_.q_heads_of(u_);
    hkv_ = routing_.kv_heads_of(u_);
    uneven_ = routing_.uneven();
    dtype_ = config.dtype;
    acc_ = dtype_ == DType::kFloat64 ? DType::kFloat64 : DType::kFloat32;
    kv_grad_dtype_ = routing_.replicated() ? acc_ : dtype_;
    packed_ = config.layout == Layout::kTHD;
    stream_ = packed_ && !config.parallel.packed_per_sequence();
    accumulate_ = kernel.accumulates_grads();
    lse_only_ = config.training && config.saved_activations == SavedActivations::kLseOnly;
    in_place_ = U_ == 1 && config.layout == Layout::kBSHD;
    qo_in_place_ = in_place_ && lse_only_;
    fp8_ = config.payload == Payload::kFp8;
    for (int t = 0; t < R_; ++t) steps_.push_back(blocks_of_step(config, j_, t));
    for (std::size_t t = 0; t < steps_.size(); ++t) {
      for (Block& b : steps_[t]) {
        if (stream_) {
          b.table = num_tables_++;
          stream_room_ += stream_room(t == 0, b);
        } else if (b.part >= 0) {
          b.table = pair_calls_++;
        }
      }
    }
    band_ = band(config.attention);
    // When step 0 is one call over every row (no window), it writes the fp32 accumulators itself:
    // no reset and no first merge (the LSE accumulator must then be the kernel's fp32).
    const Block& b0 = steps_[0].front();
    direct_first_ = acc_ == DType::kFloat32 && steps_[0].size() == 1 && b0.q_rows == 2 * c_ &&
                    b0.kv_rows == 2 * c_;
    max_seqs_ = std::max<std::int64_t>(1, c_);
    layout_buffers();
  }

  // The kernel problem of one block on ring index j of rank `rank`'s group position.
  // With `accumulate` (the kernel's accumulates_grads()), dQ adds into the running sum, and so do
  // dK/dV when the ring has one step (otherwise they are staged: their sums travel the ring while
  // the kernel runs on the next block).
  static LocalProblem block_problem(const PlanConfig& c, const HeadRouting& r, int u,
                                    const Block& b, bool accumulate) {
    LocalProblem p;
    p.config = c.attention;
    p.config.sinks = false;  // folded in once, after the merge
    if (!b.masked) {
      p.config.causal = false;
      p.config.window_left = p.config.window_right = -1;
    }
    p.dtype = c.dtype;
    p.batch = c.batch;
    p.varlen = p.varlen_rows = b.q_chunk >= 0;
    p.seqlen = b.q_rows;
    p.seqlen_kv = b.kv_rows;
    p.diagonal_offset = b.diagonal_offset;
    p.partial_keys = true;
    p.head_offset_q = r.q_begin[static_cast<std::size_t>(u)];
    p.num_heads_q_local = r.q_heads_of(u);
    p.head_offset_kv = r.kv_begin[static_cast<std::size_t>(u)];
    p.num_heads_kv_local = r.kv_heads_of(u);
    const bool f64 = c.dtype == DType::kFloat64;
    p.grad_kv_dtype = f64 ? DType::kFloat64 : DType::kFloat32;
    p.grad_q_fp32 = !f64;
    p.out_fp32 = !f64;
    p.accumulate_dq = accumulate;
    p.accumulate_dkv = accumulate && c.parallel.ring_size() == 1;
    p.backward = c.training;
    return p;
  }

  // Every distinct kernel problem rank `rank` runs over all steps.
  static std::vector<LocalProblem> all_problems(const PlanConfig& c, const HeadRouting& r, int rank,
                                                bool accumulate) {
    const int U = c.parallel.ulysses_size(), R = c.parallel.ring_size();
    std::vector<LocalProblem> out;
    std::set<std::tuple<std::int64_t, std::int64_t, bool, std::int64_t>> seen;
    for (int t = 0; t < R; ++t) {
      for (const Block& b : blocks_of_step(c, rank / U, t)) {
        if (seen.insert({b.q_rows, b.kv_rows, b.masked, b.diagonal_offset}).second) {
          out.push_back(block_problem(c, r, rank % U, b, accumulate));
        }
      }
    }
    return out;
  }

  const PlanConfig& config() const override { return config_; }
  std::size_t workspace_bytes() const override { return workspace_bytes_; }
  std::size_t saved_bytes() const override { return saved_bytes_; }

  Status forward(const ForwardArgs& a, Stream stream) override {
    ULYSSES_RETURN_IF_ERROR(checks().forward(a));
    ULYSSES_RETURN_IF_ERROR(
        packed_tables(a.cu_seqlens, a.cu_seqlens_device, a.workspace, stream, kFwdApi));
    void* keep = config_.training ? a.saved : a.workspace;
    void* heads = lse_only_ ? a.workspace : keep;  // where q_full, kv_own and o_head live
    char* q_full = at(heads, q_full_);
    char* kv_own = at(heads, kv_own_);
    char* o_head = at(heads, o_head_);
    char* lse_head = at(keep, lse_head_);
    char* ws = static_cast<char*>(a.workspace);
    const Stream side = streams_->side();

    // 1. Q, K, V of this group's two chunks, head-sharded (Q read in place: K|V only).
    if (qo_in_place_) {
      ULYSSES_RETURN_IF_ERROR(pack_kv(a.k, a.v, kv_own, stream));
    } else {
      ULYSSES_RETURN_IF_ERROR(
          to_heads(a.q, a.k, a.v, at(ws, send_q_), at(ws, send_kv_), q_full, kv_own, stream));
    }
    if (fp8_) {  // this rank computes with the values every other rank decodes
      ULYSSES_RETURN_IF_ERROR(encode_own(kv_own, ws, stream));
      ULYSSES_RETURN_IF_ERROR(decode_own(kv_own, ws, stream));
    }

    // 2. Ring steps.
    const TensorView o_acc = rows_view(at(ws, o_acc_), Heads::kO, acc_, 0, 2 * c_);
    const TensorView lse_acc = lse_rows(at(ws, lse_acc_), acc_, 0, 2 * c_);
    const bool direct = direct_first();
    if (!direct) ULYSSES_RETURN_IF_ERROR(kernels::reset_partial(o_acc, lse_acc, stream));
    ULYSSES_RETURN_IF_ERROR(streams_->record(kEvStart, stream));
    ULYSSES_RETURN_IF_ERROR(streams_->wait(side, kEvStart));
    for (int t = 0; t < R_; ++t) {
      char* cur = kv_at(t, kv_own, ws);
      ULYSSES_RETURN_IF_ERROR(pass_kv(t, cur, ws, side));
      if (t > 0) ULYSSES_RETURN_IF_ERROR(arrived(t, ws, stream));
      for (const Block& b : steps_[static_cast<std::size_t>(t)]) {
        if (idle(b)) continue;
        LocalForwardArgs la;
        la.q = qo_in_place_ ? shard_rows(a.q, b.q_row, b.q_rows)
                            : rows_view(q_full, Heads::kQ, dtype_, b.q_row, b.q_rows);
        la.k = rows_view(cur, Heads::kK, dtype_, b.kv_row, b.kv_rows);
        la.v = rows_view(cur, Heads::kV, dtype_, b.kv_row, b.kv_rows);
        const LocalProblem p = problem(b);
        la.o = rows_view(at(ws, o_blk_), Heads::kO, p.out_dtype(), b.q_row, b.q_rows);
        la.lse = lse_rows(at(ws, lse_blk_), DType::kFloat32, b.q_row, b.q_rows);
        ULYSSES_ASSIGN_OR_RETURN(la.rows, rows_of(b, ws, stream));
        la.workspace = kernel_ws_bytes_ ? at(ws, kernel_ws_) : nullptr;
        if (t == 0 && direct) {  // the first block sees every row: it starts the merge
          la.o = o_acc;
          la.lse = lse_acc;
          ULYSSES_RETURN_IF_ERROR(kernel_.forward(p, la, stream));
          continue;
        }
        ULYSSES_RETURN_IF_ERROR(kernel_.forward(p, la, stream));
        // Only the rows the call's sequences span: the kernel's O = 0, LSE = -inf elsewhere
        // would leave the sums as they are.
        const RowSpan qs = span(la.rows, false, b.q_rows);
        if (qs.rows() == 0) continue;
        ULYSSES_RETURN_IF_ERROR(kernels::merge_partial(
            rows_view(at(ws, o_acc_), Heads::kO, acc_, b.q_row + qs.begin, qs.rows()),
            lse_rows(at(ws, lse_acc_), acc_, b.q_row + qs.begin, qs.rows()),
            rows_view(at(ws, o_blk_), Heads::kO, p.out_dtype(), b.q_row + qs.begin, qs.rows()),
            lse_rows(at(ws, lse_blk_), DType::kFloat32, b.q_row + qs.begin, qs.rows()), stream));
      }
      if (R_ > 1) ULYSSES_RETURN_IF_ERROR(streams_->record(ev_computed(t), stream));
    }

    // 3. Sinks once, then the output back to the sequence owners.
    const TensorView o_fin =
        qo_in_place_ ? act(a.o) : rows_view(o_head, Heads::kO, dtype_, 0, 2 * c_);
    const TensorView lse_fin = lse_rows(lse_head, DType::kFloat32, 0, 2 * c_);
    ULYSSES_RETURN_IF_ERROR(
        kernels::finalize_partial(o_acc, lse_acc, a.sinks, q_offset(), o_fin, lse_fin, stream));
    if (o_fine_bytes_ > 0) {
      // dSinks reads O: keep it unrounded (the I/O-dtype O would add a second rounding on top of
      // the blocks', doubling dSinks' error on bf16).
      ULYSSES_RETURN_IF_ERROR(kernels::finalize_partial(
          o_acc, lse_acc, a.sinks, q_offset(),
          rows_view(at(keep, o_fine_), Heads::kO, acc_, 0, 2 * c_), lse_fin, stream));
    }
    // (U = 1: the head buffers are this rank's sequence-side rows, nothing travels.)
    char* o_recv = U_ == 1 ? o_head : at(ws, send_q_);  // send_q is dead after step 1's exchange
    char* lse_recv = U_ == 1 ? lse_head : at(ws, lse_recv_);
    if (U_ > 1) {
      ULYSSES_RETURN_IF_ERROR(comm_.group_start());
      ULYSSES_RETURN_IF_ERROR(segments_to_seq(o_head, o_recv, Heads::kO, dtype_, stream));
      ULYSSES_RETURN_IF_ERROR(
          segments_to_seq(lse_head, lse_recv, Heads::kLse, DType::kFloat32, stream));
      ULYSSES_RETURN_IF_ERROR(comm_.group_end());
    }
    if (!qo_in_place_) {
      ULYSSES_RETURN_IF_ERROR(move_group<false>(act(a.o), Heads::kO, o_recv, dtype_, stream));
    }
    if (a.lse.empty_view()) return Status::ok();
    const TensorView lse = lse_as_bhs(a.lse, config_.layout);
    if (!uneven_) {
      return kernels::unpack_lse({lse_recv, DType::kFloat32, U_, Sl_, B_, hq_, 1}, routing_.q_begin,
                                 lse, stream);
    }
    // Uneven heads: the LSE as rows of one element, peer by peer.
    return move_group<false>(lse_as_rows(lse), Heads::kLse, lse_recv, DType::kFloat32, stream);
  }

  Status backward(const BackwardArgs& a, Stream stream) override {
    ULYSSES_RETURN_IF_ERROR(checks().backward(a));
    ULYSSES_RETURN_IF_ERROR(
        packed_tables(a.cu_seqlens, a.cu_seqlens_device, a.workspace, stream, kBwdApi));
    char* ws = static_cast<char*>(a.workspace);
    void* heads = lse_only_ ? a.workspace : a.saved;
    char* q_full = at(heads, q_full_);
    char* kv_own = at(heads, kv_own_);
    char* o_head = at(heads, o_head_);
    char* lse_head = at(a.saved, lse_head_);
    char* do_head = at(ws, do_head_);
    const Stream side = streams_->side();

    // 1. dO to the head owners (one exchange, or a pack when U = 1); with kLseOnly q, k, v and o
    // as well, in the same exchange.
    const bool local = U_ == 1;
    char* send_do = local ? do_head : at(ws, send_do_);
    char* send_q = local ? q_full : at(ws, bwd_send_q_);
    char* send_kv = local ? kv_own : at(ws, bwd_send_kv_);
    char* send_o = local ? o_head : at(ws, bwd_send_o_);
    if (!in_place_) {
      ULYSSES_RETURN_IF_ERROR(move_group<true>(act(a.d_o), Heads::kO, send_do, dtype_, stream));
    }
    if (qo_in_place_) {
      ULYSSES_RETURN_IF_ERROR(pack_kv(a.k, a.v, kv_own, stream));
    } else if (lse_only_) {
      ULYSSES_RETURN_IF_ERROR(move_group<true>(act(a.q), Heads::kQ, send_q, dtype_, stream));
      ULYSSES_RETURN_IF_ERROR(move_group<true>(act(a.k), Heads::kK, send_kv, dtype_, stream));
      ULYSSES_RETURN_IF_ERROR(move_group<true>(act(a.v), Heads::kV, send_kv, dtype_, stream));
      ULYSSES_RETURN_IF_ERROR(move_group<true>(act(a.o), Heads::kO, send_o, dtype_, stream));
    }
    if (!local) {
      ULYSSES_RETURN_IF_ERROR(comm_.group_start());
      ULYSSES_RETURN_IF_ERROR(seq_to_segments(send_do, do_head, Heads::kO, dtype_, stream));
      if (lse_only_) {
        ULYSSES_RETURN_IF_ERROR(seq_to_segments(send_q, q_full, Heads::kQ, dtype_, stream));
        ULYSSES_RETURN_IF_ERROR(seq_to_segments(send_kv, kv_own, Heads::kKV, dtype_, stream));
        ULYSSES_RETURN_IF_ERROR(seq_to_segments(send_o, o_head, Heads::kO, dtype_, stream));
      }
      ULYSSES_RETURN_IF_ERROR(comm_.group_end());
    }
    // fp8: the block goes round as codes again. Rebuilt in the workspace (kLseOnly), kv_own is
    // rounded in place as in forward; kept in `saved` it holds rounded values already and is only
    // read (backward never writes `saved`): step 0 reads the decoded codes from kv_cur instead.
    char* own_kv = kv_own;
    if (fp8_ && (lse_only_ || R_ > 1)) {
      ULYSSES_RETURN_IF_ERROR(encode_own(kv_own, ws, stream));
      if (!lse_only_) own_kv = at(ws, kv_cur_);
      ULYSSES_RETURN_IF_ERROR(decode_own(own_kv, ws, stream));
    }
    // Rows of the head-layout Q, O and dO, or of the caller's tensors where they are read in place.
    auto q_rows = [&](std::int64_t row0, std::int64_t rows) {
      return qo_in_place_ ? shard_rows(a.q, row0, rows)
                          : rows_view(q_full, Heads::kQ, dtype_, row0, rows);
    };
    auto o_rows = [&](std::int64_t row0, std::int64_t rows) {
      return qo_in_place_ ? shard_rows(a.o, row0, rows)
                          : rows_view(o_head, Heads::kO, dtype_, row0, rows);
    };
    auto do_rows = [&](std::int64_t row0, std::int64_t rows) {
      return in_place_ ? shard_rows(a.d_o, row0, rows)
                       : rows_view(do_head, Heads::kO, dtype_, row0, rows);
    };
    const TensorView o_all = o_fine_bytes_ > 0
                                 ? rows_view(at(a.saved, o_fine_), Heads::kO, acc_, 0, 2 * c_)
                                 : o_rows(0, 2 * c_);
    const TensorView do_all = do_rows(0, 2 * c_);
    const TensorView lse_all = lse_rows(lse_head, DType::kFloat32, 0, 2 * c_);
    TensorView dsinks_local;
    if (config_.attention.sinks) {
      dsinks_local =
          TensorView::contiguous(at(ws, dsinks_local_), DType::kFloat32,
                                 {1, 1, 1, config_.attention.num_heads_q}, comm_.device());
      ULYSSES_RETURN_IF_ERROR(kernels::zero(dsinks_local, stream));
      TensorView flat = dsinks_local;
      flat.ndim = 1;
      flat.shape = {config_.attention.num_heads_q, 0, 0, 0};
      flat.strides = {1, 0, 0, 0};
      ULYSSES_RETURN_IF_ERROR(
          kernels::sink_grad(o_all, do_all, lse_all, a.sinks, q_offset(), flat, stream));
    }

    // 2. Ring steps: dQ stays, each block's dK/dV accumulator follows its block.
    const TensorView dq_acc = rows_view(at(ws, dq_acc_), Heads::kQ, acc_, 0, 2 * c_);
    const bool direct = direct_first();
    if (!direct) {
      ULYSSES_RETURN_IF_ERROR(kernels::zero(dq_acc, stream));
      ULYSSES_RETURN_IF_ERROR(
          kernels::zero(rows_view(at(ws, dkv_buf_[0]), Heads::kKV, acc_, 0, 2 * c_), stream));
    }
    ULYSSES_RETURN_IF_ERROR(streams_->record(kEvStart, stream));
    ULYSSES_RETURN_IF_ERROR(streams_->wait(side, kEvStart));
    for (int t = 0; t < R_; ++t) {
      char* cur = kv_at(t, own_kv, ws);
      char* dkv = at(ws, dkv_buf_[static_cast<std::size_t>(t % 2)]);
      ULYSSES_RETURN_IF_ERROR(pass_kv(t, cur, ws, side));
      if (t > 0) ULYSSES_RETURN_IF_ERROR(arrived(t, ws, stream));
      bool first = true;
      for (const Block& b : steps_[static_cast<std::size_t>(t)]) {
        if (idle(b)) continue;
        LocalBackwardArgs lb;
        lb.q = q_rows(b.q_row, b.q_rows);
        lb.k = rows_view(cur, Heads::kK, dtype_, b.kv_row, b.kv_rows);
        lb.v = rows_view(cur, Heads::kV, dtype_, b.kv_row, b.kv_rows);
        lb.o = o_rows(b.q_row, b.q_rows);
        lb.lse = lse_rows(lse_head, DType::kFloat32, b.q_row, b.q_rows);
        lb.d_o = do_rows(b.q_row, b.q_rows);
        LocalProblem p = problem(b);
        ULYSSES_ASSIGN_OR_RETURN(lb.rows, rows_of(b, ws, stream));
        lb.workspace = kernel_ws_bytes_ ? at(ws, kernel_ws_) : nullptr;
        // The block's rows of the running sums; blocks the kernel cannot add into are staged.
        const TensorView dq_sum = rows_view(at(ws, dq_acc_), Heads::kQ, acc_, b.q_row, b.q_rows);
        char* dkv_out = p.accumulate_dkv ? dkv : at(ws, dkv_blk_);
        lb.dq = p.accumulate_dq ? dq_sum
                                : rows_view(at(ws, dq_blk_), Heads::kQ, acc_, b.q_row, b.q_rows);
        lb.dk = rows_view(dkv_out, Heads::kK, acc_, b.kv_row, b.kv_rows);
        lb.dv = rows_view(dkv_out, Heads::kV, acc_, b.kv_row, b.kv_rows);
        if (t == 0 && direct) {  // the first block covers everything: it starts the sums
          p.accumulate_dq = p.accumulate_dkv = false;
          lb.dq = dq_acc;
          lb.dk = rows_view(dkv, Heads::kK, acc_, 0, 2 * c_);
          lb.dv = rows_view(dkv, Heads::kV, acc_, 0, 2 * c_);
          ULYSSES_RETURN_IF_ERROR(kernel_.backward(p, lb, stream));
          first = false;
          continue;
        }
        ULYSSES_RETURN_IF_ERROR(kernel_.backward(p, lb, stream));
        // Block gradients are 0 outside the rows the call's sequences span: only those add.
        const RowSpan qs = span(lb.rows, false, b.q_rows);
        if (!p.accumulate_dq && qs.rows() > 0) {
          ULYSSES_RETURN_IF_ERROR(kernels::accumulate(
              rows_view(at(ws, dq_acc_), Heads::kQ, acc_, b.q_row + qs.begin, qs.rows()),
              rows_view(at(ws, dq_blk_), Heads::kQ, acc_, b.q_row + qs.begin, qs.rows()), stream));
        }
        if (!p.accumulate_dkv) {  // R > 1 or a kernel that cannot add: the sum may still travel
          if (first && t > 0) ULYSSES_RETURN_IF_ERROR(streams_->wait(stream, ev_dkv(t)));
          const RowSpan ks = span(lb.rows, true, b.kv_rows);
          if (ks.rows() > 0) {
            ULYSSES_RETURN_IF_ERROR(kernels::accumulate(
                rows_view(dkv, Heads::kKV, acc_, b.kv_row + ks.begin, ks.rows()),
                rows_view(at(ws, dkv_blk_), Heads::kKV, acc_, b.kv_row + ks.begin, ks.rows()),
                stream));
          }
        }
        first = false;
      }
      if (first && t > 0) ULYSSES_RETURN_IF_ERROR(streams_->wait(stream, ev_dkv(t)));
      if (R_ > 1) {
        // The accumulator goes on to the next rank once this step's kernels are done with it. The
        // last hop carries complete sums to their owner: rounded to the gradients' dtype before
        // it rather than after (the same bits, half the bytes for bf16; dkv_blk is dead by now).
        const char* out = dkv;
        std::size_t bytes = kv_bytes(acc_);
        if (t == R_ - 1 && final_dkv_dtype() != acc_) {
          out = at(ws, dkv_blk_);
          bytes = kv_bytes(final_dkv_dtype());
          ULYSSES_RETURN_IF_ERROR(kernels::convert(
              rows_view(at(ws, dkv_blk_), Heads::kKV, final_dkv_dtype(), 0, 2 * c_),
              rows_view(dkv, Heads::kKV, acc_, 0, 2 * c_), stream));
        }
        ULYSSES_RETURN_IF_ERROR(streams_->record(ev_computed(t), stream));
        ULYSSES_RETURN_IF_ERROR(streams_->wait(side, ev_computed(t)));
        ULYSSES_RETURN_IF_ERROR(comm_.group_start());
        ULYSSES_RETURN_IF_ERROR(comm_.send(out, bytes, next_, side));
        ULYSSES_RETURN_IF_ERROR(comm_.recv(at(ws, dkv_buf_[static_cast<std::size_t>((t + 1) % 2)]),
                                           bytes, prev_, side));
        ULYSSES_RETURN_IF_ERROR(comm_.group_end());
        ULYSSES_RETURN_IF_ERROR(streams_->record(ev_dkv(t + 1), side));
      }
    }
    // After R steps (and R hops) each rank holds its own block's complete dK/dV (in
    // final_dkv_dtype()), the last hop of which dQ's conversion does not wait for.
    char* dkv_final = at(ws, dkv_buf_[static_cast<std::size_t>(R_ > 1 ? R_ % 2 : 0)]);
    const DType dkv_dtype = final_dkv_dtype();

    // 3. Gradients back to the sequence owners.
    if (U_ == 1) {
      ULYSSES_RETURN_IF_ERROR(kernels::convert(act(a.dq), dq_acc, stream));
      if (R_ > 1) ULYSSES_RETURN_IF_ERROR(streams_->wait(stream, ev_dkv(R_)));
      ULYSSES_RETURN_IF_ERROR(kernels::convert(
          act(a.dk), rows_view(dkv_final, Heads::kK, dkv_dtype, 0, 2 * c_), stream));
      ULYSSES_RETURN_IF_ERROR(kernels::convert(
          act(a.dv), rows_view(dkv_final, Heads::kV, dkv_dtype, 0, 2 * c_), stream));
    } else {
      char* grad_q = at(ws, grad_q_);
      char* grad_kv = kv_grad_dtype_ == dkv_dtype ? dkv_final : at(ws, grad_kv_);
      ULYSSES_RETURN_IF_ERROR(
          kernels::convert(rows_view(grad_q, Heads::kQ, dtype_, 0, 2 * c_), dq_acc, stream));
      if (R_ > 1) ULYSSES_RETURN_IF_ERROR(streams_->wait(stream, ev_dkv(R_)));
      if (grad_kv != dkv_final) {
        ULYSSES_RETURN_IF_ERROR(
            kernels::convert(rows_view(grad_kv, Heads::kKV, kv_grad_dtype_, 0, 2 * c_),
                             rows_view(dkv_final, Heads::kKV, dkv_dtype, 0, 2 * c_), stream));
      }
      char* dq_recv = at(ws, send_do_);  // send_dO is dead once step 1's exchange has run
      char* dkv_recv = at(ws, dkv_recv_);
      ULYSSES_RETURN_IF_ERROR(comm_.group_start());
      ULYSSES_RETURN_IF_ERROR(segments_to_seq(grad_q, dq_recv, Heads::kQ, dtype_, stream));
      ULYSSES_RETURN_IF_ERROR(
          segments_to_seq(grad_kv, dkv_recv, Heads::kKV, kv_grad_dtype_, stream));
      ULYSSES_RETURN_IF_ERROR(comm_.group_end());
      ULYSSES_RETURN_IF_ERROR(move_group<false>(act(a.dq), Heads::kQ, dq_recv, dtype_, stream));
      if (routing_.replicated()) {
        const kernels::MessageLayout kv_msg = kv_layout(dkv_recv, kv_grad_dtype_, U_, Sl_);
        ULYSSES_RETURN_IF_ERROR(
            kernels::unpack_sum_replicas(kv_msg, 0, routing_.kv_begin, act(a.dk), stream));
        ULYSSES_RETURN_IF_ERROR(kernels::unpack_sum_replicas(kv_msg, v_channel(), routing_.kv_begin,
                                                             act(a.dv), stream));
      } else {
        ULYSSES_RETURN_IF_ERROR(
            move_group<false>(act(a.dk), Heads::kK, dkv_recv, kv_grad_dtype_, stream));
        ULYSSES_RETURN_IF_ERROR(
            move_group<false>(act(a.dv), Heads::kV, dkv_recv, kv_grad_dtype_, stream));
      }
    }
    // 4. dSinks: every rank's rows contribute to its heads' entries; sum over all ranks.
    if (config_.attention.sinks) {
      ULYSSES_RETURN_IF_ERROR(comm_.all_reduce_sum(
          dsinks_local.data, a.dsinks.data, static_cast<std::size_t>(config_.attention.num_heads_q),
          DType::kFloat32, stream));
    }
    return Status::ok();
  }

 private:
  // Events, reused every call: start, then per step t arrived(t), computed(t), dkv(t).
  static constexpr int kEvStart = 0;
  int ev_arrived(int t) const { return 1 + t; }
  int ev_computed(int t) const { return 1 + R_ + t; }
  int ev_dkv(int t) const { return 1 + 2 * R_ + t; }  // t in 1..R

  // The dtype of the complete dK/dV sums a rank receives on the last hop: the gradients' own
  // (kv_grad_dtype_) where the ring has hops and they are narrower than the fp32 sums.
  DType final_dkv_dtype() const { return R_ > 1 ? kv_grad_dtype_ : acc_; }

  static constexpr std::string_view kFwdApi = "ulysses::DistributedAttention::forward";
  static constexpr std::string_view kBwdApi = "ulysses::DistributedAttention::backward";

  // Packed sequences: the per-sequence tables of this call's blocks, on the host and (device
  // kernels) in the workspace. Row 0: where each sequence's chunk starts inside a half (the same
  // in every half); row 1 + x: its real tokens in chunk x. Every rank computes the same numbers.
  Status packed_tables(std::span<const std::int32_t> cu, const std::int32_t* cu_device,
                       void* workspace, Stream stream, std::string_view api) {
    if (!packed_) return Status::ok();
    if (stream_) return stream_tables(cu, workspace, stream, api);
    const int all = static_cast<int>(cu.size()) - 1;
    ULYSSES_RETURN_IF_ERROR(zigzag_packed_offsets(config_, cu, api).status());
    const std::int64_t n = non_empty_sequences(cu);
    if (n > max_seqs_) {  // implied by the rows checked above; the tables' room depends on it
      return internal_error(str_cat(api, ": ", n, " non-empty packed sequences in ", config_.seqlen,
                                    " rows (room for ", max_seqs_, ")"));
    }
    num_seqs_ = static_cast<int>(n);
    tables_.assign(static_cast<std::size_t>((2 * R_ + 1) * n), 0);
    ULYSSES_RETURN_IF_ERROR(kernels::packed_chunk_tables(cu.data(), all, num_seqs_, R_,
                                                         tables_.data(), Device::host(), nullptr));
    tables_device_ = tables_.data();
    if (!comm_.device().is_host() && n > 0) {
      auto* dev = reinterpret_cast<std::int32_t*>(at(workspace, tables_off_));
      ULYSSES_RETURN_IF_ERROR(
          kernels::packed_chunk_tables(cu_device, all, num_seqs_, R_, dev, comm_.device(), stream));
      tables_device_ = dev;
    }
    // A window's pair calls: every call's rows on the host (the device copy is written per call).
    pair_tables_.assign(static_cast<std::size_t>(pair_calls_ * 4 * n), 0);
    for (const auto& step : steps_) {
      for (const Block& b : step) {
        if (b.part < 0) continue;
        ULYSSES_RETURN_IF_ERROR(kernels::packed_pair_tables(
            tables_.data(), num_seqs_, b.q_chunk, b.kv_chunk, band_.lo, band_.hi,
            static_cast<kernels::PairPart>(b.part), pair_tables_.data() + pair_table(b),
            Device::host(), nullptr));
      }
    }
    return Status::ok();
  }
  // The packed stream sharded (stream_): every block's table of sequence pieces, on the host and
  // (device kernels) in the workspace, written once per call. A block's rows are local rows of
  // two chunks of the stream (queries: j, then J; keys: s, then S at step t), mapped to stream
  // positions half by half (local_run()); a sequence's piece is its run on each side, as it is
  // (the dense steps: offset 0 or no mask; a window's chunk against itself), or under a window
  // the rows of the block's PairPart (kernels::band_rows()). Pieces with no query or no key are
  // left out. The host work is one pass over the sequences per block.
  Status stream_tables(std::span<const std::int32_t> cu, void* workspace, Stream stream,
                       std::string_view api) {
    stream_tables_.clear();
    stream_refs_.assign(static_cast<std::size_t>(num_tables_), {0, 0});
    std::vector<std::int32_t> qb, ql, kb, kl;
    for (int t = 0; t < R_; ++t) {
      const int s = ((j_ - t) % R_ + R_) % R_;
      const std::array<int, 2> q_chunks = {j_, 2 * R_ - 1 - j_}, kv_chunks = {s, 2 * R_ - 1 - s};
      for (const Block& b : steps_[static_cast<std::size_t>(t)]) {
        qb.clear(), ql.clear(), kb.clear(), kl.clear();
        for_each_sequence(cu, q_chunks, b.q_row, b.q_rows, [&](std::size_t d) {
          const auto [q0, q1] = local_run(cu[d], cu[d + 1], q_chunks, b.q_row, b.q_rows);
          const auto [k0, k1] = local_run(cu[d], cu[d + 1], kv_chunks, b.kv_row, b.kv_rows);
          if (q0 >= q1 || k0 >= k1) return;
          kernels::PairRows r{
              static_cast<std::int32_t>(q0 - b.q_row), static_cast<std::int32_t>(q1 - q0),
              static_cast<std::int32_t>(k0 - b.kv_row), static_cast<std::int32_t>(k1 - k0)};
          if (b.part >= 0) {  // a window's pair of different chunks (one half each)
            const std::int64_t delta = position(q_chunks, q0) - position(kv_chunks, k0);
            r = kernels::band_rows(r.q_begin, r.kv_begin, r.q_len, r.kv_len, delta, band_.lo,
                                   band_.hi, static_cast<kernels::PairPart>(b.part));
            if (r.q_len == 0) return;
          }
          qb.push_back(r.q_begin), ql.push_back(r.q_len);
          kb.push_back(r.kv_begin), kl.push_back(r.kv_len);
        });
        const std::size_t n = qb.size();
        const auto room = static_cast<std::size_t>(stream_room(t == 0, b));
        if (n > room) {  // see stream_room(): cannot happen
          return internal_error(
              str_cat(api, ": ", n, " packed pieces in one ring call (room for ", room, ")"));
        }
        stream_refs_[static_cast<std::size_t>(b.table)] = {stream_tables_.size(), n};
        for (const auto* v : {&qb, &ql, &kb, &kl}) {
          stream_tables_.insert(stream_tables_.end(), v->begin(), v->end());
        }
      }
    }
    tables_device_ = stream_tables_.data();
    if (!comm_.device().is_host() && !stream_tables_.empty()) {
      auto* dev = reinterpret_cast<std::int32_t*>(at(workspace, tables_off_));
      ULYSSES_RETURN_IF_ERROR(kernels::write_table(stream_tables_, dev, comm_.device(), stream));
      tables_device_ = dev;
    }
    return Status::ok();
  }
  // Stream sharding: fn(d) for each sequence d of `cu` that holds tokens among local rows [row0,
  // row0 + rows) of a [2c] buffer whose halves hold chunks `chunks` (ascending), in order, once
  // each: found by binary search per half, so a block costs its own sequences, not all of them.
  template <typename Fn>
  void for_each_sequence(std::span<const std::int32_t> cu, const std::array<int, 2>& chunks,
                         std::int64_t row0, std::int64_t rows, Fn&& fn) const {
    std::size_t next = 0;  // sequences before it are done
    for (std::size_t h = 0; h < 2; ++h) {
      const auto half = static_cast<std::int64_t>(h);
      const std::int64_t lo = std::max(row0, half * c_);
      const std::int64_t hi = std::min(row0 + rows, (half + 1) * c_);
      if (lo >= hi) continue;
      const std::int64_t p0 = chunks[h] * c_ + lo - half * c_, p1 = p0 + (hi - lo);
      // The sequence holding position p0: the last offset <= p0 starts it.
      const auto it = std::upper_bound(cu.begin(), cu.end(), p0);
      auto d = static_cast<std::size_t>(it - cu.begin());
      d = std::max(next, d == 0 ? 0 : d - 1);
      for (; d + 1 < cu.size() && cu[d] < p1; ++d) {
        if (cu[d + 1] > cu[d]) fn(d);
      }
      next = std::max(next, d);
    }
  }
  // Stream sharding: the global position of local row `row` of a [2c] buffer whose halves hold
  // chunks `chunks`.
  std::int64_t position(const std::array<int, 2>& chunks, std::int64_t row) const {
    const std::size_t h = row < c_ ? 0 : 1;
    return chunks[h] * c_ + row - static_cast<std::int64_t>(h) * c_;
  }
  // Stream sharding: the local rows [first, last) of sequence [d0, d1) among rows [row0, row0 +
  // rows) of a [2c] buffer whose halves hold chunks `chunks` (ascending), {0, 0} when it has none.
  // One run: a sequence in both halves spans every chunk between them (blocks_of_step()).
  std::pair<std::int64_t, std::int64_t> local_run(std::int64_t d0, std::int64_t d1,
                                                  const std::array<int, 2>& chunks,
                                                  std::int64_t row0, std::int64_t rows) const {
    std::int64_t first = -1, last = -1;
    for (std::size_t h = 0; h < 2; ++h) {
      const auto half = static_cast<std::int64_t>(h);
      const std::int64_t lo = std::max(row0, half * c_);
      const std::int64_t hi = std::min(row0 + rows, (half + 1) * c_);
      const std::int64_t base = chunks[h] * c_ - half * c_;  // position minus row in this half
      const std::int64_t a = std::max(lo, d0 - base), e = std::min(hi, d1 - base);
      if (a >= e) continue;
      if (first < 0) first = a;
      last = e;
    }
    if (first < 0) return {0, 0};
    return {first, last};
  }
  // Stream sharding: room for block b's pieces. Step 0's calls: a sequence per query row at most;
  // a later step's: one per pair of different chunks (a pair shares at most one sequence).
  static std::int64_t stream_room(bool first_step, const Block& b) {
    return first_step ? std::max<std::int64_t>(1, b.q_rows) : 4;
  }
  // Where a window's pair call's host tables start in pair_tables_: q_begin, q_len, kv_begin,
  // kv_len, num_seqs_ values each.
  std::size_t pair_table(const Block& b) const {
    return static_cast<std::size_t>(b.table) * 4 * static_cast<std::size_t>(num_seqs_);
  }
  // Whether block b is a window's pair call that takes no sequence's rows in this batch.
  bool idle(const Block& b) const {
    if (stream_) return stream_refs_[static_cast<std::size_t>(b.table)].second == 0;
    if (b.part < 0) return false;
    const auto n = static_cast<std::size_t>(num_seqs_);
    const std::int32_t* t = pair_tables_.data() + pair_table(b);
    for (std::size_t s = 0; s < n; ++s) {
      if (t[n + s] > 0 && t[3 * n + s] > 0) return false;
    }
    return true;
  }
  // The VarlenRows of block b (empty unless packed). A window's pair call first writes its device
  // tables into the workspace, on `stream`: the one call that reads them follows on that stream.
  Result<VarlenRows> rows_of(const Block& b, char* ws, Stream stream) {
    if (b.q_chunk < 0) return VarlenRows{};
    if (stream_) {
      const auto [at0, n] = stream_refs_[static_cast<std::size_t>(b.table)];
      auto host = [&](std::size_t i) {
        return std::span<const std::int32_t>(stream_tables_.data() + at0 + i * n, n);
      };
      auto dev = [&](std::size_t i) { return tables_device_ + at0 + i * n; };
      return VarlenRows{host(0), host(1), host(2), host(3), dev(0), dev(1), dev(2), dev(3)};
    }
    const auto n = static_cast<std::size_t>(num_seqs_);
    if (b.part >= 0) {
      const std::int32_t* host = pair_tables_.data() + pair_table(b);
      const std::int32_t* dev = host;
      if (!comm_.device().is_host()) {
        auto* d = reinterpret_cast<std::int32_t*>(at(ws, pair_tables_off_));
        ULYSSES_RETURN_IF_ERROR(kernels::packed_pair_tables(
            tables_device_, num_seqs_, b.q_chunk, b.kv_chunk, band_.lo, band_.hi,
            static_cast<kernels::PairPart>(b.part), d, comm_.device(), stream));
        dev = d;
      }
      VarlenRows v;
      v.q_begin = {host, n};
      v.q_len = {host + n, n};
      v.kv_begin = {host + 2 * n, n};
      v.kv_len = {host + 3 * n, n};
      v.q_begin_device = dev;
      v.q_len_device = dev + n;
      v.kv_begin_device = dev + 2 * n;
      v.kv_len_device = dev + 3 * n;
      return v;
    }
    auto host_row = [&](int r) {
      return std::span<const std::int32_t>(tables_.data() + static_cast<std::size_t>(r) * n, n);
    };
    auto dev_row = [&](int r) { return tables_device_ + static_cast<std::size_t>(r) * n; };
    VarlenRows v;
    v.q_begin = v.kv_begin = host_row(0);
    v.q_len = host_row(1 + b.q_chunk);
    v.kv_len = host_row(1 + b.kv_chunk);
    v.q_begin_device = v.kv_begin_device = dev_row(0);
    v.q_len_device = dev_row(1 + b.q_chunk);
    v.kv_len_device = dev_row(1 + b.kv_chunk);
    return v;
  }

  using RowSpan = detail::RowSpan;
  // The rows of one side (keys: kv_side) of a block of `rows` rows that its call's packed
  // sequences span (detail::varlen_span()); all of them when not packed.
  static RowSpan span(const VarlenRows& r, bool kv_side, std::int64_t rows) {
    return r.q_begin.empty() ? RowSpan{0, rows} : detail::varlen_span(r, kv_side);
  }

  // Whether step 0's one call writes the accumulators itself this call (see the constructor):
  // not when it holds no packed sequence, so is skipped.
  bool direct_first() const { return direct_first_ && !idle(steps_[0].front()); }

  int q_offset() const { return routing_.q_begin[static_cast<std::size_t>(u_)]; }
  LocalProblem problem(const Block& b) const {
    return block_problem(config_, routing_, u_, b, accumulate_);
  }
  CallChecks checks() const {
    return {config_, comm_, kernel_, Sl_, workspace_bytes_, saved_bytes_};
  }
  TensorView act(const TensorView& t) const { return as_bshd(t, config_.layout); }

  // The KV block the kernels of step t read: this rank's own, then the two ring buffers in turn
  // (fp8: every arriving block is turned back into kv_cur).
  char* kv_at(int t, char* own, char* ws) const {
    if (t == 0) return own;
    return at(ws, fp8_ ? kv_cur_ : kv_ring_[static_cast<std::size_t>(t % 2)]);
  }

  // On the side stream: the block of step t goes on to the next rank while the one of step t + 1
  // arrives from the previous one, into the buffer step t - 1 used (so after its kernels). fp8:
  // the ring buffers hold codes, this rank's own in the first one (encode_own()).
  Status pass_kv(int t, char* cur, char* ws, Stream side) {
    if (t + 1 >= R_) return Status::ok();
    if (t > 0) ULYSSES_RETURN_IF_ERROR(streams_->wait(side, ev_computed(t - 1)));
    const std::size_t bytes = ring_bytes();
    const char* send = fp8_ ? at(ws, kv_ring_[static_cast<std::size_t>(t % 2)]) : cur;
    ULYSSES_RETURN_IF_ERROR(comm_.group_start());
    ULYSSES_RETURN_IF_ERROR(comm_.send(send, bytes, next_, side));
    ULYSSES_RETURN_IF_ERROR(
        comm_.recv(at(ws, kv_ring_[static_cast<std::size_t>((t + 1) % 2)]), bytes, prev_, side));
    ULYSSES_RETURN_IF_ERROR(comm_.group_end());
    return streams_->record(ev_arrived(t + 1), side);
  }

  // Step t > 0 on the compute stream: wait for the block, and (fp8) turn its codes back into
  // kv_cur, which the previous step's kernels are done with (same stream).
  Status arrived(int t, char* ws, Stream stream) {
    ULYSSES_RETURN_IF_ERROR(streams_->wait(stream, ev_arrived(t)));
    if (!fp8_) return Status::ok();
    return kernels::dequantize_fp8(fp8_kv(at(ws, kv_ring_[static_cast<std::size_t>(t % 2)])),
                                   kv_message(at(ws, kv_cur_)), comm_.device(), stream);
  }

  // fp8: this rank's block kv_own into FP8 rows in the first ring buffer (what step 0 sends), and
  // those rows back into `dst` (plan dtype). Rows rounded once give the same values again. A row is
  // one channel of a K|V row, gcd(D, Dv) values with a scale of its own (a head of D = Dv: one).
  Status encode_own(char* kv_own, char* ws, Stream stream) {
    const std::int64_t row = row_elems(Heads::kKV), channels = row / W_;
    const TensorView own = TensorView::strided(kv_own, dtype_, {B_, 2 * c_, channels, W_},
                                               {row, B_ * row, W_, 1}, comm_.device());
    return kernels::pack_heads_fp8(own, zero_map_, static_cast<int>(channels),
                                   fp8_kv(at(ws, kv_ring_[0])), 0, stream);
  }
  Status decode_own(char* dst, char* ws, Stream stream) {
    return kernels::dequantize_fp8(fp8_kv(at(ws, kv_ring_[0])), kv_message(dst), comm_.device(),
                                   stream);
  }
  // A KV block [2c][B][K|V row] as FP8 rows of gcd(D, Dv) values, and as a one-peer message of the
  // plan's dtype.
  kernels::Fp8MessageLayout fp8_kv(char* data) const {
    return {data, 1, 2 * c_, B_, static_cast<int>(row_elems(Heads::kKV) / W_), W_};
  }
  kernels::MessageLayout kv_message(char* data) const { return kv_layout(data, dtype_, 1, 2 * c_); }
  // Bytes of one ring buffer: a KV block, or its FP8 rows.
  std::size_t ring_bytes() const { return fp8_ ? fp8_kv(nullptr).peer_bytes() : kv_bytes(dtype_); }

  // Elements of one token's row holding `h` (per batch entry) for `q` query and `kv` KV heads:
  // q D (Q, dQ), q Dv (O, dO), kv D + kv Dv (K|V blocks and their gradients), q (LSE).
  std::int64_t row_elems(Heads h, std::int64_t q, std::int64_t kv) const {
    if (h == Heads::kQ) return q * D_;
    if (h == Heads::kO) return q * Dv_;
    if (h == Heads::kLse) return q;
    return kv * (D_ + Dv_);
  }
  // This rank's heads (a group buffer's row).
  std::int64_t row_elems(Heads h) const { return row_elems(h, hq_, hkv_); }
  // Bytes of one group row ([B][row_elems]); of one LSE row ([B][hq]).
  std::size_t row_bytes(Heads h, DType dtype) const {
    return static_cast<std::size_t>(B_ * row_elems(h)) * dtype_size(dtype);
  }
  std::size_t lse_row_bytes(DType dtype) const { return row_bytes(Heads::kLse, dtype); }
  // Bytes of a row of peer p's heads in a sequence-side message, and of a region of Sl rows as
  // wide as the busiest peer's (each peer's rows start at p times that).
  std::size_t peer_row_bytes(Heads h, DType dtype, int p) const {
    return static_cast<std::size_t>(B_ *
                                    row_elems(h, routing_.q_heads_of(p), routing_.kv_heads_of(p))) *
           dtype_size(dtype);
  }
  std::size_t region_bytes(Heads h, DType dtype) const {
    return static_cast<std::size_t>(Sl_ * B_ *
                                    row_elems(h, routing_.heads_q_local, routing_.heads_kv_local)) *
           dtype_size(dtype);
  }
  std::size_t kv_bytes(DType dtype) const {
    return static_cast<std::size_t>(2 * c_) * row_bytes(Heads::kKV, dtype);
  }
  // A K|V message or block: rows of hkv K heads of D then hkv V heads of Dv, as channels of
  // gcd(D, Dv) (a head spans D / gcd or Dv / gcd of them); V's heads start at v_channel().
  kernels::MessageLayout kv_layout(char* data, DType dtype, int peers, std::int64_t rows) const {
    return {data, dtype, peers, rows, B_, static_cast<int>(row_elems(Heads::kKV) / W_), W_};
  }
  int v_channel() const { return static_cast<int>(hkv_ * D_ / W_); }

  // The Ulysses exchange with two segments per peer. A sequence-side message buffer holds peer
  // p's Sl rows (of its heads `h`) from p region_bytes() on, segment g of them after g Sl/2 rows;
  // on the head side that segment is rows g c + p Sl/2 (chunk g, piece p) of this rank's heads.
  // Called between group_start() and group_end().
  Status seq_to_segments(char* msg, char* full, Heads h, DType dtype, Stream stream) {
    return segments(msg, full, h, dtype, true, stream);
  }
  Status segments_to_seq(char* full, char* msg, Heads h, DType dtype, Stream stream) {
    return segments(msg, full, h, dtype, false, stream);
  }
  Status segments(char* msg, char* full, Heads h, DType dtype, bool to_heads, Stream stream) {
    const std::size_t mine = row_bytes(h, dtype), region = region_bytes(h, dtype);
    const auto half = static_cast<std::size_t>(half_);
    for (int p = 0; p < U_; ++p) {
      const int peer = j_ * U_ + p;
      const std::size_t theirs = peer_row_bytes(h, dtype, p);
      for (int g = 0; g < 2; ++g) {
        char* seq = msg + static_cast<std::size_t>(p) * region +
                    static_cast<std::size_t>(g) * half * theirs;
        char* head = full + static_cast<std::size_t>(g * c_ + p * half_) * mine;
        const char* send = to_heads ? seq : head;
        char* recv = to_heads ? head : seq;
        ULYSSES_RETURN_IF_ERROR(comm_.send(send, half * (to_heads ? theirs : mine), peer, stream));
        ULYSSES_RETURN_IF_ERROR(comm_.recv(recv, half * (to_heads ? mine : theirs), peer, stream));
      }
    }
    return Status::ok();
  }

  // Sequence-side rows (U > 1; U = 1: this rank's group buffer, its only peer's rows): peer p's
  // Sl x B rows of `h` in `dtype` (K and V: of kKV, from channel 0 or V's) start at p
  // region_bytes() and hold the heads p owns of `act`. kPack: act into them (pack_heads), else
  // back (unpack_heads). One call over the group when the heads split evenly, else one per peer.
  template <bool kPack>
  Status move_group(const TensorView& act, Heads h, char* base, DType dtype, Stream stream) {
    const bool kv = h == Heads::kK || h == Heads::kV;
    const std::vector<int>& begin = kv ? routing_.kv_begin : routing_.q_begin;
    auto one = [&](char* data, int peers, std::span<const int> b, int q, int kvh) {
      std::int64_t channels = q, width = 1;
      if (h == Heads::kQ || h == Heads::kO) width = h == Heads::kQ ? D_ : Dv_;
      if (kv) {
        channels = kvh * (D_ + Dv_) / W_;
        width = W_;
      }
      const kernels::MessageLayout m{data, dtype, peers, Sl_, B_, static_cast<int>(channels),
                                     width};
      const int heads = kv ? kvh : q;
      const int c0 = h == Heads::kV ? static_cast<int>(kvh * D_ / W_) : 0;
      return kPack ? kernels::pack_heads(act, b, heads, m, c0, stream)
                   : kernels::unpack_heads(m, c0, b, heads, act, stream);
    };
    if (!uneven_) return one(base, U_, begin, hq_, hkv_);
    const std::size_t region =
        region_bytes(h == Heads::kK || h == Heads::kV ? Heads::kKV : h, dtype);
    for (int p = 0; p < U_; ++p) {
      const auto i = static_cast<std::size_t>(p);
      ULYSSES_RETURN_IF_ERROR(one(base + i * region, 1, {&begin[i], 1}, routing_.q_heads_of(p),
                                  routing_.kv_heads_of(p)));
    }
    return Status::ok();
  }

  // Packs (U = 1) or exchanges (U > 1) this rank's q, k, v into the head-sharded group buffers.
  Status to_heads(const TensorView& q, const TensorView& k, const TensorView& v, char* send_q,
                  char* send_kv, char* q_full, char* kv_own, Stream stream) {
    const bool local = U_ == 1;
    ULYSSES_RETURN_IF_ERROR(
        move_group<true>(act(q), Heads::kQ, local ? q_full : send_q, dtype_, stream));
    ULYSSES_RETURN_IF_ERROR(
        move_group<true>(act(k), Heads::kK, local ? kv_own : send_kv, dtype_, stream));
    ULYSSES_RETURN_IF_ERROR(
        move_group<true>(act(v), Heads::kV, local ? kv_own : send_kv, dtype_, stream));
    if (local) return Status::ok();
    // One grouped exchange for Q and for K/V together.
    ULYSSES_RETURN_IF_ERROR(comm_.group_start());
    ULYSSES_RETURN_IF_ERROR(seq_to_segments(send_q, q_full, Heads::kQ, dtype_, stream));
    ULYSSES_RETURN_IF_ERROR(seq_to_segments(send_kv, kv_own, Heads::kKV, dtype_, stream));
    return comm_.group_end();
  }

  // K and V into kv_own (U = 1: a pack, no exchange).
  Status pack_kv(const TensorView& k, const TensorView& v, char* kv_own, Stream stream) {
    const kernels::MessageLayout mkv = kv_layout(kv_own, dtype_, 1, Sl_);
    const std::array<kernels::HeadMove, 2> moves{
        {{act(k), zero_map_, hkv_, mkv, 0}, {act(v), zero_map_, hkv_, mkv, v_channel()}}};
    return kernels::move_heads(true, moves, stream);  // one launch (a few us each at 8k)
  }

  // Rows [row0, row0 + rows) of this rank's activation t (U = 1, bshd): [B, rows, H, D], t's
  // strides. The shard's rows are the head buffers' rows.
  TensorView shard_rows(const TensorView& t, std::int64_t row0, std::int64_t rows) const {
    return sequence_rows(act(t), row0, rows);
  }

  // [B, rows, heads, width] view of rows [row0, row0 + rows) of a [2c][B][row_elems] group
  // buffer: Q's heads [B, rows, hq, D], O's [B, rows, hq, Dv], a KV block's K heads
  // [B, rows, hkv, D] or V heads [B, rows, hkv, Dv], or the whole K|V row as gcd(D, Dv)-wide
  // channels (element-wise sums over K and V at once).
  TensorView rows_view(char* base, Heads h, DType dtype, std::int64_t row0,
                       std::int64_t rows) const {
    const std::int64_t row = row_elems(h);
    std::int64_t c0 = 0, heads = hkv_, width = D_;
    if (h == Heads::kQ || h == Heads::kO) heads = hq_;
    if (h == Heads::kO || h == Heads::kV) width = Dv_;
    if (h == Heads::kV) c0 = hkv_ * D_;
    if (h == Heads::kKV) {
      heads = row / W_;
      width = W_;
    }
    return TensorView::strided(
        base + static_cast<std::size_t>(row0 * B_ * row + c0) * dtype_size(dtype), dtype,
        {B_, rows, heads, width}, {row, B_ * row, width, 1}, comm_.device());
  }
  // [B, hq, rows] view of rows [row0, row0 + rows) of a [2c][B][hq] LSE buffer.
  TensorView lse_rows(char* base, DType dtype, std::int64_t row0, std::int64_t rows) const {
    return TensorView::strided(base + static_cast<std::size_t>(row0 * B_ * hq_) * dtype_size(dtype),
                               dtype, {B_, hq_, rows}, {hq_, 1, B_ * hq_}, comm_.device());
  }

  void layout_buffers() {
    const std::size_t rows = static_cast<std::size_t>(2 * c_);
    const std::size_t q_bytes = rows * row_bytes(Heads::kQ, dtype_);
    const std::size_t o_bytes = rows * row_bytes(Heads::kO, dtype_);
    const std::size_t lse_bytes = rows * lse_row_bytes(DType::kFloat32);
    // Sequence-side messages: U regions as wide as the busiest peer's rows.
    const auto msg = [&](Heads h, DType dtype) {
      return static_cast<std::size_t>(U_) * region_bytes(h, dtype);
    };
    const std::size_t msg_q = msg(Heads::kQ, dtype_), msg_o = msg(Heads::kO, dtype_);
    const std::size_t msg_kv = msg(Heads::kKV, dtype_);
    zero_map_ = {0};
    for (const LocalProblem& p : all_problems(config_, routing_, rank_, accumulate_)) {
      kernel_ws_bytes_ = std::max(kernel_ws_bytes_, kernel_.workspace_bytes(p));
    }

    Arena saved, fwd;
    Arena& keep = config_.training ? saved : fwd;
    // The head-sharded Q, K|V and O: kept for backward, or (kLseOnly, inference) scratch at the
    // start of the workspace, where backward builds them again at the same offsets.
    Arena& heads = lse_only_ ? fwd : keep;
    if (!qo_in_place_) q_full_ = heads.take(q_bytes);
    kv_own_ = heads.take(kv_bytes(dtype_));
    if (!qo_in_place_) o_head_ = heads.take(o_bytes);
    lse_head_ = keep.take(lse_bytes);
    if (config_.training && config_.attention.sinks) {
      o_fine_bytes_ = rows * row_bytes(Heads::kO, acc_);
      o_fine_ = keep.take(o_fine_bytes_);
    }
    // Forward scratch (O comes back into send_q's region, dead by then). The KV ring
    // buffers come first, at the offsets backward uses too.
    // fp8: the first ring buffer holds this rank's own codes even with one ring step; arriving
    // blocks are turned back into kv_cur.
    if (R_ > 1 || fp8_) kv_ring_[0] = fwd.take(ring_bytes());
    if (R_ > 1) kv_ring_[1] = fwd.take(ring_bytes());
    if (R_ > 1 && fp8_) kv_cur_ = fwd.take(kv_bytes(dtype_));
    if (U_ > 1) {
      send_q_ = fwd.take(std::max(msg_q, msg_o));
      send_kv_ = fwd.take(msg_kv);
      lse_recv_ = fwd.take(msg(Heads::kLse, DType::kFloat32));
    }
    o_acc_ = fwd.take(rows * row_bytes(Heads::kO, acc_));
    lse_acc_ = fwd.take(rows * lse_row_bytes(acc_));
    o_blk_ = fwd.take(rows * row_bytes(Heads::kO, acc_));
    lse_blk_ = fwd.take(lse_bytes);
    std::size_t scratch = fwd.total();
    if (config_.training) {
      // Backward scratch; the KV ring buffers sit at the same offsets as in forward.
      Arena bwd;
      if (lse_only_) {  // q_full_, kv_own_, o_head_ (as in forward)
        if (!qo_in_place_) bwd.take(q_bytes);
        bwd.take(kv_bytes(dtype_));
        if (!qo_in_place_) bwd.take(o_bytes);
      }
      if (R_ > 1 || fp8_) bwd.take(ring_bytes());      // kv_ring_[0]
      if (R_ > 1) bwd.take(ring_bytes());              // kv_ring_[1]
      if (R_ > 1 && fp8_) bwd.take(kv_bytes(dtype_));  // kv_cur_
      if (!in_place_) do_head_ = bwd.take(o_bytes);
      dq_acc_ = bwd.take(rows * row_bytes(Heads::kQ, acc_));
      // Per-block gradients, unless the kernel adds them to the sums itself (see block_problem).
      if (!accumulate_) dq_blk_ = bwd.take(rows * row_bytes(Heads::kQ, acc_));
      dkv_buf_[0] = bwd.take(kv_bytes(acc_));
      dkv_buf_[1] = R_ > 1 ? bwd.take(kv_bytes(acc_)) : dkv_buf_[0];
      if (!accumulate_ || R_ > 1) dkv_blk_ = bwd.take(kv_bytes(acc_));
      if (U_ > 1 && lse_only_) {  // q, k|v, o on their way to the head owners again
        bwd_send_q_ = bwd.take(msg_q);
        bwd_send_kv_ = bwd.take(msg_kv);
        bwd_send_o_ = bwd.take(msg_o);
      }
      if (U_ > 1) {
        send_do_ = bwd.take(std::max(msg_o, msg_q));  // dQ comes back into it
        grad_q_ = bwd.take(q_bytes);
        if (kv_grad_dtype_ != acc_) grad_kv_ = bwd.take(kv_bytes(kv_grad_dtype_));
        dkv_recv_ = bwd.take(msg(Heads::kKV, kv_grad_dtype_));
      }
      dsinks_local_ = bwd.take(static_cast<std::size_t>(config_.attention.num_heads_q) * 4);
      scratch = std::max(scratch, bwd.total());
    }
    kernel_ws_ = scratch;
    workspace_bytes_ = scratch + align_up(kernel_ws_bytes_);
    if (stream_ && !comm_.device().is_host()) {
      tables_off_ = workspace_bytes_;
      workspace_bytes_ += align_up(static_cast<std::size_t>(4 * stream_room_) * 4);
    } else if (packed_ && !comm_.device().is_host()) {
      tables_off_ = workspace_bytes_;
      workspace_bytes_ += align_up(static_cast<std::size_t>((2 * R_ + 1) * max_seqs_) * 4);
      if (pair_calls_ > 0) {  // one call's tables at a time
        pair_tables_off_ = workspace_bytes_;
        workspace_bytes_ += align_up(static_cast<std::size_t>(4 * max_seqs_) * 4);
      }
    }
    saved_bytes_ = saved.total();
  }

  PlanConfig config_;
  Communicator& comm_;
  LocalAttention& kernel_;
  HeadRouting routing_;
  std::unique_ptr<kernels::StreamSet> streams_;
  std::vector<std::vector<Block>> steps_;  // [t]: kernel calls of step t
  std::vector<int> zero_map_;              // head map of a one-peer pack/unpack
  int P_ = 1, U_ = 1, R_ = 1, rank_ = 0, j_ = 0, u_ = 0, next_ = 0, prev_ = 0;
  int hq_ = 0, hkv_ = 0;  // this rank's heads (its group position's: head_routing.h)
  bool uneven_ = false;   // the group's ranks own different head counts
  std::int64_t B_ = 1, S_ = 0, c_ = 0, Sl_ = 0, half_ = 0;
  std::int64_t D_ = 0, Dv_ = 0;  // head_dim (Q, K), head_dim_v (V, O)
  std::int64_t W_ = 0;           // gcd(D, Dv): the channel width K|V rows are cut into
  DType dtype_ = DType::kBFloat16, acc_ = DType::kFloat32, kv_grad_dtype_ = DType::kBFloat16;
  // Offsets into `saved` (training) or the workspace, and into the workspace.
  std::size_t q_full_ = 0, kv_own_ = 0, o_head_ = 0, lse_head_ = 0;
  std::size_t o_fine_ = 0, o_fine_bytes_ = 0;
  bool direct_first_ = false;  // step 0's single call writes the accumulators (see constructor)
  // Packed sequences (kTHD): this call's per-sequence tables (packed_tables()).
  bool packed_ = false;
  // The packed stream sharded (PackedSharding::kStream): one table per block (Block::table), at
  // stream_refs_[table] = {offset, pieces} in stream_tables_ (4 rows of `pieces`), room for
  // stream_room_ pieces in all in the workspace (stream_tables()).
  bool stream_ = false;
  int num_tables_ = 0;
  std::int64_t stream_room_ = 0;
  std::vector<std::int32_t> stream_tables_;
  std::vector<std::pair<std::size_t, std::size_t>> stream_refs_;
  bool accumulate_ = false;   // the kernel adds block gradients to the running sums
  bool lse_only_ = false;     // SavedActivations::kLseOnly (training)
  bool in_place_ = false;     // U = 1, bshd: backward reads dO in the caller's tensor
  bool qo_in_place_ = false;  // and, with lse_only_, Q and O too
  bool fp8_ = false;          // Payload::kFp8: the ring carries K and V as FP8 rows
  std::size_t bwd_send_q_ = 0, bwd_send_kv_ = 0, bwd_send_o_ = 0;
  std::int64_t max_seqs_ = 1;
  int num_seqs_ = 0;
  std::vector<std::int32_t> tables_;
  const std::int32_t* tables_device_ = nullptr;
  std::size_t tables_off_ = 0;
  // Packed under a window: the mask's band, the number of pair calls (Block::table), their host
  // tables (4 rows of num_seqs_ each per call) and where one call's device tables go.
  Band band_;
  int pair_calls_ = 0;
  std::vector<std::int32_t> pair_tables_;
  std::size_t pair_tables_off_ = 0;
  std::size_t send_q_ = 0, send_kv_ = 0, lse_recv_ = 0, o_acc_ = 0, lse_acc_ = 0, o_blk_ = 0,
              lse_blk_ = 0;
  std::size_t kv_ring_[2] = {0, 0}, dkv_buf_[2] = {0, 0}, kv_cur_ = 0;
  std::size_t do_head_ = 0, dq_acc_ = 0, dq_blk_ = 0, dkv_blk_ = 0, send_do_ = 0, grad_q_ = 0,
              grad_kv_ = 0, dkv_recv_ = 0, dsinks_local_ = 0;
  std::size_t kernel_ws_ = 0, kernel_ws_bytes_ = 0, workspace_bytes_ = 0, saved_bytes_ = 0;
};

}  // namespace

Status ring_check_support(const PlanConfig& config, const Communicator& comm,
                          const LocalAttention& kernel) {
  const std::string_view strategy = strategy_name(config.parallel.strategy);
  if (!kernel.provides_lse()) {
    return unsupported(str_cat(kCreateApi, ": kernel ", kernel.name(),
                               " provides no softmax statistics (LSE), which strategy ", strategy,
                               " needs to merge blocks; use strategy ulysses with this kernel"));
  }
  ULYSSES_ASSIGN_OR_RETURN(auto routing,
                           HeadRouting::create(config.attention, config.parallel, kCreateApi));
  for (const LocalProblem& p :
       RingAttention::all_problems(config, routing, comm.rank(), kernel.accumulates_grads())) {
    ULYSSES_RETURN_IF_ERROR(check_plan_call(kernel, p, strategy));
  }
  return Status::ok();
}

Result<std::unique_ptr<DistributedAttention>> create_ring_plan(const PlanConfig& config,
                                                               Communicator& comm,
                                                               LocalAttention& kernel) {
  ULYSSES_ASSIGN_OR_RETURN(auto routing,
                           HeadRouting::create(config.attention, config.parallel, kCreateApi));
  ULYSSES_ASSIGN_OR_RETURN(
      auto streams,
      kernels::StreamSet::create(comm.device(), 2 + 3 * (config.parallel.ring_size() + 1)));
  return std::unique_ptr<DistributedAttention>(std::make_unique<RingAttention>(
      config, comm, kernel, std::move(routing), std::move(streams)));
}

}  // namespace ulysses::parallel
