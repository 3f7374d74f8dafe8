// DistributedDecode (decode.h): one decode step against a KV cache sharded by sequence.
//
// Per step and rank, plan_pieces() cuts the visible part of each cache segment into pieces:
//   * open pieces: keys every query token sees. One varlen call (VarlenRows, no mask) runs all of
//     them, for every sequence of the batch; they are cut to at least min_split_rows keys so that
//     one query token still spreads over pieces x heads rows of the kernel (flash-decoding);
//   * edges: keys only some tokens see, at most two per segment (the left edge of a window, and
//     keys right of query token 0: the new tokens' own under causal). One masked call each, on the
//     query rows that see at least one of its keys (so no softmax row is empty), with a diagonal
//     offset that stays the same from step to step (left edge: window_left; right edge: minus the
//     right bound), so a growing cache does not build new kernel graphs.
// Sequences of a batch may each have their own segments and query position: the pieces are planned
// per sequence, the open call holds every sequence's (n_open slots each, the largest count; unused
// slots are in no VarlenRows entry, so the kernel leaves them O = 0, LSE = -inf and the merge skips
// them), and edges with the same diagonal offset share a call (each with its own T query rows).
// Each piece has its own copy of q in the workspace (a varlen call writes every row of its q view:
// its sequences' outputs, zeros elsewhere). The pieces merge into one partial (O and LSE in the
// accumulator dtype), which is all-gathered; every rank merges the partials in rank order with the
// sinks, so every rank's O is the same bits. (One rank without edges or sinks: the pieces merge
// straight into O.)
//
// With the built-in split-KV kernel (DecodeConfig::split_kernel) the same pieces are the slots of
// one launch that reads q and the cache in place and writes each piece's partial where the local
// kernel's calls would have: the merges do not know which ran. Under auto with the cuDNN backend
// it runs every step on GPUs of up to 4 TB/s, elsewhere the steps that read few keys
// (kernels::split_kv_auto_keys()), cuDNN the longer ones. Paged caches
// (DecodeConfig::page_size) run in it only: the pieces are planned in each sequence's own rows, as
// without pages, and the kernel looks up the page of each row it reads.
#include "ulysses/decode.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <limits>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "attention/cudnn_support.h"
#include "attention/local_checks.h"
#include "common/check.h"
#include "kernels/decode_pieces.h"
#include "kernels/merge.h"
#include "kernels/split_kv.h"
#include "parallel/plan_common.h"

namespace ulysses {

using detail::arg_error;
using detail::str_cat;

namespace {

constexpr std::string_view kCreate = "ulysses::DistributedDecode::create";
constexpr std::string_view kForward = "ulysses::DistributedDecode::forward";
constexpr std::string_view kCheckLayout = "ulysses::DistributedDecode::check_device_layout";
constexpr std::string_view kConfig = "ulysses::DecodeConfig";

// Pieces per rank and sequence the workspace holds: open pieces (<= max_splits, plus one per
// segment by rounding) and <= 2 edges per segment.
std::int64_t piece_slots(const DecodeConfig& c) { return c.max_splits + 3ll * c.max_segments; }

using Piece = kernels::DecodePiece;
struct PiecePlan {
  std::vector<Piece> open, edges;
};

kernels::DecodePieceRules piece_rules(const DecodeConfig& c) {
  const AttentionConfig& a = c.attention;
  return {.tokens = c.query_tokens,
          .window_left = a.window_left,
          .right = a.causal ? 0 : a.window_right,
          .min_split_rows = c.min_split_rows,
          .max_splits = c.max_splits};
}

PiecePlan plan_pieces(const DecodeConfig& c, std::span<const CacheSegment> segments,
                      std::int64_t p0) {
  PiecePlan plan;
  kernels::plan_decode_pieces(
      piece_rules(c), static_cast<int>(segments.size()),
      [&](int i, std::int64_t& row, std::int64_t& rows, std::int64_t& position) {
        const CacheSegment& s = segments[static_cast<std::size_t>(i)];
        row = s.row;
        rows = s.rows;
        position = s.position;
      },
      p0, [&](std::int64_t, const Piece& p) { plan.open.push_back(p); },
      [&](const Piece& p) { plan.edges.push_back(p); });
  return plan;
}

class DecodePlan final : public DistributedDecode {
 public:
  DecodePlan(const DecodeConfig& config, Communicator& comm, LocalAttention& kernel)
      : config_(config), comm_(comm), kernel_(kernel) {
    const AttentionConfig& a = config_.attention;
    // (create() refuses built_in, paged caches and device layouts where the built-in kernel cannot
    // run.)
    builtin_ = config_.split_kernel == DecodeKernel::kBuiltIn || config_.page_size > 0 ||
               config_.device_layout;
    const std::int64_t B = config_.batch, T = config_.query_tokens, Dv = a.value_dim();
    acc_ = config_.dtype == DType::kFloat64 ? DType::kFloat64 : DType::kFloat32;
    slots_ = piece_slots(config_);
    rows_cap_ = B * slots_ * T;
    // Rows of Hq query heads (head_dim) and of Hq output heads (head_dim_v).
    auto act_row = [&](std::int64_t d) {
      return static_cast<std::size_t>(a.num_heads_q * d) * dtype_size(config_.dtype);
    };
    parallel::Arena arena;
    q_rep_ = arena.take(static_cast<std::size_t>(rows_cap_) * act_row(a.head_dim));
    o_part_ = arena.take(static_cast<std::size_t>(rows_cap_) * act_row(Dv));
    lse_part_ = arena.take(static_cast<std::size_t>(rows_cap_ * a.num_heads_q) * 4);
    lse_open_ = arena.take(static_cast<std::size_t>(rows_cap_ * a.num_heads_q) * 4);
    // VarlenRows of a call (4 rows) or the built-in kernel's slots (5 rows), one entry per piece.
    table_offset_ = arena.take(static_cast<std::size_t>(5 * B * slots_) * sizeof(std::int32_t));
    // A paged cache's page table, copied in when DecodeArgs::page_table_device is null.
    if (config_.page_size > 0) {
      pages_ =
          arena.take(static_cast<std::size_t>(B * pages_per_sequence()) * sizeof(std::int32_t));
    }
    o_acc_bytes_ = static_cast<std::size_t>(B * T * a.num_heads_q * Dv) * dtype_size(acc_);
    part_bytes_ =
        parallel::align_up(o_acc_bytes_ + static_cast<std::size_t>(B * a.num_heads_q * T) * 4);
    send_ = arena.take(part_bytes_);
    recv_ = config_.cp > 1 ? arena.take(part_bytes_ * static_cast<std::size_t>(config_.cp)) : send_;
    // Device layouts with edges: the open pieces' merge and the edges' merge, laid out like send_,
    // one part_bytes_ apart.
    if (device_edges() > 0) device_parts_ = arena.take(2 * part_bytes_);
    kernel_ws_ = arena.take(kernel_ws_bytes());
    workspace_bytes_ = arena.total();
  }

  // The kernel problem of the open call (no mask; GQA folded: the g query heads of a KV head are
  // g query rows of one head, so the kernel reads each KV head once for all of them) or of an edge.
  LocalProblem problem(std::int64_t q_rows, std::int64_t kv_rows, bool masked,
                       std::int64_t diagonal_offset) const {
    LocalProblem p;
    p.config = config_.attention;
    p.config.sinks = false;  // folded in once, in the last merge
    p.config.softmax_scale = config_.attention.scale();
    if (!masked) {
      p.config.causal = false;
      p.config.window_left = p.config.window_right = -1;
      p.config.num_heads_q = p.config.num_heads_kv;
    }
    p.dtype = config_.dtype;
    p.grad_kv_dtype = config_.dtype;
    p.batch = 1;
    p.varlen = p.varlen_rows = true;
    p.seqlen = q_rows;
    p.seqlen_kv = kv_rows;
    p.diagonal_offset = diagonal_offset;
    p.partial_keys = true;
    p.backward = false;
    p.num_heads_q_local = p.config.num_heads_q;
    p.num_heads_kv_local = p.config.num_heads_kv;
    return p;
  }

  // The problems create() asks the kernel about: the open call, and the edges' offsets.
  std::vector<LocalProblem> representative_problems() const {
    const AttentionConfig& a = config_.attention;
    const std::int64_t B = config_.batch, T = config_.query_tokens;
    const std::int64_t kv = B * config_.cache_rows;
    const std::int64_t g = a.num_heads_q / a.num_heads_kv;
    std::vector<LocalProblem> out = {problem(B * slots_ * T * g, kv, false, 0)};
    const std::int64_t r = a.causal ? 0 : a.window_right;
    if (a.window_left >= 0) out.push_back(problem(B * T, kv, true, a.window_left));
    if (T > 1 && r >= 0) out.push_back(problem(B * T, kv, true, -r));
    return out;
  }

  // Empty when the built-in kernel can run this plan's steps (given aligned caches), else why not.
  // The host runs every dtype and width.
  std::string builtin_unsupported() const {
    if (comm_.device().is_host()) return {};
    const AttentionConfig& a = config_.attention;
    std::string why = kernels::split_kv_unsupported(config_.dtype, a.head_dim, a.value_dim());
    if (why.empty()) {
      why = kernels::split_kv_device_unsupported(a.head_dim, a.value_dim(), comm_.device().index);
    }
    return why;
  }
  // split_kernel = auto, and the LocalAttention cannot run the pieces: the built-in kernel runs
  // them all (create()).
  void run_builtin_only() { builtin_ = true; }
  // split_kernel = auto with the cuDNN backend: the built-in kernel runs the steps that read at
  // most `keys` keys on this rank, where it took less GPU and host time (create(),
  // kernels::split_kv_auto_keys()).
  void run_builtin_on_short_steps(std::int64_t keys) { auto_builtin_keys_ = keys; }

  // Whether the built-in kernel's 16-byte loads can read a cache view's rows (sequences or pages
  // lie a whole number of rows apart, check()), and both of this step's. (The host's has no such
  // loads.)
  static bool aligned(const TensorView& t) {
    return t.device.is_host() ||
           kernels::split_kv_aligned(t.data, t.dtype, t.stride(1), t.stride(2));
  }
  static bool cache_aligned(const DecodeArgs& a) {
    return aligned(a.k_cache) && aligned(a.v_cache);
  }

  const DecodeConfig& config() const override { return config_; }
  std::size_t workspace_bytes() const override { return workspace_bytes_; }

  Status forward(const DecodeArgs& args, Stream stream) override {
    ULYSSES_RETURN_IF_ERROR(check(args));
    const AttentionConfig& a = config_.attention;
    // Q and K heads are D wide, V and O heads Dv (head_dim_v).
    const std::int64_t B = config_.batch, T = config_.query_tokens, D = a.head_dim,
                       Dv = a.value_dim();
    const std::int64_t Hq = a.num_heads_q, Hkv = a.num_heads_kv;
    const Device dev = comm_.device();
    char* ws = static_cast<char*>(args.workspace);
    // Per sequence: its pieces; the open region has n_open slots per sequence. A device layout is
    // planned on the device into a fixed number of slots, open and edges (n_edge per sequence).
    const bool on_device = config_.device_layout;
    std::vector<PiecePlan> plans;
    std::int64_t n_open = on_device ? device_open() : 0;
    const std::int64_t n_edge = device_edges();
    for (std::int64_t b = 0; !on_device && b < B; ++b) {
      plans.push_back(plan_pieces(config_, segments_of(args, b), position_of(args, b)));
      n_open = std::max(n_open, static_cast<std::int64_t>(plans.back().open.size()));
    }
    // Edges: one block of T query rows each, grouped by diagonal offset, a group's blocks adjacent
    // so that one call covers them (its VarlenRows ascend: sequences in order, then rows).
    struct Block {
      std::int64_t b;
      Piece edge;
    };
    std::vector<std::vector<Block>> groups;
    for (std::int64_t b = 0; b < static_cast<std::int64_t>(plans.size()); ++b) {
      for (const Piece& e : plans[static_cast<std::size_t>(b)].edges) {
        auto fits = [&](const std::vector<Block>& gr) {
          return gr.front().edge.diagonal_offset == e.diagonal_offset;
        };
        auto it = std::find_if(groups.begin(), groups.end(), fits);
        if (it == groups.end()) it = groups.insert(groups.end(), std::vector<Block>{});
        it->push_back({b, e});
      }
    }
    const std::size_t esize = dtype_size(config_.dtype);

    // The cache as one run of rows: row i of sequence b is row b * m + i; paged, row i of page p is
    // row p * m + i.
    const bool paged = config_.page_size > 0;
    const std::int64_t units = paged ? args.k_cache.size(0) : B;  // sequences, or pages
    const std::int64_t m = units > 1 ? args.k_cache.stride(0) / args.k_cache.stride(1) : 0;
    const std::int64_t kv_rows = (units - 1) * m + (paged ? config_.page_size : config_.cache_rows);
    auto cache_rows = [&](const TensorView& t) {
      return TensorView::strided(t.data, t.dtype, {1, kv_rows, Hkv, t.size(3)},
                                 {0, t.stride(1), t.stride(2), 1}, dev);
    };
    const TensorView k = cache_rows(args.k_cache), v = cache_rows(args.v_cache);
    // Workspace rows of T query tokens: the open region [B][n_open][T], then T per edge block;
    // heads of d (D: the query copies, Dv: the outputs).
    auto act = [&](std::size_t region, std::int64_t d, std::int64_t first, std::int64_t rows) {
      return TensorView::strided(ws + region + static_cast<std::size_t>(first * Hq * d) * esize,
                                 config_.dtype, {1, rows, Hq, d}, {0, Hq * d, d, 1}, dev);
    };
    auto lse = [&](std::int64_t first, std::int64_t rows) {
      return TensorView::strided(ws + lse_part_ + static_cast<std::size_t>(first) * 4,
                                 DType::kFloat32, {1, Hq, rows}, {0, rows_cap_, 1}, dev);
    };
    // Sequence b of a [B, ..] view, as [1, ..].
    auto seq_rows = [&](TensorView t, std::int64_t b) {
      t.data = static_cast<char*>(t.data) +
               static_cast<std::size_t>(b * t.stride(0)) * dtype_size(t.dtype);
      t.shape[0] = 1;
      return t;
    };

    // The open region, GQA folded: [Hkv][sequence s = b n_open + j][token t][g][D], so that head
    // kv's rows are (s T + t) g + jj (query head kv g + jj), one row stride and one head stride.
    const std::int64_t g = Hq / Hkv, open_rows = B * n_open * T * g;
    auto open_act = [&](std::size_t region, std::int64_t d) {
      return TensorView::strided(ws + region, config_.dtype, {1, open_rows, Hkv, d},
                                 {0, d, open_rows * d, 1}, dev);
    };
    const TensorView open_lse = TensorView::strided(ws + lse_open_, DType::kFloat32,
                                                    {1, Hkv, open_rows}, {0, open_rows, 1}, dev);
    // Edge blocks follow the open region: T rows of Hq heads each, unfolded.
    const std::int64_t edge_base = B * n_open * T;
    std::int64_t block = 0;
    auto keys = [&] {  // this rank reads in this step
      std::int64_t n = 0;
      for (const PiecePlan& p : plans) {
        for (const Piece& piece : p.open) n += piece.kv_len;
        for (const Piece& piece : p.edges) n += piece.kv_len;
      }
      return n;
    };
    if ((builtin_ || (auto_builtin_keys_ >= 0 && keys() <= auto_builtin_keys_)) &&
        cache_aligned(args)) {
      // One launch: slot s < B n_open is open slot s (sequence s / n_open; piece s % n_open, or
      // none: 0 keys), then the edge blocks in the order of `groups`. Its outputs are laid out as
      // the local kernel's calls would write them.
      const std::int64_t n_edges = [&] {
        std::int64_t n = B * n_edge;
        for (const std::vector<Block>& gr : groups) n += static_cast<std::int64_t>(gr.size());
        return n;
      }();
      const std::int64_t slots = B * n_open + n_edges;
      auto* table = reinterpret_cast<std::int32_t*>(ws + table_offset_);
      if (on_device) {
        const kernels::DecodeSlotTableArgs t{.segments = args.segments_device,
                                             .query_positions = args.query_positions_device,
                                             .batch = static_cast<int>(B),
                                             .max_segments = config_.max_segments,
                                             .cache_rows = config_.cache_rows,
                                             .seq_pitch = paged ? 0 : m,
                                             .rules = piece_rules(config_),
                                             .n_open = static_cast<int>(n_open),
                                             .n_edge = static_cast<int>(n_edge),
                                             .table = table};
        ULYSSES_RETURN_IF_ERROR(kernels::decode_slot_table(t, dev, stream));
      } else {
        table_.assign(static_cast<std::size_t>(5 * slots), 0);
        std::int64_t at = 0;
        auto put = [&](std::int64_t b, const Piece* p) {
          const auto i = static_cast<std::size_t>(at++), n = static_cast<std::size_t>(slots);
          const std::int64_t delta = p != nullptr ? p->diagonal_offset - p->q_begin : 0;
          // Paged: the kernel looks the rows up in sequence b's pages.
          table_[i] =
              static_cast<std::int32_t>((paged ? 0 : b * m) + (p != nullptr ? p->kv_row : 0));
          table_[n + i] = static_cast<std::int32_t>(p != nullptr ? p->kv_len : 0);
          table_[2 * n + i] = static_cast<std::int32_t>(b);
          table_[3 * n + i] = static_cast<std::int32_t>(static_cast<std::uint32_t>(delta));
          table_[4 * n + i] = static_cast<std::int32_t>(delta >> 32);
        };
        for (std::int64_t b = 0; b < B; ++b) {
          const std::vector<Piece>& open = plans[static_cast<std::size_t>(b)].open;
          for (std::size_t j = 0; j < static_cast<std::size_t>(n_open); ++j) {
            put(b, j < open.size() ? &open[j] : nullptr);
          }
        }
        for (const std::vector<Block>& gr : groups) {
          for (const Block& bl : gr) put(bl.b, &bl.edge);
        }
        ULYSSES_RETURN_IF_ERROR(kernels::write_table(table_, table, dev, stream));
      }
      const std::int32_t* pages = args.page_table_device;
      if (paged && pages == nullptr) {
        auto* copy = reinterpret_cast<std::int32_t*>(ws + pages_);
        ULYSSES_RETURN_IF_ERROR(kernels::write_table(args.page_table, copy, dev, stream));
        pages = copy;
      }
      kernels::SplitKvArgs s{
          .dtype = config_.dtype,
          .heads_q = static_cast<int>(Hq),
          .heads_kv = static_cast<int>(Hkv),
          .head_dim = static_cast<int>(D),
          .head_dim_v = static_cast<int>(Dv),
          .tokens = static_cast<int>(T),
          .scale = a.scale(),
          .q = args.q.data,
          .q_batch = args.q.stride(0),
          .q_token = args.q.stride(1),
          .q_head = args.q.stride(2),
          .k = k.data,
          .k_row = k.stride(1),
          .k_head = k.stride(2),
          .v = v.data,
          .v_row = v.stride(1),
          .v_head = v.stride(2),
          .rows = kv_rows,
          .table = table,
          .seq_pitch = paged ? 0 : m,
          .pages = pages,
          .page_size = static_cast<int>(config_.page_size),
          .page_stride = paged ? pages_per_sequence() : 0,
          .page_pitch = m,
          .slots = static_cast<int>(slots),
          .masked_from = static_cast<int>(B * n_open),
          .window_left = a.window_left,
          .window_right = a.causal ? 0 : a.window_right,
          // Open: row ((s T + t) g + jj) of KV head h's [open_rows] run; edges: row edge_base +
          // block T + t of Hq heads.
          .open = {.o = ws + o_part_,
                   .lse = reinterpret_cast<float*>(ws + lse_open_),
                   .o_slot = T * g * Dv,
                   .o_head = open_rows * Dv,
                   .o_token = g * Dv,
                   .o_row = Dv,
                   .l_slot = T * g,
                   .l_head = open_rows,
                   .l_token = g,
                   .l_row = 1},
          .edge = {.o = ws + o_part_ + static_cast<std::size_t>(edge_base * Hq * Dv) * esize,
                   .lse = reinterpret_cast<float*>(ws + lse_part_) + edge_base,
                   .o_slot = T * Hq * Dv,
                   .o_head = g * Dv,
                   .o_token = Hq * Dv,
                   .o_row = Dv,
                   .l_slot = T,
                   .l_head = g * rows_cap_,
                   .l_token = 1,
                   .l_row = rows_cap_}};
      ULYSSES_RETURN_IF_ERROR(kernels::split_kv_attention(s, dev, stream));
    } else {
      for (std::int64_t b = 0; b < B; ++b) {
        for (std::int64_t t = 0; n_open > 0 && t < T; ++t) {
          // (piece j, kv, jj, d) of token t of sequence b.
          const TensorView dst = TensorView::strided(
              ws + q_rep_ + static_cast<std::size_t>(((b * n_open * T + t) * g) * D) * esize,
              config_.dtype, {n_open, Hkv, g, D}, {T * g * D, open_rows * D, D, 1}, dev);
          const TensorView src = TensorView::strided(
              static_cast<char*>(args.q.data) +
                  (b * args.q.stride(0) + t * args.q.stride(1)) * static_cast<std::int64_t>(esize),
              config_.dtype, {n_open, Hkv, g, D}, {0, g * args.q.stride(2), args.q.stride(2), 1},
              dev);
          ULYSSES_RETURN_IF_ERROR(kernels::convert(dst, src, stream));
        }
      }
      // The edges' copies, unfolded after the open region: T rows of Hq heads per block.
      for (const std::vector<Block>& gr : groups) {
        for (const Block& bl : gr) {
          ULYSSES_RETURN_IF_ERROR(kernels::convert(act(q_rep_, D, edge_base + block++ * T, T),
                                                   seq_rows(args.q, bl.b), stream));
        }
      }

      // The kernel calls: every open piece in one, then one per edge group. Each VarlenRows entry:
      // query rows [first, first + q_len) of the call's q view, cache rows of sequence b.
      struct Entry {
        std::int64_t b, first, q_len;
        const Piece* piece;
      };
      std::size_t table_at = 0;
      auto call = [&](const TensorView& q, const TensorView& o, const TensorView& l,
                      const std::vector<Entry>& entries, bool masked,
                      std::int64_t diagonal_offset) -> Status {
        const std::size_t n = entries.size();
        table_.assign(4 * n, 0);
        for (std::size_t s = 0; s < n; ++s) {
          const Entry& en = entries[s];
          table_[s] = static_cast<std::int32_t>(en.first);
          table_[n + s] = static_cast<std::int32_t>(en.q_len);
          table_[2 * n + s] = static_cast<std::int32_t>(en.b * m + en.piece->kv_row);
          table_[3 * n + s] = static_cast<std::int32_t>(en.piece->kv_len);
        }
        auto* device_table = reinterpret_cast<std::int32_t*>(ws + table_offset_) + table_at;
        table_at += 4 * n;
        ULYSSES_RETURN_IF_ERROR(kernels::write_table(table_, device_table, dev, stream));
        const std::span<const std::int32_t> t(table_);
        VarlenRows rows{.q_begin = t.subspan(0, n),
                        .q_len = t.subspan(n, n),
                        .kv_begin = t.subspan(2 * n, n),
                        .kv_len = t.subspan(3 * n, n),
                        .q_begin_device = device_table,
                        .q_len_device = device_table + n,
                        .kv_begin_device = device_table + 2 * n,
                        .kv_len_device = device_table + 3 * n};
        LocalForwardArgs f{
            .q = q, .k = k, .v = v, .o = o, .lse = l, .rows = rows, .workspace = ws + kernel_ws_};
        return kernel_.forward(problem(q.size(1), kv_rows, masked, diagonal_offset), f, stream);
      };
      if (n_open > 0) {
        std::vector<Entry> entries;
        for (std::int64_t b = 0; b < B; ++b) {
          const std::vector<Piece>& open = plans[static_cast<std::size_t>(b)].open;
          for (std::size_t j = 0; j < open.size(); ++j) {
            const std::int64_t slot = b * n_open + static_cast<std::int64_t>(j);
            entries.push_back({b, slot * T * g, T * g, &open[j]});
          }
        }
        ULYSSES_RETURN_IF_ERROR(
            call(open_act(q_rep_, D), open_act(o_part_, Dv), open_lse, entries, false, 0));
      }
      block = 0;
      for (const std::vector<Block>& gr : groups) {
        std::vector<Entry> entries;
        for (std::size_t i = 0; i < gr.size(); ++i) {
          const Piece& e = gr[i].edge;
          entries.push_back({gr[i].b, static_cast<std::int64_t>(i) * T + e.q_begin, e.q_len, &e});
        }
        const std::int64_t first = edge_base + block * T,
                           rows = static_cast<std::int64_t>(gr.size()) * T;
        ULYSSES_RETURN_IF_ERROR(call(act(q_rep_, D, first, rows), act(o_part_, Dv, first, rows),
                                     lse(first, rows), entries, true,
                                     gr.front().edge.diagonal_offset));
        block += static_cast<std::int64_t>(gr.size());
      }
    }

    // This rank's partial: the open pieces, then the edges. One merge of the pieces per sequence or
    // per token, whichever is fewer, the other folded into its rows: rows (n, kv, jj) of a
    // [n, Hkv, g] view stand for query head kv g + jj. With one rank, no edges and no sinks the
    // pieces merge straight into O and LSE (the rank merge of one part would only convert). A
    // device layout's edges: the open pieces merge into part 0 of device_parts_, every sequence's
    // edges at once into part 1, then the two parts into the partial.
    auto partial = [&](std::size_t at) {
      return std::pair{
          TensorView::contiguous(ws + at, acc_, {B, T, Hq, Dv}, dev),
          TensorView::contiguous(ws + at + o_acc_bytes_, DType::kFloat32, {B, Hq, T}, dev)};
    };
    const auto [o_acc, lse_acc] = partial(send_);
    const bool stacked_edges = n_edge > 0;
    const auto [o_open, lse_open] = stacked_edges ? partial(device_parts_) : partial(send_);
    const bool direct = config_.cp == 1 && groups.empty() && !stacked_edges && !a.sinks;
    const TensorView& o_out = direct ? args.o : o_open;
    const TensorView& lse_out = direct ? args.lse : lse_open;
    // Strides, in elements, of a sequence and of a token: the pieces' O and LSE, the output's.
    struct Dim {
      std::int64_t n, o_part, l_part, o, l;
    };
    const Dim seq_dim{B, n_open * T * g * Dv, n_open * T * g, o_out.stride(0),
                      lse_out.empty_view() ? 0 : lse_out.stride(0)};
    const Dim tok_dim{T, g * Dv, g, o_out.stride(1), lse_out.empty_view() ? 0 : lse_out.stride(2)};
    const bool fold_tokens = T >= B;
    const Dim& fold = fold_tokens ? tok_dim : seq_dim;
    const Dim& loop = fold_tokens ? seq_dim : tok_dim;
    for (std::int64_t i = 0; i < loop.n; ++i) {
      const TensorView parts = TensorView::strided(
          ws + o_part_ + static_cast<std::size_t>(i * loop.o_part) * esize, config_.dtype,
          {fold.n, Hkv, g, Dv}, {fold.o_part, open_rows * Dv, Dv, 1}, dev);
      const TensorView lse_parts =
          TensorView::strided(ws + lse_open_ + static_cast<std::size_t>(i * loop.l_part) * 4,
                              DType::kFloat32, {fold.n, g, Hkv}, {fold.l_part, 1, open_rows}, dev);
      const TensorView acc =
          TensorView::strided(static_cast<char*>(o_out.data) +
                                  static_cast<std::size_t>(i * loop.o) * dtype_size(o_out.dtype),
                              o_out.dtype, {fold.n, Hkv, g, Dv},
                              {fold.o, g * o_out.stride(2), o_out.stride(2), o_out.stride(3)}, dev);
      const TensorView lacc =
          lse_out.empty_view()
              ? TensorView{}
              : TensorView::strided(
                    static_cast<char*>(lse_out.data) +
                        static_cast<std::size_t>(i * loop.l) * dtype_size(lse_out.dtype),
                    lse_out.dtype, {fold.n, g, Hkv},
                    {fold.l, lse_out.stride(1), g * lse_out.stride(1)}, dev);
      ULYSSES_RETURN_IF_ERROR(kernels::merge_stacked(parts, lse_parts, static_cast<int>(n_open),
                                                     T * g * Dv, T * g, TensorView{}, 0, acc, lacc,
                                                     stream));
    }
    if (direct) return Status::ok();
    block = 0;
    for (const std::vector<Block>& gr : groups) {
      for (const Block& bl : gr) {
        const std::int64_t first = edge_base + block++ * T;
        ULYSSES_RETURN_IF_ERROR(
            kernels::merge_partial(seq_rows(o_acc, bl.b), seq_rows(lse_acc, bl.b),
                                   act(o_part_, Dv, first, T), lse(first, T), stream));
      }
    }
    if (stacked_edges) {
      // Sequence b's edge k: slot B n_open + b n_edge + k, T rows of Hq heads from edge_base.
      const TensorView edge_o = TensorView::strided(
          ws + o_part_ + static_cast<std::size_t>(edge_base * Hq * Dv) * esize, config_.dtype,
          {B, T, Hq, Dv}, {n_edge * T * Hq * Dv, Hq * Dv, Dv, 1}, dev);
      const TensorView edge_lse =
          TensorView::strided(ws + lse_part_ + static_cast<std::size_t>(edge_base) * 4,
                              DType::kFloat32, {B, Hq, T}, {n_edge * T, rows_cap_, 1}, dev);
      const auto [o_edges, lse_edges] = partial(device_parts_ + part_bytes_);
      ULYSSES_RETURN_IF_ERROR(kernels::merge_stacked(edge_o, edge_lse, static_cast<int>(n_edge),
                                                     T * Hq * Dv, T, TensorView{}, 0, o_edges,
                                                     lse_edges, stream));
      ULYSSES_RETURN_IF_ERROR(kernels::merge_stacked(
          o_open, lse_open, 2, static_cast<std::int64_t>(part_bytes_ / dtype_size(acc_)),
          static_cast<std::int64_t>(part_bytes_ / 4), TensorView{}, 0, o_acc, lse_acc, stream));
    }

    // Every rank's partial, merged in rank order with the sinks.
    if (config_.cp > 1) {
      ULYSSES_RETURN_IF_ERROR(comm_.all_gather(ws + send_, ws + recv_, part_bytes_, stream));
    }
    const TensorView o_parts = TensorView::contiguous(ws + recv_, acc_, {B, T, Hq, Dv}, dev);
    const TensorView lse_parts =
        TensorView::contiguous(ws + recv_ + o_acc_bytes_, DType::kFloat32, {B, Hq, T}, dev);
    return kernels::merge_stacked(o_parts, lse_parts, config_.cp,
                                  static_cast<std::int64_t>(part_bytes_ / dtype_size(acc_)),
                                  static_cast<std::int64_t>(part_bytes_ / 4),
                                  a.sinks ? args.sinks : TensorView{}, 0, args.o, args.lse, stream);
  }

  Status check_device_layout(const DecodeArgs& args, Stream stream) override {
    if (!config_.device_layout) {
      return arg_error(kCheckLayout, "device_layout",
                       "is false in this plan's config (forward() checks a host layout itself)",
                       "false", "true");
    }
    ULYSSES_RETURN_IF_ERROR(check(args));
    const std::int64_t B = config_.batch, S = config_.max_segments;
    const Device dev = comm_.device();
    std::vector<std::int64_t> entries(static_cast<std::size_t>(B * S * 3));
    std::vector<std::int64_t> positions(static_cast<std::size_t>(B));
    std::vector<std::int32_t> pages;
    ULYSSES_RETURN_IF_ERROR(kernels::read_back(args.segments_device, entries.data(),
                                               entries.size() * sizeof(std::int64_t), dev, stream));
    ULYSSES_RETURN_IF_ERROR(kernels::read_back(args.query_positions_device, positions.data(),
                                               positions.size() * sizeof(std::int64_t), dev,
                                               stream));
    const bool paged = config_.page_size > 0;
    if (paged) {
      pages.resize(static_cast<std::size_t>(B * pages_per_sequence()));
      ULYSSES_RETURN_IF_ERROR(kernels::read_back(args.page_table_device, pages.data(),
                                                 pages.size() * sizeof(std::int32_t), dev, stream));
    }
    // The host layout the device arrays describe: every sequence's segments that hold rows.
    std::vector<CacheSegment> segments;
    std::vector<std::int64_t> offsets = {0};
    DeviceEntries of;
    for (std::int64_t b = 0; b < B; ++b) {
      for (std::int64_t i = 0; i < S; ++i) {
        const std::size_t e = static_cast<std::size_t>(b * S + i);
        const CacheSegment seg{entries[3 * e], entries[3 * e + 1], entries[3 * e + 2]};
        if (seg.rows == 0) continue;
        segments.push_back(seg);
        of.of_segment.push_back(e);
      }
      offsets.push_back(static_cast<std::int64_t>(segments.size()));
    }
    DecodeArgs host = args;
    host.segments_device = host.query_positions_device = nullptr;
    host.segments = segments;
    host.segment_offsets = offsets;
    host.query_positions = positions;
    host.page_table = pages;
    return check_layout(host, pool_pages(args), &of);
  }

 private:
  // Sequence b's segments and query position (DecodeArgs::segment_offsets, query_positions).
  static std::span<const CacheSegment> segments_of(const DecodeArgs& a, std::int64_t b) {
    if (a.segment_offsets.empty()) return a.segments;
    const auto i = static_cast<std::size_t>(b);
    const auto first = static_cast<std::size_t>(a.segment_offsets[i]);
    return a.segments.subspan(first, static_cast<std::size_t>(a.segment_offsets[i + 1]) - first);
  }
  static std::int64_t position_of(const DecodeArgs& a, std::int64_t b) {
    return a.query_positions.empty() ? a.query_position
                                     : a.query_positions[static_cast<std::size_t>(b)];
  }

  // Open slots per sequence of a device layout: a segment of n keys is cut into ceil(n / target)
  // <= floor(n / target) + 1 pieces, target >= min_split_rows and >= the open keys / max_splits,
  // and a sequence's segments hold at most cache_rows keys, so at most min(max_splits, cache_rows
  // / min_split_rows) + max_segments pieces (fewer unused slots than max_splits + max_segments
  // where the cache is short).
  std::int64_t device_open() const {
    return std::min<std::int64_t>(config_.max_splits, config_.cache_rows / config_.min_split_rows) +
           config_.max_segments;
  }

  // Edge slots per sequence of a device layout: none with one query token, which has no edges;
  // else max_segments + 1. A segment has an edge on each side only if it holds every key between
  // (positions lo(T - 1) to hi(0) of decode_pieces.h, which are not empty then), so one segment at
  // most; every other one has at most one.
  std::int64_t device_edges() const {
    return config_.device_layout && config_.query_tokens > 1 ? config_.max_segments + 1ll : 0;
  }

  // Paged: the pool's pages (k_cache's, any number; at least one); unpaged 1.
  std::int64_t pool_pages(const DecodeArgs& a) const {
    return config_.page_size > 0 && a.k_cache.ndim == 4
               ? std::max<std::int64_t>(1, a.k_cache.size(0))
               : 1;
  }

  std::int64_t pages_per_sequence() const {
    return config_.page_size > 0 ? config_.cache_rows / config_.page_size : 0;
  }

  std::size_t kernel_ws_bytes() const {
    std::size_t n = 0;
    if (builtin_) return n;
    for (const LocalProblem& p : representative_problems()) {
      n = std::max(n, kernel_.workspace_bytes(p));
    }
    return n;
  }

  // Device layouts checked on the host (check_device_layout()): the entry of segments_device that
  // each of the host copy's segments came from, to name it.
  struct DeviceEntries {
    std::vector<std::size_t> of_segment;
  };
  Status check(const DecodeArgs& a) const;
  // The layout: segments, query positions and (paged) the page table.
  Status check_layout(const DecodeArgs& a, std::int64_t pool,
                      const DeviceEntries* device = nullptr) const;
  Status check_pages(const DecodeArgs& a, std::int64_t pool, const DeviceEntries* device) const;

  DecodeConfig config_;
  Communicator& comm_;
  LocalAttention& kernel_;
  DType acc_ = DType::kFloat32;
  bool builtin_ = false;  // the built-in kernel runs every step, the LocalAttention none
  std::int64_t auto_builtin_keys_ = -1;  // the built-in kernel runs steps of at most these keys
  std::int64_t slots_ = 0, rows_cap_ = 0;
  std::size_t q_rep_ = 0, o_part_ = 0, lse_part_ = 0, lse_open_ = 0, table_offset_ = 0, pages_ = 0,
              send_ = 0, recv_ = 0, kernel_ws_ = 0, device_parts_ = 0;
  std::size_t o_acc_bytes_ = 0, part_bytes_ = 0, workspace_bytes_ = 0;
  std::vector<std::int32_t> table_;  // host copy of one call's VarlenRows
};

// A paged cache's table: its size, and the pages of every segment row inside the pool.
Status DecodePlan::check_pages(const DecodeArgs& a, std::int64_t pool,
                               const DeviceEntries* device) const {
  constexpr std::string_view api = kForward;
  const std::int64_t B = config_.batch, n = pages_per_sequence(), P = config_.page_size;
  if (a.page_table.size() != static_cast<std::size_t>(B * n)) {
    return arg_error(api, "page_table", "has the wrong length", a.page_table.size(),
                     str_cat("batch * cache_rows / page_size = ", B, " * ", n, " = ", B * n,
                             " entries (page_size = ", P, ")"));
  }
  // One unsigned maximum per entry, which vectorises (a long cache has many pages); the first bad
  // entry is then looked for and named.
  const auto in_pool = [pool](std::int32_t page) {
    return static_cast<std::uint32_t>(page) < static_cast<std::uint64_t>(pool);
  };
  for (std::int64_t b = 0; b < B; ++b) {
    for (const CacheSegment& s : segments_of(a, b)) {
      if (s.rows == 0) continue;
      const std::int32_t* const table = a.page_table.data() + b * n;
      const std::int64_t first = s.row / P, last = (s.row + s.rows - 1) / P + 1;
      std::uint32_t most = 0;
      // (Indexed: GCC 12 vectorises this loop, not the same loop over span iterators.)
      for (std::int64_t p = first; p < last; ++p) {
        most = std::max(most, static_cast<std::uint32_t>(table[p]));
      }
      if (most < static_cast<std::uint64_t>(pool)) continue;
      const std::int64_t p = std::find_if_not(table + first, table + last, in_pool) - table;
      return arg_error(
          api, str_cat(device ? "page_table_device[" : "page_table[", b, " * ", n, " + ", p, "]"),
          str_cat("is not a page of the pool (it holds rows [", p * P, ", ", (p + 1) * P,
                  ") of sequence ", b, ", which a segment uses)"),
          a.page_table[static_cast<std::size_t>(b * n + p)],
          str_cat("[0, ", pool, ") (k_cache.shape[0] pages)"));
    }
  }
  return Status::ok();
}

Status DecodePlan::check_layout(const DecodeArgs& a, std::int64_t pool,
                                const DeviceEntries* device) const {
  constexpr std::string_view api = kForward;
  const std::int64_t B = config_.batch;
  // A device layout's entries by (sequence, index) of segments_device.
  auto segment_name = [&](std::size_t at) {
    if (device == nullptr) return str_cat("segments[", at, "]");
    const std::size_t e = device->of_segment[at],
                      S = static_cast<std::size_t>(config_.max_segments);
    return str_cat("segments_device[", e / S, "][", e % S, "]");
  };
  const std::string_view positions = device ? "query_positions_device" : "query_positions";
  if (!a.segment_offsets.empty()) {
    const auto& so = a.segment_offsets;
    if (so.size() != static_cast<std::size_t>(B) + 1) {
      return arg_error(api, "segment_offsets", "has the wrong length", so.size(),
                       str_cat("batch + 1 = ", B + 1, " entries (or none)"));
    }
    const auto last = static_cast<std::int64_t>(a.segments.size());
    for (std::size_t i = 0; i < so.size(); ++i) {
      const bool ok = i == 0 ? so[0] == 0 : so[i] >= so[i - 1];
      if (!ok || (i + 1 == so.size() && so[i] != last)) {
        return arg_error(api, str_cat("segment_offsets[", i, "]"), "is out of order", so[i],
                         str_cat("0 first, ascending, segments.size() = ", last, " last"));
      }
    }
  }
  if (!a.query_positions.empty() && a.query_positions.size() != static_cast<std::size_t>(B)) {
    return arg_error(api, "query_positions", "has the wrong length", a.query_positions.size(),
                     str_cat("batch = ", B, " entries (or none)"));
  }
  const std::int64_t layouts = a.segment_offsets.empty() ? 1 : B;
  for (std::int64_t b = 0; b < layouts; ++b) {
    const std::span<const CacheSegment> segs = segments_of(a, b);
    const std::string of = a.segment_offsets.empty() ? "" : str_cat(" of sequence ", b);
    if (segs.size() > static_cast<std::size_t>(config_.max_segments)) {
      return arg_error(api, str_cat("segments", of), "are too many", segs.size(),
                       str_cat("at most max_segments = ", config_.max_segments));
    }
    std::int64_t end = 0;
    for (std::size_t i = 0; i < segs.size(); ++i) {
      const CacheSegment& s = segs[i];
      const std::size_t at = static_cast<std::size_t>(&s - a.segments.data());
      if (s.rows < 0 || s.row < end || s.row + s.rows > config_.cache_rows) {
        return arg_error(api, segment_name(at), str_cat("lies outside the free cache rows", of),
                         str_cat("rows [", s.row, ", ", s.row + s.rows, ")"),
                         str_cat("a range inside [", end, ", ", config_.cache_rows,
                                 ") (ascending, not overlapping the previous segment)"));
      }
      if (s.position < 0) {
        return arg_error(api, str_cat(segment_name(at), ".position"), "is negative", s.position,
                         ">= 0");
      }
      end = s.row + s.rows;
    }
  }
  if (a.query_position < 0) {
    return arg_error(api, "query_position", "is negative", a.query_position, ">= 0");
  }
  for (std::size_t b = 0; b < a.query_positions.size(); ++b) {
    if (a.query_positions[b] < 0) {
      return arg_error(api, str_cat(positions, "[", b, "]"), "is negative", a.query_positions[b],
                       ">= 0");
    }
  }
  // (After the segments: their rows are inside cache_rows, so their pages inside the table.)
  if (config_.page_size > 0) ULYSSES_RETURN_IF_ERROR(check_pages(a, pool, device));
  return Status::ok();
}

Status DecodePlan::check(const DecodeArgs& a) const {
  constexpr std::string_view api = kForward;
  const AttentionConfig& c = config_.attention;
  const std::int64_t B = config_.batch, T = config_.query_tokens, D = c.head_dim;
  const Device dev = comm_.device();
  ULYSSES_RETURN_IF_ERROR(
      detail::check_view(a.q, "q", {B, T, c.num_heads_q, D}, config_.dtype, dev, true, api));
  const bool paged = config_.page_size > 0;
  const std::int64_t pool = pool_pages(a);
  const std::int64_t units = paged ? pool : B,
                     unit_rows = paged ? config_.page_size : config_.cache_rows;
  ULYSSES_RETURN_IF_ERROR(detail::check_view(
      a.k_cache, "k_cache", {units, unit_rows, c.num_heads_kv, D}, config_.dtype, dev, true, api));
  ULYSSES_RETURN_IF_ERROR(detail::check_view(a.v_cache, "v_cache",
                                             {units, unit_rows, c.num_heads_kv, c.value_dim()},
                                             config_.dtype, dev, true, api));
  ULYSSES_RETURN_IF_ERROR(detail::check_view(a.o, "o", {B, T, c.num_heads_q, c.value_dim()},
                                             config_.dtype, dev, true, api));
  if (!a.lse.empty_view()) {
    ULYSSES_RETURN_IF_ERROR(
        detail::check_view(a.lse, "lse", {B, c.num_heads_q, T}, DType::kFloat32, dev, false, api));
  }
  if (c.sinks) {
    ULYSSES_RETURN_IF_ERROR(
        detail::check_view(a.sinks, "sinks", {c.num_heads_q}, DType::kFloat32, dev, true, api));
  } else if (!a.sinks.empty_view()) {
    return arg_error(api, "sinks", "is given but attention.sinks is false", a.sinks.to_string(),
                     "an empty view");
  }
  if (units > 1) {
    // The kernel sees the cache as one run of rows: each sequence (or page) a whole number of rows
    // apart.
    const std::string_view unit = paged ? "page" : "sequence";
    const std::string_view bound = paged ? "page_size" : "cache_rows";
    const std::int64_t ks = a.k_cache.stride(1), m = ks > 0 ? a.k_cache.stride(0) / ks : 0;
    for (const TensorView* t : {&a.k_cache, &a.v_cache}) {
      const std::int64_t s1 = t->stride(1), s0 = t->stride(0);
      if (s1 <= 0 || s0 % s1 != 0 || s0 / s1 != m || m < unit_rows) {
        return arg_error(api, t == &a.k_cache ? "k_cache.strides[0]" : "v_cache.strides[0]",
                         str_cat("is not a whole number of rows apart from the next ", unit),
                         str_cat(s0, " (row stride ", s1, ")"),
                         str_cat("m * strides[1] with the same m >= ", bound, " = ", unit_rows,
                                 " for k_cache and v_cache"));
      }
    }
  }
  if (!paged && B > 1) {
    const std::int64_t m = a.k_cache.stride(0) / a.k_cache.stride(1);
    // Row numbers of that run are int32 (VarlenRows).
    if ((B - 1) * m + config_.cache_rows > std::numeric_limits<std::int32_t>::max()) {
      return arg_error(api, "k_cache.strides[0]", "puts the last sequence's rows beyond int32",
                       str_cat((B - 1) * m + config_.cache_rows, " rows (", m,
                               " rows from one sequence to the next)"),
                       str_cat("(batch - 1) * strides[0] / strides[1] + cache_rows <= ",
                               std::numeric_limits<std::int32_t>::max()));
    }
  }
  if (!paged && (!a.page_table.empty() || a.page_table_device != nullptr)) {
    return arg_error(api, a.page_table.empty() ? "page_table_device" : "page_table",
                     "is given but page_size is 0 (an unpaged cache)", "a table",
                     "none, or DecodeConfig::page_size > 0");
  }
  if (!config_.device_layout) {
    for (const auto& [given, name] :
         {std::pair{a.segments_device != nullptr, "segments_device"},
          {a.query_positions_device != nullptr, "query_positions_device"}}) {
      if (given) {
        return arg_error(api, name, "is given but device_layout is false", "a pointer",
                         "nullptr, or DecodeConfig::device_layout = true");
      }
    }
    ULYSSES_RETURN_IF_ERROR(check_layout(a, pool));
  } else {
    // The layout is on the device; the host fields that would describe it stay empty.
    for (const auto& [given, name] : {std::pair{!a.segments.empty(), "segments"},
                                      {!a.segment_offsets.empty(), "segment_offsets"},
                                      {!a.query_positions.empty(), "query_positions"},
                                      {!a.page_table.empty(), "page_table"}}) {
      if (given) {
        return arg_error(api, name, "is given but device_layout reads the layout on the device",
                         "a host span",
                         "empty (segments_device, query_positions_device, page_table_device)");
      }
    }
    for (const auto& [missing, name] :
         {std::pair{a.segments_device == nullptr, "segments_device"},
          {a.query_positions_device == nullptr, "query_positions_device"},
          {paged && a.page_table_device == nullptr, "page_table_device"}}) {
      if (missing) {
        return arg_error(api, name, "is null", "nullptr",
                         str_cat("device memory of the communicator's device (device_layout",
                                 paged ? ", a paged cache" : "", ")"));
      }
    }
  }
  if (builtin_ && !cache_aligned(a)) {
    const bool k_ok = aligned(a.k_cache);
    const TensorView& t = k_ok ? a.v_cache : a.k_cache;
    return arg_error(api, k_ok ? "v_cache" : "k_cache",
                     "is not aligned for the built-in split-KV kernel's 16-byte loads",
                     t.to_string(),
                     "a 16-byte aligned pointer, row and head strides of whole 16 bytes (the "
                     "built-in kernel runs this plan's pieces)");
  }
  if (workspace_bytes_ > 0 && a.workspace == nullptr) {
    return arg_error(api, "workspace", "is null", "nullptr",
                     str_cat(workspace_bytes_, " bytes (workspace_bytes())"));
  }
  return Status::ok();
}

}  // namespace

std::string_view decode_kernel_name(DecodeKernel k) {
  switch (k) {
    case DecodeKernel::kAuto:
      return "auto";
    case DecodeKernel::kLocal:
      return "local";
    case DecodeKernel::kBuiltIn:
      return "built_in";
  }
  return "unknown";
}

Status DecodeConfig::validate() const {
  constexpr std::string_view api = kConfig;
  ULYSSES_RETURN_IF_ERROR(attention.validate());
  if (cp < 1) return arg_error(api, "cp", "must be positive", cp, ">= 1");
  if (dtype != DType::kFloat64 && dtype != DType::kFloat32 && dtype != DType::kFloat16 &&
      dtype != DType::kBFloat16) {
    return arg_error(api, "dtype", "is not supported", dtype_name(dtype),
                     "fp64, fp32, fp16 or bf16");
  }
  if (batch < 1) return arg_error(api, "batch", "must be positive", batch, ">= 1");
  if (query_tokens < 1) {
    return arg_error(api, "query_tokens", "must be positive", query_tokens, ">= 1");
  }
  if (cache_rows < 1) return arg_error(api, "cache_rows", "must be positive", cache_rows, ">= 1");
  if (max_segments < 1) {
    return arg_error(api, "max_segments", "must be positive", max_segments, ">= 1");
  }
  if (min_split_rows < 1) {
    return arg_error(api, "min_split_rows", "must be positive", min_split_rows, ">= 1");
  }
  if (max_splits < 1) return arg_error(api, "max_splits", "must be positive", max_splits, ">= 1");
  if (split_kernel != DecodeKernel::kAuto && split_kernel != DecodeKernel::kLocal &&
      split_kernel != DecodeKernel::kBuiltIn) {
    return arg_error(api, "split_kernel", "is not a DecodeKernel", static_cast<int>(split_kernel),
                     "auto, local or built_in");
  }
  if (page_size < 0) return arg_error(api, "page_size", "is negative", page_size, ">= 0");
  if (page_size > std::numeric_limits<std::int32_t>::max()) {
    return arg_error(api, "page_size", "is too large", page_size,
                     str_cat("at most ", std::numeric_limits<std::int32_t>::max()));
  }
  if (device_layout && split_kernel == DecodeKernel::kLocal) {
    return arg_error(api, "split_kernel", "cannot run a device layout (device_layout = true)",
                     "local", "auto or built_in (the built-in kernel reads the layout's slots)");
  }
  if (page_size > 0 && cache_rows % page_size != 0) {
    return arg_error(api, "cache_rows", "is not a whole number of pages", cache_rows,
                     str_cat("a multiple of page_size = ", page_size));
  }
  const std::int64_t widest = std::max(attention.head_dim, attention.value_dim());
  for (const auto& [what, rows, heads] :
       {std::tuple{"batch * query_tokens * num_heads_q * max(head_dim, head_dim_v)", query_tokens,
                   attention.num_heads_q},
        std::tuple{"batch * cache_rows * num_heads_kv * max(head_dim, head_dim_v)", cache_rows,
                   attention.num_heads_kv}}) {
    if (const auto over =
            detail::product_over({batch, rows, heads, widest}, detail::kMaxTensorElements)) {
      return arg_error(
          api, what, "is too large", *over,
          str_cat("at most 2^48 = ", detail::kMaxTensorElements, " elements per tensor"));
    }
  }
  // Rows the kernel addresses with int32 (VarlenRows): the pieces' query copies and the cache.
  constexpr std::int64_t kInt32 = std::numeric_limits<std::int32_t>::max();
  const std::int64_t q_rows_max = kInt32 / std::max(1, attention.num_heads_q);
  if (const auto over =
          detail::product_over({batch, piece_slots(*this), query_tokens}, q_rows_max)) {
    return arg_error(api, "batch * (max_splits + 3 max_segments) * query_tokens",
                     "is too large for int32 row offsets", *over,
                     str_cat("at most ", q_rows_max, " (int32 / num_heads_q)"));
  }
  if (const auto over = detail::product_over({batch, cache_rows}, kInt32)) {
    return arg_error(api, "batch * cache_rows", "is too large for int32 row offsets", *over,
                     str_cat("at most ", kInt32));
  }
  return Status::ok();
}

Result<std::unique_ptr<DistributedDecode>> DistributedDecode::create(const DecodeConfig& config,
                                                                     Communicator& comm,
                                                                     LocalAttention& kernel) {
  Status local = config.validate();
  if (local.is_ok() && comm.size() != config.cp) {
    local = arg_error(kCreate, "cp", "differs from the communicator's size", config.cp,
                      str_cat(comm.size(), " (comm.size())"));
  }
  if (local.is_ok() && kernel.device() != comm.device()) {
    local = arg_error(kCreate, "kernel", "runs on another device than the communicator",
                      kernel.device().to_string(), comm.device().to_string());
  }
  std::unique_ptr<DecodePlan> plan;
  if (local.is_ok()) {
    plan = std::make_unique<DecodePlan>(config, comm, kernel);
    const std::string builtin_why = plan->builtin_unsupported();
    // What only the built-in kernel runs: refused where it cannot, else it runs every step.
    auto builtin_only = [&](const std::string& what) {
      if (builtin_why.empty()) {
        plan->run_builtin_only();
        return Status::ok();
      }
      return unsupported(
          str_cat(kCreate, ": ", what,
                  " needs the built-in split-KV kernel, which does not run here: ", builtin_why));
    };
    if (config.device_layout) {
      // The device plans the built-in kernel's slots (validate() refused split_kernel local).
      local = builtin_only("device_layout = true");
    } else if (config.page_size > 0) {
      // Only the built-in kernel reads pages.
      if (config.split_kernel == DecodeKernel::kLocal) {
        local = unsupported(str_cat(kCreate, ": page_size = ", config.page_size,
                                    " (a paged cache) needs split_kernel = auto or built_in: ",
                                    "split_kernel = local reads the cache through the "
                                    "LocalAttention ",
                                    kernel.name(), ", which takes rows, not pages"));
      } else {
        local = builtin_only(str_cat("page_size = ", config.page_size, " (a paged cache)"));
      }
    } else if (config.split_kernel == DecodeKernel::kBuiltIn) {
      if (!builtin_why.empty()) {
        local = unsupported(str_cat(kCreate,
                                    ": split_kernel = built_in, but the built-in split-KV "
                                    "kernel does not run here: ",
                                    builtin_why));
      }
    } else {
      // Can the LocalAttention run every piece? auto falls back to the built-in kernel if not.
      Status pieces = kernel.provides_lse()
                          ? Status::ok()
                          : unsupported(str_cat(kCreate, ": kernel ", kernel.name(),
                                                " provides no softmax statistics (LSE), which "
                                                "decoding needs to merge the pieces of the cache"));
      for (const LocalProblem& p : plan->representative_problems()) {
        if (!pieces.is_ok()) break;
        pieces = kernel.check_support(p);
      }
      if (!pieces.is_ok() && config.split_kernel == DecodeKernel::kAuto && builtin_why.empty()) {
        plan->run_builtin_only();
      } else {
        local = pieces;
        if (pieces.is_ok() && config.split_kernel == DecodeKernel::kAuto && builtin_why.empty() &&
            kernel.name() == detail::kCudnnKernelName) {
          plan->run_builtin_on_short_steps(kernels::split_kv_auto_keys(comm.device().index));
        }
      }
    }
  }
  const AttentionConfig& a = config.attention;
  const std::array<std::int64_t, 21> fields = {
      0x554c5944,  // "ULYD": catches ranks running different library builds
      static_cast<std::int64_t>(config.dtype),
      config.cp,
      config.batch,
      config.query_tokens,
      config.cache_rows,
      config.max_segments,
      config.min_split_rows,
      config.max_splits,
      a.num_heads_q,
      a.num_heads_kv,
      a.head_dim,
      a.value_dim(),
      a.softmax_scale ? static_cast<std::int64_t>(std::bit_cast<std::uint32_t>(*a.softmax_scale))
                      : -1,
      a.causal ? 1 : 0,
      a.window_left,
      a.window_right,
      a.sinks ? 1 : 0,
      static_cast<std::int64_t>(config.split_kernel),
      config.page_size,
      config.device_layout ? 1 : 0};
  static constexpr std::array<std::string_view, 21> kNames = {
      "format",       "dtype",          "cp",           "batch",       "query_tokens", "cache_rows",
      "max_segments", "min_split_rows", "max_splits",   "num_heads_q", "num_heads_kv", "head_dim",
      "head_dim_v",   "softmax_scale",  "causal",       "window_left", "window_right", "sinks",
      "split_kernel", "page_size",      "device_layout"};
  ULYSSES_RETURN_IF_ERROR(parallel::agree_on_fields(fields, kNames, comm, local, kCreate));
  return std::unique_ptr<DistributedDecode>(std::move(plan));
}

}  // namespace ulysses
