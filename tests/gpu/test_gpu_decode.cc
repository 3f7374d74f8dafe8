// DistributedDecode on one GPU: P virtual ranks (device loopback), cuDNN on each, against the FP64
// reference over the whole cache (STYLE.md's 2x rule: plain = the reference in the run's dtype).
//
// The prefill is cut into P contiguous shards; each step appends its new tokens on rank
// step % P as one more segment. Ragged cases give every sequence of the batch its own length
// (DecodeArgs::segment_offsets and query_positions). Every cache row outside the step's segments is
// NaN (later steps' tokens included), so reading a row the plan should not turns the output NaN.
// Several steps run on one plan, and every rank's O and LSE must be the same bits. With the
// built-in kernel each case also runs on the same caches paged (pages of a size drawn from the
// seed, in shuffled order in a pool, page tables given on the host or also on the device by turns,
// split_kernel = auto): O and LSE must be the unpaged run's bits.
#include <gtest/gtest.h>

#include <array>
#include <thread>

#include "common/check.h"
#include "common/paged_cache.h"
#include "common/test_util.h"
#include "gpu/gpu_util.h"
#include "kernels/split_kv.h"
#include "ulysses/decode.h"
#include "ulysses/gpu.h"
#include "ulysses/reference.h"

namespace ulysses {
namespace {

using testing::DeviceBytes;
using testing::DeviceTensor;
using testing::HostTensor;

struct Case {
  std::string name;
  int P;
  std::int64_t B, T;
  int Hq, Hkv, D;
  DType dtype = DType::kBFloat16;
  bool causal = true;
  int wl = -1;
  bool sinks = false;
  std::int64_t prefill = 5000;
  int steps = 3;
  std::int64_t min_split_rows = 512;
  int max_splits = 8;
  bool ragged = false;  // sequence b's prefill is prefill - b * prefill / (2 B)
  int Dv = 0;           // head_dim_v (0: D)

  int dv() const { return Dv > 0 ? Dv : D; }

  std::int64_t prefill_of(std::int64_t b) const {
    return ragged ? prefill - b * prefill / (2 * B) : prefill;
  }
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }
}  // namespace
void PrintTo(DecodeKernel k, std::ostream* os) { *os << decode_kernel_name(k); }
namespace {

AttentionConfig attention(const Case& c) {
  return {.num_heads_q = c.Hq,
          .num_heads_kv = c.Hkv,
          .head_dim = c.D,
          .head_dim_v = c.Dv,
          .causal = c.causal,
          .window_left = c.wl,
          .sinks = c.sinks};
}

// The reference, sequence b over positions [0, p0[b] + T): O in `dtype` (fp64: the truth), LSE
// fp32.
void reference(const Case& c, const HostTensor& q, const HostTensor& k, const HostTensor& v,
               const HostTensor& sinks, const std::vector<std::int64_t>& p0, DType dtype,
               HostTensor& o, HostTensor& lse) {
  const HostTensor qd = testing::convert(q, dtype), kd = testing::convert(k, dtype),
                   vd = testing::convert(v, dtype);
  o = HostTensor(dtype, {c.B, c.T, c.Hq, c.dv()});
  lse = HostTensor(DType::kFloat32, {c.B, c.Hq, c.T});
  for (std::int64_t b = 0; b < c.B; ++b) {
    LocalProblem p = LocalProblem::unsharded(attention(c), dtype, 1, c.T);
    p.seqlen_kv = p0[static_cast<std::size_t>(b)] + c.T;
    p.diagonal_offset = p0[static_cast<std::size_t>(b)];
    auto seq = [&](const HostTensor& t) { return testing::batch_entry(t.view, b); };
    TensorView kk = seq(kd), vv = seq(vd);
    kk.shape[1] = vv.shape[1] = p.seqlen_kv;
    LocalForwardArgs f{.q = seq(qd), .k = kk, .v = vv, .o = seq(o), .lse = seq(lse)};
    if (c.sinks) f.sinks = sinks.view;
    ASSERT_TRUE(reference_forward(p, f).is_ok());
  }
}

// Each case runs with the pieces in cuDNN (local) and in the built-in split-KV kernel.
class DeviceLoopbackDecode : public ::testing::TestWithParam<std::tuple<Case, DecodeKernel>> {};

TEST_P(DeviceLoopbackDecode, WithinTwiceThePlainError) {
  ULYSSES_REQUIRE_GPUS(1);
  const Case c = std::get<0>(GetParam());
  const DecodeKernel split_kernel = std::get<1>(GetParam());
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::int64_t total = c.prefill + c.steps * c.T;
  HostTensor k(c.dtype, {c.B, total, c.Hkv, c.D}), v(c.dtype, {c.B, total, c.Hkv, c.dv()}),
      sinks(DType::kFloat32, {c.Hq});
  testing::fill_uniform(k, rng, -1.0, 1.0);
  testing::fill_uniform(v, rng, -1.0, 1.0);
  testing::fill_uniform(sinks, rng, -1.0, 2.0);

  // Rank r, sequence b: prefill shard [r L_b / P, (r + 1) L_b / P) at rows 0.., then the tokens of
  // the steps it takes, each step one more segment. segs[step][rank]: every sequence's segments
  // (ragged: one after another, offs[step][rank] their offsets; else sequence 0's, shared).
  const auto P = static_cast<std::size_t>(c.P);
  const auto B = static_cast<std::size_t>(c.B);
  const std::size_t layouts = c.ragged ? B : 1;
  using Segs = std::vector<CacheSegment>;
  std::vector<std::vector<Segs>> segs(static_cast<std::size_t>(c.steps), std::vector<Segs>(P));
  std::vector<std::vector<std::vector<std::int64_t>>> offs(
      static_cast<std::size_t>(c.steps), std::vector<std::vector<std::int64_t>>(P));
  // row_of[r][b][p]: the cache row of position p of sequence b on rank r (-1: not there).
  std::vector<std::vector<std::vector<std::int64_t>>> row_of(
      P, std::vector<std::vector<std::int64_t>>(B, std::vector<std::int64_t>(total, -1)));
  std::vector<std::vector<std::int64_t>> used(P, std::vector<std::int64_t>(B, 0));
  std::vector<std::vector<Segs>> held(P, std::vector<Segs>(B));
  for (int r = 0; r < c.P; ++r) {
    const auto ru = static_cast<std::size_t>(r);
    for (std::size_t b = 0; b < B; ++b) {
      const std::int64_t L = c.prefill_of(static_cast<std::int64_t>(b));
      const std::int64_t first = L * r / c.P, end = L * (r + 1) / c.P;
      held[ru][b].push_back({0, end - first, first});
      for (std::int64_t p = first; p < end; ++p) row_of[ru][b][p] = p - first;
      used[ru][b] = end - first;
    }
  }
  int max_segments = 0;
  for (int s = 0; s < c.steps; ++s) {
    const auto r = static_cast<std::size_t>(s % c.P);
    for (std::size_t b = 0; b < B; ++b) {
      const std::int64_t p0 = c.prefill_of(static_cast<std::int64_t>(b)) + s * c.T;
      held[r][b].push_back({used[r][b] + 1, c.T, p0});  // one NaN row between segments
      for (std::int64_t i = 0; i < c.T; ++i) row_of[r][b][p0 + i] = used[r][b] + 1 + i;
      used[r][b] += 1 + c.T;
    }
    for (std::size_t ri = 0; ri < P; ++ri) {
      Segs& flat = segs[static_cast<std::size_t>(s)][ri];
      std::vector<std::int64_t>& o = offs[static_cast<std::size_t>(s)][ri];
      o.push_back(0);
      for (std::size_t b = 0; b < layouts; ++b) {
        flat.insert(flat.end(), held[ri][b].begin(), held[ri][b].end());
        o.push_back(static_cast<std::int64_t>(flat.size()));
        max_segments = std::max(max_segments, static_cast<int>(held[ri][b].size()));
      }
    }
  }
  std::int64_t cap = 0;
  for (const auto& u : used) cap = std::max(cap, *std::max_element(u.begin(), u.end()));

  // Each rank's cache: every row it will ever hold, NaN elsewhere.
  std::vector<HostTensor> kc, vc;
  for (std::size_t r = 0; r < P; ++r) {
    kc.emplace_back(c.dtype, std::initializer_list<std::int64_t>{c.B, cap, c.Hkv, c.D});
    vc.emplace_back(c.dtype, std::initializer_list<std::int64_t>{c.B, cap, c.Hkv, c.dv()});
    testing::poison(kc.back());
    testing::poison(vc.back());
    for (std::int64_t b = 0; b < c.B; ++b) {
      for (std::int64_t p = 0; p < total; ++p) {
        const std::int64_t row = row_of[r][static_cast<std::size_t>(b)][p];
        if (row < 0) continue;
        for (int h = 0; h < c.Hkv; ++h) {
          for (int d = 0; d < c.D; ++d) {
            kc.back().set(kc.back().view.offset({b, row, h, d}), k.at(k.view.offset({b, p, h, d})));
          }
          for (int d = 0; d < c.dv(); ++d) {
            vc.back().set(vc.back().view.offset({b, row, h, d}), v.at(v.view.offset({b, p, h, d})));
          }
        }
      }
    }
  }
  std::vector<HostTensor> qs;
  for (int s = 0; s < c.steps; ++s) {
    qs.emplace_back(c.dtype, std::initializer_list<std::int64_t>{c.B, c.T, c.Hq, c.D});
    testing::fill_uniform(qs.back(), rng, -1.0, 1.0);
  }

  const DecodeConfig cfg{.attention = attention(c),
                         .cp = c.P,
                         .dtype = c.dtype,
                         .batch = c.B,
                         .query_tokens = c.T,
                         .cache_rows = cap,
                         .max_segments = max_segments,
                         .min_split_rows = c.min_split_rows,
                         .max_splits = c.max_splits,
                         .split_kernel = split_kernel};
  // The built-in kernel's run again on paged caches.
  const bool paged = split_kernel == DecodeKernel::kBuiltIn;
  const std::int64_t page = std::array<std::int64_t, 4>{1, 5, 16, 64}[seed % 4];
  DecodeConfig paged_cfg = cfg;
  paged_cfg.split_kernel = DecodeKernel::kAuto;
  paged_cfg.page_size = page;
  paged_cfg.cache_rows = (cap + page - 1) / page * page;
  std::vector<testing::PagedCache> pools;
  for (std::size_t r = 0; paged && r < P; ++r) {
    // A page holds keys where it starts below the rows the rank ever uses.
    auto holds = [&](std::int64_t b, std::int64_t p) {
      return p * page < used[r][static_cast<std::size_t>(b)];
    };
    pools.push_back(testing::page_out(kc[r], vc[r], page, holds, rng));
  }
  SCOPED_TRACE(paged ? detail::str_cat("paged run: page_size ", page) : "no paged run");
  auto comms = create_device_loopback_group(c.P, 0);
  ASSERT_TRUE(comms.is_ok()) << comms.status().to_string();
  // got[step][rank]: O and LSE; got_paged: the same, paged.
  std::vector<std::vector<std::pair<HostTensor, HostTensor>>> got(
      static_cast<std::size_t>(c.steps), std::vector<std::pair<HostTensor, HostTensor>>(P)),
      got_paged = got;
  std::vector<Status> st(P);
  std::vector<std::thread> threads;
  for (int r = 0; r < c.P; ++r) {
    threads.emplace_back([&, r] {
      const auto ri = static_cast<std::size_t>(r);
      st[ri] = [&]() -> Status {
        cudaSetDevice(0);
        auto kernel = create_cudnn_attention(0);
        if (!kernel.is_ok()) return kernel.status();
        for (const bool in_pages : {false, true}) {
          if (in_pages && !paged) break;
          auto plan =
              DistributedDecode::create(in_pages ? paged_cfg : cfg, *(*comms)[ri], **kernel);
          if (!plan.is_ok()) return plan.status();
          DeviceBytes ws((*plan)->workspace_bytes());
          DeviceTensor kd = DeviceTensor::of(in_pages ? pools[ri].k : kc[ri]),
                       vd = DeviceTensor::of(in_pages ? pools[ri].v : vc[ri]),
                       sd = DeviceTensor::of(sinks);
          const std::size_t table_bytes = in_pages ? pools[ri].table.size() * 4 : 0;
          DeviceBytes td(table_bytes);
          if (in_pages && cudaMemcpy(td.ptr, pools[ri].table.data(), table_bytes,
                                     cudaMemcpyHostToDevice) != cudaSuccess) {
            return internal_error("page table copy failed");
          }
          for (int s = 0; s < c.steps; ++s) {
            const auto si = static_cast<std::size_t>(s);
            HostTensor o(c.dtype, {c.B, c.T, c.Hq, c.dv()}), lse(DType::kFloat32, {c.B, c.Hq, c.T});
            testing::poison(o);
            testing::poison(lse);
            DeviceTensor qd = DeviceTensor::of(qs[si]), od = DeviceTensor::of(o),
                         ld = DeviceTensor::of(lse);
            std::vector<std::int64_t> positions;
            for (std::int64_t b = 0; b < c.B; ++b) positions.push_back(c.prefill_of(b) + s * c.T);
            DecodeArgs a{.q = qd.view,
                         .k_cache = kd.view,
                         .v_cache = vd.view,
                         .segments = segs[si][ri],
                         .query_position = c.prefill + s * c.T,
                         .o = od.view,
                         .lse = ld.view,
                         .workspace = ws.ptr};
            if (c.ragged) {
              a.segment_offsets = offs[si][ri];
              a.query_positions = positions;
            }
            if (c.sinks) a.sinks = sd.view;
            if (in_pages) {
              a.page_table = pools[ri].table;
              // Odd steps: the table on the device too; even steps: forward() copies it.
              if (s % 2 == 1) a.page_table_device = static_cast<const std::int32_t*>(td.ptr);
            }
            ULYSSES_RETURN_IF_ERROR((*plan)->forward(a, nullptr));
            if (cudaDeviceSynchronize() != cudaSuccess) return internal_error("sync failed");
            (in_pages ? got_paged : got)[si][ri] = {od.download(o), ld.download(lse)};
          }
        }
        return Status::ok();
      }();
    });
  }
  for (auto& t : threads) t.join();
  for (std::size_t r = 0; r < P; ++r)
    ASSERT_TRUE(st[r].is_ok()) << "rank " << r << ": " << st[r].to_string();

  const double ulp = c.dtype == DType::kFloat16 ? 0x1p-10 : 0x1p-7;
  for (int s = 0; s < c.steps; ++s) {
    SCOPED_TRACE("step " + std::to_string(s));
    const auto si = static_cast<std::size_t>(s);
    HostTensor truth_o, truth_lse, plain_o, plain_lse;
    std::vector<std::int64_t> p0;
    for (std::int64_t b = 0; b < c.B; ++b) p0.push_back(c.prefill_of(b) + s * c.T);
    reference(c, qs[si], k, v, sinks, p0, DType::kFloat64, truth_o, truth_lse);
    reference(c, qs[si], k, v, sinks, p0, c.dtype, plain_o, plain_lse);
    for (std::size_t r = 0; r < P; ++r) {
      const auto& [o, lse] = got[si][r];
      EXPECT_EQ(testing::count_nan(o) + testing::count_nan(lse), 0) << "rank " << r;
      EXPECT_TRUE(testing::within_2x_rule(o, plain_o, truth_o, 2 * ulp * testing::max_abs(truth_o)))
          << "O, rank " << r;
      EXPECT_TRUE(testing::within_2x_rule(lse, plain_lse, truth_lse,
                                          0.05 * ulp * testing::max_abs(truth_lse)))
          << "LSE, rank " << r;
      const testing::Mismatch mo = testing::compare_bits(got[si][0].first, o);
      EXPECT_EQ(mo.count, 0) << testing::describe(mo, "O of rank " + std::to_string(r));
      if (paged) {
        const testing::Mismatch po = testing::compare_bits(o, got_paged[si][r].first),
                                pl = testing::compare_bits(lse, got_paged[si][r].second);
        EXPECT_EQ(po.count, 0) << testing::describe(
            po, detail::str_cat("paged O of rank ", r, " (page_size ", page, ") vs unpaged"));
        EXPECT_EQ(pl.count, 0) << testing::describe(
            pl, detail::str_cat("paged LSE of rank ", r, " (page_size ", page, ") vs unpaged"));
      }
    }
  }
}

const std::vector<Case> kCases = {
    Case{"p1_one_token_gqa", 1, 1, 1, 8, 2, 128}, Case{"p2_one_token_batch2", 2, 2, 1, 8, 2, 128},
    Case{"p4_one_token_window_sinks", 4, 1, 1, 8, 2, 128, DType::kBFloat16, true, 1500, true},
    Case{"p2_three_tokens_causal_fp16_d64", 2, 1, 3, 8, 8, 64, DType::kFloat16},
    Case{"p4_five_tokens_window_batch2", 4, 2, 5, 4, 1, 128, DType::kBFloat16, true, 700, true},
    Case{"p2_no_split", 2, 1, 1, 8, 2, 128, DType::kBFloat16, true, -1, false, 5000, 3, 100000, 1},
    // Sequences of different lengths in one batch.
    Case{"p2_one_token_ragged_batch4", 2, 4, 1, 8, 2, 128, DType::kBFloat16, true, -1, false, 5000,
         3, 512, 8, true},
    Case{"p3_four_tokens_window_ragged_batch3", 3, 3, 4, 4, 1, 128, DType::kBFloat16, true, 900,
         true, 3000, 3, 512, 8, true},
    // head_dim_v != head_dim: MLA's 192 / 128, and V wider than Q and K.
    Case{"p2_mla_one_token_gqa_sinks", 2, 2, 1, 8, 2, 192, DType::kBFloat16, true, -1, true, 5000,
         3, 512, 8, false, 128},
    Case{"p3_mla_three_tokens_window_ragged", 3, 3, 3, 8, 1, 192, DType::kBFloat16, true, 700,
         false, 3000, 3, 512, 8, true, 128},
    Case{"p2_wider_v_two_tokens_fp16", 2, 1, 2, 4, 4, 64, DType::kFloat16, true, -1, false, 4000, 3,
         512, 8, false, 128},
    // The built-in kernel's register shapes: 256-wide heads (two loads per lane), 8 and 32
    // query rows per KV head (row blocks of 8), one row (MHA), 8 and 1024 keys per piece,
    // pieces shorter than a CTA's 64 keys per step.
    Case{"p2_d256_gqa_two_tokens", 2, 1, 2, 8, 2, 256},
    Case{"p1_d256_dv128_window", 1, 2, 1, 16, 2, 256, DType::kBFloat16, true, 300, false, 3000, 3,
         512, 8, false, 128},
    Case{"p2_gqa8_sinks_fp16", 2, 1, 1, 16, 2, 128, DType::kFloat16, true, -1, true},
    Case{"p1_mqa_32_rows", 1, 1, 2, 16, 1, 64, DType::kBFloat16, true, 100, false, 2000},
    Case{"p2_mha_one_row", 2, 2, 1, 4, 4, 128, DType::kBFloat16, true, -1, false, 3000},
    Case{"p1_short_pieces", 1, 1, 3, 8, 2, 128, DType::kBFloat16, true, -1, false, 300, 3, 8, 64},
    Case{"p2_not_causal_left_window", 2, 1, 3, 8, 2, 128, DType::kBFloat16, false, 200},
    // Widths that are not whole boxes of the kernel's tensor copies (64 columns): the last box
    // reaches past head_dim (80), or the one box past it (32).
    Case{"p1_d80_two_tokens", 1, 1, 2, 8, 2, 80},
    Case{"p2_d32_mha_fp16", 2, 2, 1, 4, 4, 32, DType::kFloat16, true, -1, false, 3000}};

INSTANTIATE_TEST_SUITE_P(Cases, DeviceLoopbackDecode,
                         ::testing::Combine(::testing::ValuesIn(kCases),
                                            ::testing::Values(DecodeKernel::kLocal,
                                                              DecodeKernel::kBuiltIn)),
                         [](const auto& param_info) {
                           return std::get<0>(param_info.param).name + "_" +
                                  std::string(decode_kernel_name(std::get<1>(param_info.param)));
                         });

// A batch of caches that lie more than 2^31 elements apart (a slice of one large cache pool, or
// long caches): the kernel's ragged offsets reach past int32. One rank, two sequences whose K and
// V rows are interleaved in one buffer ([k | v] per row, as a fused KV cache holds them), the
// second sequence's rows starting past element 2^31. The step must give the bits of the same step
// with the two caches adjacent, and match the FP64 reference by the 2x rule.
TEST(DeviceLoopbackDecodeLarge, BatchOfCachesPast2To31Elements) {
  ULYSSES_REQUIRE_GPUS(1);
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Case c{"", 1, 2, 1, 8, 2, 128};
  c.prefill = 3000;
  const std::int64_t L = c.prefill + c.T;  // rows per sequence: positions 0 .. prefill
  const std::int64_t C = 2 * c.Hkv * c.D;  // elements per row: k | v
  HostTensor k(c.dtype, {c.B, L, c.Hkv, c.D}), v = k, q(c.dtype, {c.B, c.T, c.Hq, c.D}),
                                               sinks(DType::kFloat32, {c.Hq});
  for (HostTensor* t : {&k, &v, &q}) testing::fill_uniform(*t, rng, -1.0, 1.0);
  for (const DecodeKernel split_kernel : {DecodeKernel::kLocal, DecodeKernel::kBuiltIn}) {
    SCOPED_TRACE(std::string("split_kernel ") + std::string(decode_kernel_name(split_kernel)));
    const DecodeConfig cfg{.attention = attention(c),
                           .cp = 1,
                           .dtype = c.dtype,
                           .batch = c.B,
                           .query_tokens = c.T,
                           .cache_rows = L,
                           .max_segments = 1,
                           .min_split_rows = c.min_split_rows,
                           .max_splits = c.max_splits,
                           .split_kernel = split_kernel};
    auto comms = create_device_loopback_group(1, 0);
    ASSERT_TRUE(comms.is_ok()) << comms.status().to_string();
    auto kernel = create_cudnn_attention(0);
    ASSERT_TRUE(kernel.is_ok()) << kernel.status().to_string();
    auto plan = DistributedDecode::create(cfg, *(*comms)[0], **kernel);
    ASSERT_TRUE(plan.is_ok()) << plan.status().to_string();
    DeviceBytes ws((*plan)->workspace_bytes());
    const std::vector<CacheSegment> segs = {{.row = 0, .rows = L, .position = 0}};
    // m: rows from one sequence's cache to the next.
    auto step = [&](std::int64_t m, HostTensor& o, HostTensor& lse) {
      const std::size_t row_bytes = static_cast<std::size_t>(C) * 2;
      const std::size_t bytes = static_cast<std::size_t>((c.B - 1) * m + L) * row_bytes;
      DeviceBytes buf(bytes);
      ASSERT_CUDA(cudaMemset(buf.ptr, 0xFF, bytes));  // NaN wherever no key lies
      const std::size_t w = static_cast<std::size_t>(c.Hkv * c.D) * 2;
      for (std::int64_t b = 0; b < c.B; ++b) {
        char* seq = static_cast<char*>(buf.ptr) + static_cast<std::size_t>(b * m) * row_bytes;
        const std::size_t from = static_cast<std::size_t>(b * L) * w;
        ASSERT_CUDA(cudaMemcpy2D(seq, row_bytes, k.storage.data() + from, w, w,
                                 static_cast<std::size_t>(L), cudaMemcpyHostToDevice));
        ASSERT_CUDA(cudaMemcpy2D(seq + w, row_bytes, v.storage.data() + from, w, w,
                                 static_cast<std::size_t>(L), cudaMemcpyHostToDevice));
      }
      auto cache = [&](std::size_t at) {
        return TensorView::strided(static_cast<char*>(buf.ptr) + at, c.dtype, {c.B, L, c.Hkv, c.D},
                                   {m * C, C, c.D, 1}, Device::cuda(0));
      };
      o = HostTensor(c.dtype, {c.B, c.T, c.Hq, c.D});
      lse = HostTensor(DType::kFloat32, {c.B, c.Hq, c.T});
      testing::poison(o);
      testing::poison(lse);
      DeviceTensor qd = DeviceTensor::of(q), od = DeviceTensor::of(o), ld = DeviceTensor::of(lse);
      const Status st = (*plan)->forward({.q = qd.view,
                                          .k_cache = cache(0),
                                          .v_cache = cache(w),
                                          .segments = segs,
                                          .query_position = c.prefill,
                                          .o = od.view,
                                          .lse = ld.view,
                                          .workspace = ws.ptr},
                                         nullptr);
      ASSERT_TRUE(st.is_ok()) << st.to_string();
      ASSERT_CUDA(cudaDeviceSynchronize());
      o = od.download(o);
      lse = ld.download(lse);
    };
    HostTensor o_near, lse_near, o_far, lse_far;
    step(L, o_near, lse_near);
    if (HasFatalFailure()) return;
    const std::int64_t m_far = (std::int64_t{1} << 31) / C + 1;
    step(m_far, o_far, lse_far);
    if (HasFatalFailure()) return;
    EXPECT_BITWISE_EQ(o_near, o_far, "O");
    EXPECT_BITWISE_EQ(lse_near, lse_far, "LSE");
    HostTensor truth_o, truth_lse, plain_o, plain_lse;
    const std::vector<std::int64_t> p0(static_cast<std::size_t>(c.B), c.prefill);
    reference(c, q, k, v, sinks, p0, DType::kFloat64, truth_o, truth_lse);
    reference(c, q, k, v, sinks, p0, c.dtype, plain_o, plain_lse);
    const double ulp = 0x1p-7;
    EXPECT_EQ(testing::count_nan(o_far) + testing::count_nan(lse_far), 0);
    EXPECT_TRUE(
        testing::within_2x_rule(o_far, plain_o, truth_o, 2 * ulp * testing::max_abs(truth_o)))
        << "O";
    EXPECT_TRUE(testing::within_2x_rule(lse_far, plain_lse, truth_lse,
                                        0.05 * ulp * testing::max_abs(truth_lse)))
        << "LSE";
  }
}

// One step of a one-rank plan over cache rows [0, L) (positions 0..L-1, the query at L - 1) with
// min_split_rows = split_rows; O of c's shape, poisoned before the step.
Status one_step(const Case& c, std::int64_t L, std::int64_t split_rows, DecodeKernel split_kernel,
                Communicator& comm, LocalAttention& kernel, const TensorView& q,
                const TensorView& k, const TensorView& v, HostTensor& o) {
  const DecodeConfig cfg{.attention = attention(c),
                         .cp = 1,
                         .dtype = c.dtype,
                         .cache_rows = L,
                         .max_segments = 1,
                         .min_split_rows = split_rows,
                         .split_kernel = split_kernel};
  auto plan = DistributedDecode::create(cfg, comm, kernel);
  if (!plan.is_ok()) return plan.status();
  DeviceBytes ws((*plan)->workspace_bytes());
  o = HostTensor(c.dtype, {1, 1, c.Hq, c.D});
  testing::poison(o);
  DeviceTensor od = DeviceTensor::of(o);
  const std::vector<CacheSegment> segs = {{.row = 0, .rows = L, .position = 0}};
  ULYSSES_RETURN_IF_ERROR((*plan)->forward({.q = q,
                                            .k_cache = k,
                                            .v_cache = v,
                                            .segments = segs,
                                            .query_position = L - 1,
                                            .o = od.view,
                                            .workspace = ws.ptr},
                                           nullptr));
  if (cudaDeviceSynchronize() != cudaSuccess) return internal_error("sync failed");
  o = od.download(o);
  return Status::ok();
}

// A cache whose rows do not start on 16-byte boundaries (here: 8 bytes into its buffer). The
// built-in kernel cannot read it with 16-byte loads: built_in names k_cache before any work; auto
// runs the LocalAttention on it (a short step though it is) and so gives what local gives (the same
// status, and the same bits when it runs).
TEST(DeviceLoopbackDecodeAligned, MisalignedCacheFallsBackUnderAuto) {
  ULYSSES_REQUIRE_GPUS(1);
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Case c{"", 1, 1, 1, 8, 2, 128};
  const std::int64_t L = 2000;
  // One row more than the cache, so that the view may start 4 elements in.
  HostTensor k(c.dtype, {1, L + 1, c.Hkv, c.D}), v = k, q(c.dtype, {1, 1, c.Hq, c.D});
  for (HostTensor* t : {&k, &v, &q}) testing::fill_uniform(*t, rng, -1.0, 1.0);
  DeviceTensor kd = DeviceTensor::of(k), vd = DeviceTensor::of(v), qd = DeviceTensor::of(q);
  auto shifted = [&](const DeviceTensor& t) {
    TensorView x = t.view;
    x.data = static_cast<char*>(x.data) + 4 * dtype_size(c.dtype);
    x.shape[1] = L;
    return x;
  };
  auto comms = create_device_loopback_group(1, 0);
  ASSERT_TRUE(comms.is_ok()) << comms.status().to_string();
  auto kernel = create_cudnn_attention(0);
  ASSERT_TRUE(kernel.is_ok()) << kernel.status().to_string();
  auto run = [&](DecodeKernel split_kernel, HostTensor& o) {
    return one_step(c, L, 256, split_kernel, *(*comms)[0], **kernel, qd.view, shifted(kd),
                    shifted(vd), o);
  };

  HostTensor o_builtin, o_auto, o_local;
  const Status builtin = run(DecodeKernel::kBuiltIn, o_builtin);
  EXPECT_EQ(builtin.code(), StatusCode::kInvalidArgument) << builtin.to_string();
  EXPECT_NE(builtin.message().find("k_cache"), std::string::npos) << builtin.message();
  const Status local = run(DecodeKernel::kLocal, o_local);
  const Status autos = run(DecodeKernel::kAuto, o_auto);
  std::cout << "misaligned cache, local: " << local.to_string() << "\n";
  EXPECT_EQ(autos.code(), local.code()) << autos.to_string() << " vs " << local.to_string();
  if (local.is_ok() && autos.is_ok()) {
    EXPECT_BITWISE_EQ(o_local, o_auto, "O");
  }
}

// A LocalAttention that cannot run decoding's pieces (no LSE): auto runs them in the built-in
// kernel instead, so its step gives the bits of split_kernel = built_in with cuDNN's kernel, and
// local is refused naming the LSE.
class NoLseOnDevice final : public LocalAttention {
 public:
  std::string_view name() const override { return "no-lse-device"; }
  Device device() const override { return Device::cuda(0); }
  bool provides_lse() const override { return false; }
  bool supports_backward() const override { return false; }
  Status check_support(const LocalProblem&) const override { return Status::ok(); }
  Status forward(const LocalProblem&, const LocalForwardArgs&, Stream) override {
    return internal_error("NoLseOnDevice::forward must not run");
  }
  Status backward(const LocalProblem&, const LocalBackwardArgs&, Stream) override {
    return internal_error("NoLseOnDevice::backward must not run");
  }
};

TEST(DeviceLoopbackDecodeAuto, FallsBackToTheBuiltInKernel) {
  ULYSSES_REQUIRE_GPUS(1);
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Case c{"", 1, 1, 1, 8, 2, 128};
  const std::int64_t L = 3000;
  HostTensor k(c.dtype, {1, L, c.Hkv, c.D}), v = k, q(c.dtype, {1, 1, c.Hq, c.D});
  for (HostTensor* t : {&k, &v, &q}) testing::fill_uniform(*t, rng, -1.0, 1.0);
  DeviceTensor kd = DeviceTensor::of(k), vd = DeviceTensor::of(v), qd = DeviceTensor::of(q);
  auto comms = create_device_loopback_group(1, 0);
  ASSERT_TRUE(comms.is_ok()) << comms.status().to_string();
  auto cudnn = create_cudnn_attention(0);
  ASSERT_TRUE(cudnn.is_ok()) << cudnn.status().to_string();
  NoLseOnDevice no_lse;
  auto run = [&](DecodeKernel split_kernel, LocalAttention& kernel, HostTensor& o) {
    return one_step(c, L, 512, split_kernel, *(*comms)[0], kernel, qd.view, kd.view, vd.view, o);
  };

  HostTensor o_auto, o_builtin, o_local;
  const Status autos = run(DecodeKernel::kAuto, no_lse, o_auto);
  ASSERT_TRUE(autos.is_ok()) << autos.to_string();
  const Status builtin = run(DecodeKernel::kBuiltIn, **cudnn, o_builtin);
  ASSERT_TRUE(builtin.is_ok()) << builtin.to_string();
  EXPECT_EQ(testing::count_nan(o_auto), 0);
  EXPECT_BITWISE_EQ(o_builtin, o_auto, "O");
  const Status local = run(DecodeKernel::kLocal, no_lse, o_local);
  EXPECT_EQ(local.code(), StatusCode::kUnsupported) << local.to_string();
  EXPECT_NE(local.message().find("LSE"), std::string::npos) << local.message();
}

// Under auto with the cuDNN backend, a step that reads at most kernels::split_kv_auto_keys() keys
// on a rank runs in the built-in kernel, a longer one in cuDNN: on a GPU of up to 4 TB/s every
// step, else those of at most 256k keys. auto's O must be the bits of built_in's at 4k and 256k
// cached keys, and at 320k of built_in's or local's as that rule says. The two kernels' O differ at
// every length, so each comparison tells them apart.
TEST(DeviceLoopbackDecodeAuto, ShortStepsRunTheBuiltInKernelLongOnesCudnn) {
  ULYSSES_REQUIRE_GPUS(1);
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Case c{"", 1, 1, 1, 8, 2, 128};
  auto comms = create_device_loopback_group(1, 0);
  ASSERT_TRUE(comms.is_ok()) << comms.status().to_string();
  auto cudnn = create_cudnn_attention(0);
  ASSERT_TRUE(cudnn.is_ok()) << cudnn.status().to_string();
  const std::int64_t auto_keys = kernels::split_kv_auto_keys(0);
  std::cout << "auto runs the built-in kernel on device 0 for steps of at most " << auto_keys
            << " keys\n";
  for (const std::int64_t L : {std::int64_t{4096}, std::int64_t{262144}, std::int64_t{327680}}) {
    SCOPED_TRACE("cache of " + std::to_string(L) + " keys");
    HostTensor k(c.dtype, {1, L, c.Hkv, c.D}), v = k, q(c.dtype, {1, 1, c.Hq, c.D});
    for (HostTensor* t : {&k, &v, &q}) testing::fill_uniform(*t, rng, -1.0, 1.0);
    DeviceTensor kd = DeviceTensor::of(k), vd = DeviceTensor::of(v), qd = DeviceTensor::of(q);
    HostTensor o_auto, o_builtin, o_local;
    for (const auto& [split_kernel, o] : {std::pair{DecodeKernel::kAuto, &o_auto},
                                          {DecodeKernel::kBuiltIn, &o_builtin},
                                          {DecodeKernel::kLocal, &o_local}}) {
      const Status st =
          one_step(c, L, 1024, split_kernel, *(*comms)[0], **cudnn, qd.view, kd.view, vd.view, *o);
      ASSERT_TRUE(st.is_ok()) << decode_kernel_name(split_kernel) << ": " << st.to_string();
    }
    EXPECT_GT(testing::compare_bits(o_local, o_builtin).count, 0);
    if (L <= auto_keys) {
      EXPECT_BITWISE_EQ(o_builtin, o_auto, "O");
    } else {
      EXPECT_BITWISE_EQ(o_local, o_auto, "O");
    }
  }
}

// What only the built-in kernel runs (device layouts, paged caches, split_kernel = built_in) is
// refused by create() where that kernel cannot run, naming what asked for it and why, while auto
// on the same heads runs in cuDNN: head_dim 72 is a multiple of 8 (cuDNN runs it), not of 16 (the
// built-in kernel's tiles).
TEST(DeviceLoopbackDecodeBuiltInOnly, RefusedWhereTheBuiltInKernelCannotRun) {
  ULYSSES_REQUIRE_GPUS(1);
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Case c{"", 1, 1, 1, 8, 2, 72};
  const std::int64_t L = 2048;
  auto comms = create_device_loopback_group(1, 0);
  ASSERT_TRUE(comms.is_ok()) << comms.status().to_string();
  auto cudnn = create_cudnn_attention(0);
  ASSERT_TRUE(cudnn.is_ok()) << cudnn.status().to_string();
  const DecodeConfig base{.attention = attention(c),
                          .cp = 1,
                          .dtype = c.dtype,
                          .cache_rows = L,
                          .max_segments = 1,
                          .min_split_rows = 512};
  struct Refused {
    std::string what;
    DecodeConfig config;
  };
  DecodeConfig device_layout = base, paged = base, builtin = base;
  device_layout.device_layout = true;
  paged.page_size = 64;
  builtin.split_kernel = DecodeKernel::kBuiltIn;
  for (const Refused& r :
       {Refused{"device_layout = true", device_layout}, Refused{"page_size = 64", paged},
        Refused{"split_kernel = built_in", builtin}}) {
    SCOPED_TRACE(r.what);
    auto plan = DistributedDecode::create(r.config, *(*comms)[0], **cudnn);
    ASSERT_FALSE(plan.is_ok());
    const Status& st = plan.status();
    EXPECT_EQ(st.code(), StatusCode::kUnsupported) << st.to_string();
    EXPECT_NE(st.message().find(r.what), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("head_dim 72"), std::string::npos) << st.message();
  }

  // auto runs the same heads in cuDNN: O within the 2x rule of the FP64 reference.
  HostTensor k(c.dtype, {1, L, c.Hkv, c.D}), v = k, q(c.dtype, {1, 1, c.Hq, c.D});
  for (HostTensor* t : {&k, &v, &q}) testing::fill_uniform(*t, rng, -1.0, 1.0);
  DeviceTensor kd = DeviceTensor::of(k), vd = DeviceTensor::of(v), qd = DeviceTensor::of(q);
  HostTensor o;
  const Status st =
      one_step(c, L, 512, DecodeKernel::kAuto, *(*comms)[0], **cudnn, qd.view, kd.view, vd.view, o);
  ASSERT_TRUE(st.is_ok()) << st.to_string();
  const std::vector<std::int64_t> p0 = {L - 1};
  HostTensor truth_o, truth_lse, plain_o, plain_lse;
  reference(c, q, k, v, HostTensor{}, p0, DType::kFloat64, truth_o, truth_lse);
  reference(c, q, k, v, HostTensor{}, p0, c.dtype, plain_o, plain_lse);
  EXPECT_EQ(testing::count_nan(o), 0);
  EXPECT_TRUE(testing::within_2x_rule(o, plain_o, truth_o, 2 * 0x1p-7 * testing::max_abs(truth_o)))
      << "O";
}

// Decode steps as CUDA graph replays (DecodeConfig::device_layout): one step captured after an
// eager one, then replayed while every sequence's cache grows, its segments, query position and
// new tokens' q rewritten at the same device addresses before each replay (as a serving engine
// does). Sequence 1's cache is two segments (rows [0, 600) and, 600 rows on, the rest), the others
// one; O is poisoned before each run. A replay must give the bits of an eager step on the same
// layout; with one query token also the bits of the host layout's step (the same pieces in the
// built-in kernel), with three (edges merged in another order) O within one bf16 rounding of it.
struct GraphCase {
  std::string name;
  std::int64_t T;
  int wl = -1;
  bool sinks = false;
  int page = 0;
};
void PrintTo(const GraphCase& c, std::ostream* os) { *os << c.name; }
class DecodeGraphs : public ::testing::TestWithParam<GraphCase> {};

TEST_P(DecodeGraphs, ReplaysFollowTheLayoutInDeviceMemory) {
  ULYSSES_REQUIRE_GPUS(1);
  const GraphCase gc = GetParam();
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Case c{"", 1, 3, gc.T, 8, 2, 128};
  c.wl = gc.wl;
  c.sinks = gc.sinks;
  const std::int64_t cap = 4096, B = c.B, T = c.T;
  constexpr int S = 2, kSteps = 4;
  HostTensor k(c.dtype, {B, cap, c.Hkv, c.D}), v = k, sinks(DType::kFloat32, {c.Hq});
  for (HostTensor* t : {&k, &v}) testing::fill_uniform(*t, rng, -1.0, 1.0);
  testing::fill_uniform(sinks, rng, -1.0, 2.0);
  // Step s: sequence b holds L = 900 + 700 b + 41 T s keys, the last T of them the new tokens'.
  struct Layout {
    std::vector<CacheSegment> segments;
    std::vector<std::int64_t> offsets{0}, positions, device;  // device: [B, S, 3]
    HostTensor q;
  };
  std::vector<Layout> steps(kSteps);
  for (int s = 0; s < kSteps; ++s) {
    Layout& l = steps[static_cast<std::size_t>(s)];
    l.device.assign(static_cast<std::size_t>(B * S * 3), 0);
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t L = 900 + 700 * b + 41 * T * s;
      std::vector<CacheSegment> segs = {{0, L, 0}};
      if (b == 1) segs = {{0, 600, 0}, {1200, L - 600, 600}};
      for (std::size_t i = 0; i < segs.size(); ++i) {
        std::int64_t* e = &l.device[(static_cast<std::size_t>(b) * S + i) * 3];
        e[0] = segs[i].row;
        e[1] = segs[i].rows;
        e[2] = segs[i].position;
      }
      l.segments.insert(l.segments.end(), segs.begin(), segs.end());
      l.offsets.push_back(static_cast<std::int64_t>(l.segments.size()));
      l.positions.push_back(L - T);
    }
    l.q = HostTensor(c.dtype, {B, T, c.Hq, c.D});
    testing::fill_uniform(l.q, rng, -1.0, 1.0);
  }
  testing::PagedCache pages;
  if (gc.page > 0) {
    pages = testing::page_out(
        k, v, gc.page, [](std::int64_t, std::int64_t) { return true; }, rng);
  }
  DeviceTensor kd = DeviceTensor::of(gc.page > 0 ? pages.k : k),
               vd = DeviceTensor::of(gc.page > 0 ? pages.v : v), sd = DeviceTensor::of(sinks),
               qd = DeviceTensor::of(steps[0].q);
  DeviceBytes seg_d(static_cast<std::size_t>(B * S * 3) * 8),
      pos_d(static_cast<std::size_t>(B) * 8),
      table_d(std::max<std::size_t>(1, pages.table.size() * 4));
  if (gc.page > 0) {
    ASSERT_EQ(
        cudaMemcpy(table_d.ptr, pages.table.data(), pages.table.size() * 4, cudaMemcpyHostToDevice),
        cudaSuccess);
  }
  auto comms = create_device_loopback_group(1, 0);
  ASSERT_TRUE(comms.is_ok()) << comms.status().to_string();
  auto cudnn = create_cudnn_attention(0);
  ASSERT_TRUE(cudnn.is_ok()) << cudnn.status().to_string();
  DecodeConfig cfg{.attention = attention(c),
                   .cp = 1,
                   .dtype = c.dtype,
                   .batch = B,
                   .query_tokens = T,
                   .cache_rows = cap,
                   .max_segments = S,
                   .min_split_rows = 256,
                   .max_splits = 8,
                   .split_kernel = DecodeKernel::kBuiltIn,
                   .page_size = gc.page};
  auto host_plan = DistributedDecode::create(cfg, *(*comms)[0], **cudnn);
  ASSERT_TRUE(host_plan.is_ok()) << host_plan.status().to_string();
  cfg.split_kernel = DecodeKernel::kAuto;
  cfg.device_layout = true;
  auto plan = DistributedDecode::create(cfg, *(*comms)[0], **cudnn);
  ASSERT_TRUE(plan.is_ok()) << plan.status().to_string();
  DeviceBytes ws((*plan)->workspace_bytes()), host_ws((*host_plan)->workspace_bytes());
  HostTensor o(c.dtype, {B, T, c.Hq, c.D}), lse(DType::kFloat32, {B, c.Hq, T});
  testing::poison(o);
  testing::poison(lse);
  DeviceTensor od = DeviceTensor::of(o), lsed = DeviceTensor::of(lse);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  DecodeArgs dev{
      .q = qd.view,
      .k_cache = kd.view,
      .v_cache = vd.view,
      .page_table_device = gc.page > 0 ? static_cast<const std::int32_t*>(table_d.ptr) : nullptr,
      .segments_device = static_cast<const std::int64_t*>(seg_d.ptr),
      .query_positions_device = static_cast<const std::int64_t*>(pos_d.ptr),
      .o = od.view,
      .lse = lsed.view,
      .workspace = ws.ptr};
  if (c.sinks) dev.sinks = sd.view;
  // Step s's layout and q into the fixed device buffers (before a run, in stream order).
  auto write_step = [&](int s) {
    const Layout& l = steps[static_cast<std::size_t>(s)];
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(seg_d.ptr, l.device.data(), l.device.size() * 8, cudaMemcpyHostToDevice),
              cudaSuccess);
    ASSERT_EQ(
        cudaMemcpy(pos_d.ptr, l.positions.data(), l.positions.size() * 8, cudaMemcpyHostToDevice),
        cudaSuccess);
    qd.upload(l.q);
    od.upload(o);
    lsed.upload(lse);
  };
  auto results = [&](HostTensor& got_o, HostTensor& got_lse) {
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    got_o = od.download(o);
    got_lse = lsed.download(lse);
  };

  write_step(0);
  ASSERT_TRUE((*plan)->check_device_layout(dev, stream).is_ok());
  const Status eager0 = (*plan)->forward(dev, stream);  // builds nothing, warms up
  ASSERT_TRUE(eager0.is_ok()) << eager0.to_string();
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  const Status captured = (*plan)->forward(dev, stream);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_TRUE(captured.is_ok()) << captured.to_string();
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);

  HostTensor previous;
  for (int s = 1; s < kSteps; ++s) {
    SCOPED_TRACE("step " + std::to_string(s));
    const Layout& l = steps[static_cast<std::size_t>(s)];
    HostTensor replay_o, replay_lse, eager_o, eager_lse, host_o, host_lse;
    write_step(s);
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    results(replay_o, replay_lse);
    write_step(s);
    ASSERT_TRUE((*plan)->check_device_layout(dev, stream).is_ok());
    ASSERT_TRUE((*plan)->forward(dev, stream).is_ok());
    results(eager_o, eager_lse);
    write_step(s);
    DecodeArgs host = dev;
    host.segments_device = host.query_positions_device = nullptr;
    host.page_table_device = nullptr;
    host.segments = l.segments;
    host.segment_offsets = l.offsets;
    host.query_positions = l.positions;
    host.page_table = pages.table;
    host.workspace = host_ws.ptr;
    const Status hs = (*host_plan)->forward(host, stream);
    ASSERT_TRUE(hs.is_ok()) << hs.to_string();
    results(host_o, host_lse);

    EXPECT_EQ(testing::count_nan(replay_o), 0);
    EXPECT_BITWISE_EQ(eager_o, replay_o, "O, replay vs eager");
    EXPECT_BITWISE_EQ(eager_lse, replay_lse, "LSE, replay vs eager");
    if (T == 1) {
      EXPECT_BITWISE_EQ(host_o, eager_o, "O, device layout vs host layout");
      EXPECT_BITWISE_EQ(host_lse, eager_lse, "LSE, device layout vs host layout");
    } else {
      EXPECT_LE(testing::max_abs_diff(host_o, eager_o), 1.0 / 128) << "O vs host layout";
      EXPECT_LE(testing::max_abs_diff(host_lse, eager_lse), 1e-4) << "LSE vs host layout";
    }
    if (s > 1) {
      EXPECT_GT(testing::compare_bits(previous, replay_o).count, 0) << "a stale replay";
    }
    previous = replay_o;
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

INSTANTIATE_TEST_SUITE_P(
    Steps, DecodeGraphs,
    ::testing::Values(
        GraphCase{.name = "one_token_causal", .T = 1},
        GraphCase{
            .name = "one_token_window_sinks_paged", .T = 1, .wl = 1500, .sinks = true, .page = 64},
        GraphCase{.name = "three_tokens_window_sinks", .T = 3, .wl = 700, .sinks = true},
        GraphCase{.name = "three_tokens_paged", .T = 3, .page = 16}),
    [](const auto& param_info) { return param_info.param.name; });

}  // namespace
}  // namespace ulysses
