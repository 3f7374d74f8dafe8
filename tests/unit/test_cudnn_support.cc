// What the cuDNN backend accepts (attention/cudnn_support.h), for cuDNN versions and GPU
// architectures this machine does not have: every rule refuses what it must with a message naming
// the feature and the version or GPU, and accepts the boundary case just inside it.
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "attention/cudnn_support.h"

namespace ulysses::detail {
namespace {

constexpr CudnnTarget kHopper919{91900, 9}, kAmpere919{91900, 8};

LocalProblem problem(AttentionConfig c, std::int64_t B = 1, std::int64_t S = 256,
                     bool varlen = false, DType dtype = DType::kBFloat16) {
  if (c.num_heads_q == 0) c.num_heads_q = c.num_heads_kv = 4;
  if (c.head_dim == 0) c.head_dim = 128;
  return LocalProblem::unsharded(c, dtype, B, S, varlen);
}

// Both directions: OK, or Unsupported with every `words` in the message.
void expect_refused(const Status& s, std::initializer_list<const char*> words) {
  EXPECT_EQ(s.code(), StatusCode::kUnsupported) << s.to_string();
  for (const char* w : words) EXPECT_NE(s.message().find(w), std::string::npos) << s.message();
}

TEST(CudnnSupport, HeadDimsAreMultiplesOf8UpTo256) {
  for (int d = 8; d <= 256; d += 8) {
    for (CudnnTarget t : {kHopper919, kAmpere919}) {
      EXPECT_TRUE(cudnn_forward_support(problem({.head_dim = d}), t).is_ok()) << d;
    }
  }
  for (int d : {4, 36, 100, 252}) {
    expect_refused(cudnn_forward_support(problem({.head_dim = d}), kHopper919),
                   {"head_dim", std::to_string(d).c_str(), "multiple of 8 up to 256"});
  }
  // Past the library's own limit the config itself is invalid, for every kernel.
  const Status s = cudnn_forward_support(problem({.head_dim = 264}), kHopper919);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  EXPECT_NE(s.message().find("head_dim"), std::string::npos) << s.message();
}

TEST(CudnnSupport, BackwardPast128NeedsHopper) {
  const LocalProblem p = problem({.head_dim = 136, .causal = true});
  expect_refused(cudnn_backward_support(p, kAmpere919),
                 {"head_dim 136", "compute capability 8", "up to 128", "training = false"});
  EXPECT_TRUE(cudnn_forward_support(p, kAmpere919).is_ok());
  EXPECT_TRUE(cudnn_backward_support(problem({.head_dim = 128}), kAmpere919).is_ok());
  for (int cc : {9, 10, 12}) {
    EXPECT_TRUE(cudnn_backward_support(problem({.head_dim = 256}), {91900, cc}).is_ok()) << cc;
  }
}

TEST(CudnnSupport, FeaturesNameTheCudnnVersionTheyNeed) {
  const LocalProblem packed = problem({}, 1, 256, true);
  expect_refused(cudnn_forward_support(packed, {90400, 9}), {"packed", "9.5", "90400"});
  EXPECT_TRUE(cudnn_forward_support(packed, {90500, 9}).is_ok());
  // Sinks need no version: cuDNN never sees them (the backend folds them into O and the LSE and
  // computes dSinks itself), so they run wherever the rest of the call does.
  const LocalProblem sinks = problem({.sinks = true});
  EXPECT_TRUE(cudnn_forward_support(sinks, {90000, 9}).is_ok());
  EXPECT_TRUE(cudnn_backward_support(sinks, {90000, 9}).is_ok());
  const LocalProblem packed_sinks = problem({.sinks = true}, 1, 256, true);
  expect_refused(cudnn_forward_support(packed_sinks, {90400, 9}), {"packed", "9.5", "90400"});
  EXPECT_TRUE(cudnn_forward_support(packed_sinks, {90500, 9}).is_ok());
  EXPECT_TRUE(cudnn_backward_support(packed_sinks, {90500, 9}).is_ok());
  EXPECT_TRUE(cudnn_backward_support(packed_sinks, kHopper919).is_ok());
}

TEST(CudnnSupport, PackedBackwardPast128NeedsCudnn919) {
  // cuDNN 9.14 returned wrong gradients for these (measured on H200); 9.19 right.
  for (int d : {136, 192, 256}) {
    const LocalProblem p = problem({.head_dim = d}, 1, 256, true);
    expect_refused(cudnn_backward_support(p, {91400, 9}),
                   {"packed", std::to_string(d).c_str(), "9.19", "91400", "training = false"});
    EXPECT_TRUE(cudnn_forward_support(p, {91400, 9}).is_ok()) << d;
    EXPECT_TRUE(cudnn_backward_support(p, {91900, 9}).is_ok()) << d;
  }
  EXPECT_TRUE(cudnn_backward_support(problem({.head_dim = 128}, 1, 256, true), {91400, 9}).is_ok());
  EXPECT_TRUE(cudnn_backward_support(problem({.head_dim = 256}), {91400, 9}).is_ok());  // dense
}

// head_dim_v != head_dim (MLA: 192 with 128): dense and packed, both ways, on Hopper (packed
// backward: cuDNN 9.19, head_dim up to 192); before Hopper both dims up to 128.
TEST(CudnnSupport, ValueHeadDimsThatDiffer) {
  const LocalProblem mla = problem({.head_dim = 192, .head_dim_v = 128, .causal = true});
  EXPECT_TRUE(cudnn_forward_support(mla, kHopper919).is_ok());
  EXPECT_TRUE(cudnn_backward_support(mla, kHopper919).is_ok());
  expect_refused(cudnn_forward_support(mla, kAmpere919),
                 {"head_dim 192", "head_dim_v 128", "compute capability 8", "up to 128"});
  const LocalProblem small = problem({.head_dim = 128, .head_dim_v = 64});
  EXPECT_TRUE(cudnn_forward_support(small, kAmpere919).is_ok());
  EXPECT_TRUE(cudnn_backward_support(small, kAmpere919).is_ok());
  expect_refused(cudnn_backward_support(problem({.head_dim = 64, .head_dim_v = 136}), kAmpere919),
                 {"head_dim 136", "compute capability 8"});
  for (int dv : {4, 100, 260}) {
    const Status s = cudnn_forward_support(problem({.head_dim = 64, .head_dim_v = dv}), kHopper919);
    EXPECT_NE(s.code(), StatusCode::kOk) << dv;
    EXPECT_NE(s.message().find("head_dim_v"), std::string::npos) << s.message();
  }
  const LocalProblem packed = problem({.head_dim = 192, .head_dim_v = 128}, 1, 256, true);
  EXPECT_TRUE(cudnn_forward_support(packed, kHopper919).is_ok());
  EXPECT_TRUE(cudnn_backward_support(packed, kHopper919).is_ok());
  const LocalProblem packed_small = problem({.head_dim = 64, .head_dim_v = 128}, 1, 256, true);
  EXPECT_TRUE(cudnn_backward_support(packed_small, kAmpere919).is_ok());
  // cuDNN 9.14 returned wrong dK and dV for it; a dense call is not held to that.
  expect_refused(cudnn_backward_support(packed_small, {91400, 9}),
                 {"packed", "head_dim_v 128 != head_dim 64", "9.19", "91400", "training = false"});
  EXPECT_TRUE(
      cudnn_backward_support(problem({.head_dim = 64, .head_dim_v = 128}), {91400, 9}).is_ok());
  // head_dim past 192 (cuDNN 9.19: wrong dQ and dK at 256 with 72, 80, 96); forward runs, and
  // dense calls and narrower Q and K (head_dim_v 256, dims not multiples of 16) take it.
  for (int dv : {32, 72, 128}) {
    const LocalProblem wide_q = problem({.head_dim = 256, .head_dim_v = dv}, 1, 256, true);
    expect_refused(cudnn_backward_support(wide_q, kHopper919),
                   {"packed", "head_dim 256 past 192", "91900", "training = false"});
    EXPECT_TRUE(cudnn_forward_support(wide_q, kHopper919).is_ok()) << dv;
    EXPECT_TRUE(
        cudnn_backward_support(problem({.head_dim = 256, .head_dim_v = dv}), kHopper919).is_ok())
        << dv;
  }
  for (auto [d, dv] : {std::pair{64, 256}, std::pair{192, 72}, std::pair{72, 64}}) {
    EXPECT_TRUE(
        cudnn_backward_support(problem({.head_dim = d, .head_dim_v = dv}, 1, 256, true), kHopper919)
            .is_ok())
        << d << " " << dv;
  }
}

TEST(CudnnSupport, DtypesAndStagedSums) {
  expect_refused(cudnn_forward_support(problem({}, 1, 256, false, DType::kFloat32), kHopper919),
                 {"dtype fp32", "fp16 or bf16"});
  LocalProblem p = problem({});
  p.accumulate_dq = true;
  expect_refused(cudnn_forward_support(p, kHopper919), {"accumulate_dq", "fp32 dq"});
  p.grad_q_fp32 = true;
  EXPECT_TRUE(cudnn_forward_support(p, kHopper919).is_ok());
  p.accumulate_dkv = true;
  expect_refused(cudnn_forward_support(p, kHopper919), {"accumulate_dkv", "fp32"});
  p.grad_kv_dtype = DType::kFloat32;
  EXPECT_TRUE(cudnn_forward_support(p, kHopper919).is_ok());
  LocalProblem packed = problem({}, 1, 256, true);
  packed.out_fp32 = true;
  expect_refused(cudnn_forward_support(packed, kHopper919), {"fp32 dq or o", "cu_seqlens"});
  packed.varlen_rows = true;  // ring blocks of packed sequences stage o in fp32: fine
  EXPECT_TRUE(cudnn_forward_support(packed, kHopper919).is_ok());
}

TEST(CudnnSupport, MaskBandsInCudnnBounds) {
  // Causal: keys up to the diagonal; a block diagonal_offset rows below it sees that many more.
  LocalProblem p = problem({.causal = true});
  p.diagonal_offset = 64;
  CudnnBand b = cudnn_band(p);
  EXPECT_TRUE(b.has_right && !b.has_left && b.ok);
  EXPECT_EQ(b.right, 64);
  // window_left w keeps keys j > i - (w + 1); the offset moves the left edge the other way.
  p = problem({.window_left = 100, .window_right = 3});
  p.diagonal_offset = 40;
  b = cudnn_band(p);
  EXPECT_TRUE(b.has_right && b.has_left && b.ok);
  EXPECT_EQ(b.right, 43);
  EXPECT_EQ(b.left, 61);
  // A block wholly above a causal diagonal has no visible key: cuDNN cannot express it.
  p = problem({.causal = true});
  p.diagonal_offset = -1;
  EXPECT_FALSE(cudnn_band(p).ok);
  expect_refused(cudnn_forward_support(p, kHopper919), {"diagonal offset -1", "right bound >= 0"});
  // And one wholly past a window's left edge.
  p = problem({.window_left = 10});
  p.diagonal_offset = 11;
  EXPECT_FALSE(cudnn_band(p).ok);
  expect_refused(cudnn_forward_support(p, kHopper919), {"left bound >= 1"});
  p.diagonal_offset = 10;
  EXPECT_TRUE(cudnn_forward_support(p, kHopper919).is_ok());
}

// cuDNN's SDPA backward builds no s_q = s_kv = 1 graph; the backend runs such calls through its
// own kernel (kernels::cuda::one_key_backward), so they are taken (a ring step at a window's edge).
// The visible (query, key) pairs of a dense problem, in the call's rows shifted by (q0, kv0).
std::set<std::pair<std::int64_t, std::int64_t>> visible(const LocalProblem& p, std::int64_t q0 = 0,
                                                        std::int64_t kv0 = 0) {
  const AttentionConfig& c = p.config;
  std::set<std::pair<std::int64_t, std::int64_t>> out;
  for (std::int64_t i = 0; i < p.seqlen; ++i) {
    const std::int64_t pos = i + p.diagonal_offset;
    for (std::int64_t j = 0; j < p.kv_len(); ++j) {
      if (c.causal && j > pos) continue;
      if (c.window_left >= 0 && j < pos - c.window_left) continue;
      if (c.window_right >= 0 && j > pos + c.window_right) continue;
      out.insert({q0 + i, kv0 + j});
    }
  }
  return out;
}

// The bands of a backward under a window that is not causal hold every visible pair once, each
// band ends at a causal diagonal (or is the short tail), and cuDNN takes every band.
TEST(CudnnSupport, WindowsWithoutCausalRunBackwardAsCausalBands) {
  int checked = 0;
  for (std::int64_t S : {2, 3, 7, 16, 33}) {
    for (int wl : {-1, 0, 1, 5, 40}) {
      for (int wr : {1, 2, 6, 15, 32, 50}) {
        const LocalProblem p = problem({.window_left = wl, .window_right = wr}, 1, S);
        const std::vector<CausalBand> bands = causal_bands(p);
        ASSERT_FALSE(bands.empty()) << S << " " << wl << " " << wr;
        std::set<std::pair<std::int64_t, std::int64_t>> seen;
        std::size_t total = 0;
        for (const CausalBand& b : bands) {
          const auto v = visible(b.problem, b.q0, b.kv0);
          total += v.size();
          seen.insert(v.begin(), v.end());
          EXPECT_TRUE(b.problem.partial_keys && b.problem.grad_q_fp32);
          EXPECT_EQ(b.problem.grad_kv_dtype, DType::kFloat32);
          EXPECT_FALSE(b.problem.config.sinks);
          EXPECT_EQ(b.problem.config.window_right, -1);
          EXPECT_LE(b.q0 + b.problem.seqlen, S);
          EXPECT_LE(b.kv0 + b.problem.kv_len(), S);
          // Only the tail (at most wr - 1 rows) may leave cuDNN every tile.
          if (!b.problem.config.causal) {
            EXPECT_LT(b.problem.seqlen, wr);
          }
          EXPECT_TRUE(cudnn_forward_support(b.problem, kHopper919).is_ok());
          EXPECT_TRUE(cudnn_backward_support(b.problem, kHopper919).is_ok());
        }
        EXPECT_EQ(seen, visible(p)) << "S " << S << " window " << wl << "," << wr;
        EXPECT_EQ(total, seen.size())
            << "a pair in two bands: S " << S << " window " << wl << "," << wr;
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 150);
  // Problems the backward runs whole: causal, no right window, an offset, packed, forward-only.
  EXPECT_TRUE(causal_bands(problem({.causal = true, .window_left = 4})).empty());
  EXPECT_TRUE(causal_bands(problem({.window_left = 4})).empty());
  LocalProblem offset = problem({.window_left = 4, .window_right = 3});
  offset.diagonal_offset = 2;
  offset.seqlen_kv = 258;
  EXPECT_TRUE(causal_bands(offset).empty());
  LocalProblem corner = problem({.window_left = 4, .window_right = 3}, 1, 256, true);
  corner.varlen_rows = corner.bottom_right = true;
  EXPECT_TRUE(causal_bands(corner).empty());
  LocalProblem forward_only = problem({.window_left = 4, .window_right = 3});
  forward_only.backward = false;
  EXPECT_TRUE(causal_bands(forward_only).empty());
}

// The visible (query row, key row) pairs of packed sequences (top-left, positions inside each).
std::set<std::pair<std::int64_t, std::int64_t>> visible_packed(const AttentionConfig& c,
                                                               std::span<const std::int32_t> rows,
                                                               std::size_t n) {
  std::set<std::pair<std::int64_t, std::int64_t>> out;
  for (std::size_t s = 0; s < n; ++s) {
    if (rows[n + s] == 0 || rows[3 * n + s] == 0) continue;
    LocalProblem one = problem(c, 1, rows[n + s]);
    one.seqlen_kv = rows[3 * n + s];
    const auto v = visible(one, rows[s], rows[2 * n + s]);
    out.insert(v.begin(), v.end());
  }
  return out;
}

// Packed calls (cu_seqlens, or VarlenRows with rectangles and gaps) under a window without causal:
// each sequence's pieces of the bands hold its visible pairs once, each band's pieces ascend
// without overlap on both sides (what VarlenRows requires), fit the table the backend sizes (at
// most one piece per query row), and only the short bands leave cuDNN every tile.
TEST(CudnnSupport, PackedWindowsWithoutCausalRunBackwardAsCausalBands) {
  std::mt19937 rng(20261203);
  int checked = 0;
  for (int draw = 0; draw < 300; ++draw) {
    const int wl = std::uniform_int_distribution<int>(-1, 12)(rng);
    const int wr = std::uniform_int_distribution<int>(1, 12)(rng);
    const bool rows_given = draw % 2 == 1;
    const int n = std::uniform_int_distribution<int>(0, 5)(rng);
    std::vector<std::int32_t> qb, ql, kb, kl;
    std::int32_t q = 0, k = 0;
    for (int s = 0; s < n; ++s) {
      auto len = [&] { return std::uniform_int_distribution<std::int32_t>(0, 30)(rng); };
      const std::int32_t a = len();
      const std::int32_t b = rows_given ? len() : a;
      if (rows_given) {  // gaps between pieces, on each side
        q += std::uniform_int_distribution<std::int32_t>(0, 3)(rng);
        k += std::uniform_int_distribution<std::int32_t>(0, 3)(rng);
      } else {
        k = q;
      }
      qb.push_back(q);
      ql.push_back(a);
      kb.push_back(k);
      kl.push_back(b);
      q += a;
      k += b;
    }
    LocalProblem p = problem({.window_left = wl, .window_right = wr}, 1, std::max(q, 1), true);
    p.varlen_rows = rows_given;
    p.seqlen_kv = rows_given ? std::max(k, 1) : 0;
    const VarlenRows seqs{qb, ql, kb, kl};
    const std::vector<CausalBand> bands = causal_bands(p, seqs);
    ASSERT_FALSE(bands.empty());
    EXPECT_EQ(bands.front().kind, CausalBand::kLower);
    std::set<std::pair<std::int64_t, std::int64_t>> seen;
    std::size_t total = 0;
    for (const CausalBand& b : bands) {
      ASSERT_EQ(b.rows.size() % 4, 0u);
      const std::size_t m = b.rows.size() / 4;
      EXPECT_LE(m, static_cast<std::size_t>(p.seqlen));
      EXPECT_TRUE(b.kind == CausalBand::kLower || m > 0) << "an empty band kept";
      const std::span<const std::int32_t> r = b.rows;
      for (std::size_t s = 0; s < m; ++s) {
        EXPECT_GT(r[m + s], 0);
        EXPECT_GT(r[3 * m + s], 0);
        EXPECT_LE(r[s] + r[m + s], p.seqlen);
        EXPECT_LE(r[2 * m + s] + r[3 * m + s], p.kv_len());
        if (s > 0) {
          EXPECT_GE(r[s], r[s - 1] + r[m + s - 1]);
          EXPECT_GE(r[2 * m + s], r[2 * m + s - 1] + r[3 * m + s - 1]);
        }
        if (!b.problem.config.causal) {
          EXPECT_LT(r[m + s], wr);
        }
      }
      EXPECT_TRUE(b.problem.varlen && b.problem.varlen_rows && !b.problem.bottom_right);
      EXPECT_TRUE(b.problem.partial_keys && b.problem.grad_q_fp32);
      EXPECT_EQ(b.problem.seqlen, p.seqlen);
      EXPECT_EQ(b.problem.kv_len(), p.kv_len());
      EXPECT_EQ(b.problem.config.window_right, -1);
      EXPECT_TRUE(cudnn_forward_support(b.problem, kHopper919).is_ok());
      EXPECT_TRUE(cudnn_backward_support(b.problem, kHopper919).is_ok());
      const auto v = visible_packed(b.problem.config, r, m);
      total += v.size();
      seen.insert(v.begin(), v.end());
    }
    const std::vector<std::int32_t> all = [&] {
      std::vector<std::int32_t> x = qb;
      for (const auto* row : {&ql, &kb, &kl}) x.insert(x.end(), row->begin(), row->end());
      return x;
    }();
    EXPECT_EQ(seen, visible_packed(p.config, all, qb.size())) << "draw " << draw << [&] {
      std::ostringstream o;
      o << " wl " << wl << " wr " << wr << " rows";
      for (auto x : all) o << " " << x;
      for (const CausalBand& b : bands) {
        o << "\n band";
        for (auto x : b.rows) o << " " << x;
      }
      return o.str();
    }();
    EXPECT_EQ(total, seen.size()) << "a pair in two bands: draw " << draw;
    ++checked;
  }
  EXPECT_EQ(checked, 300);
}

TEST(CudnnSupport, OneByOneDenseCallsAreTaken) {
  LocalProblem p = problem({.causal = true}, 1, 1);
  EXPECT_TRUE(cudnn_backward_support(p, kHopper919).is_ok());
  EXPECT_TRUE(cudnn_forward_support(p, kHopper919).is_ok());
  p.config.window_left = 5;
  p.diagonal_offset = 5;
  EXPECT_TRUE(cudnn_backward_support(p, kHopper919).is_ok());
  EXPECT_TRUE(cudnn_forward_support(p, kHopper919).is_ok());
}

TEST(CudnnSupport, DenseWindowsNeedNoMoreQueryThanKeyRows) {
  // cuDNN refuses a left bound with max_s_q > max_s_kv unless a padding mask is set (the packed
  // path's): dense calls with more queries than keys under a window are refused at plan time.
  LocalProblem p = problem({.causal = true, .window_left = 41}, 2, 41);
  p.seqlen_kv = 28;
  p.diagonal_offset = 28;
  expect_refused(cudnn_forward_support(p, kHopper919), {"window_left 41", "41 x 28"});
  p.seqlen_kv = 41;
  EXPECT_TRUE(cudnn_forward_support(p, kHopper919).is_ok());
  p.seqlen_kv = 28;
  p.config.window_left = -1;  // causal alone: no left bound
  EXPECT_TRUE(cudnn_forward_support(p, kHopper919).is_ok());
  p.config.window_left = 41;  // packed: the padding mask lifts the rule
  p.batch = 1;
  p.varlen = p.varlen_rows = true;
  const Status packed = cudnn_forward_support(p, kHopper919);
  EXPECT_TRUE(packed.is_ok()) << packed.to_string();
}

// Where the packed backward's workspace follows the tokens (else the backend bounds its calls'
// graph rows): head_dim and head_dim_v multiples of 16 from cuDNN 9.6, except Ampere/Ada and
// SM 12.x from 9.18.1; Hopper and Blackwell (10.x) keep it.
TEST(CudnnSupport, PackedWorkspaceFollowsTokensWhereTheFrontendTrustsIt) {
  EXPECT_TRUE(cudnn_packed_workspace_follows_tokens(128, 128, kHopper919));
  EXPECT_TRUE(cudnn_packed_workspace_follows_tokens(64, 64, {90600, 9}));
  EXPECT_FALSE(cudnn_packed_workspace_follows_tokens(64, 64, {90500, 9}));
  for (int d : {8, 24, 40, 72, 120, 136, 248}) {
    EXPECT_FALSE(cudnn_packed_workspace_follows_tokens(d, d, kHopper919)) << d;
  }
  for (int d : {16, 80, 96, 112, 192, 256}) {
    EXPECT_TRUE(cudnn_packed_workspace_follows_tokens(d, d, kHopper919)) << d;
  }
  EXPECT_TRUE(cudnn_packed_workspace_follows_tokens(128, 128, {91800, 8}));
  EXPECT_FALSE(cudnn_packed_workspace_follows_tokens(128, 128, {91801, 8}));
  EXPECT_FALSE(cudnn_packed_workspace_follows_tokens(128, 128, kAmpere919));
  EXPECT_FALSE(cudnn_packed_workspace_follows_tokens(128, 128, {91900, 12}));
  EXPECT_TRUE(cudnn_packed_workspace_follows_tokens(128, 128, {91900, 10}));
  // head_dim_v counts the same (MLA).
  EXPECT_TRUE(cudnn_packed_workspace_follows_tokens(192, 128, kHopper919));
  EXPECT_FALSE(cudnn_packed_workspace_follows_tokens(256, 72, kHopper919));
  EXPECT_FALSE(cudnn_packed_workspace_follows_tokens(72, 64, kHopper919));
}

TEST(CudnnSupport, BackwardThatNoSplitFitsIsRefusedUpFront) {
  // One KV head's O: 1.1M rows x 16 query heads x 128 = 2.25e9 elements, past 2^31.
  LocalProblem p = problem({.num_heads_q = 16, .num_heads_kv = 1, .causal = true}, 1, 1100000);
  expect_refused(cudnn_backward_support(p, kHopper919),
                 {"one KV head of one batch entry", "1100000 query rows", "2^31", "91900"});
  EXPECT_TRUE(cudnn_forward_support(p, kHopper919).is_ok());  // forward has no such limit
  // 512 entries of one 40000-row head (2.6e9) split by entry, with sinks too (dSinks come from
  // kernels::sink_grad over the whole call, not from the parts).
  for (bool sinks : {false, true}) {
    const AttentionConfig one_head{
        .num_heads_q = 1, .num_heads_kv = 1, .head_dim = 128, .sinks = sinks};
    EXPECT_TRUE(cudnn_backward_support(problem(one_head, 512, 40000), kHopper919).is_ok()) << sinks;
  }
  // Shapes that split (by batch, by heads, by batch with sinks) are accepted.
  EXPECT_TRUE(
      cudnn_backward_support(
          problem({.num_heads_q = 256, .num_heads_kv = 64, .sinks = true}, 2, 40000), kHopper919)
          .is_ok());
  EXPECT_TRUE(cudnn_backward_support(problem({.num_heads_q = 256, .num_heads_kv = 64}, 1, 70000),
                                     kHopper919)
                  .is_ok());
}

}  // namespace
}  // namespace ulysses::detail
