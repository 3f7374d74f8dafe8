// Device pack/unpack kernels against the host implementation: bit-exact on stamped data, for every
// vector width (row sizes and strides that allow 16, 8, 4, 2 bytes), dense and strided heads, short
// and long segments, with poisoned outputs (and poisoned gaps between strided rows, which must
// stay untouched). The element-wise kernels (zero, copy, convert, accumulate) against the host
// operations, likewise over whole poisoned buffers.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "gpu/gpu_util.h"
#include "kernels/attention_aux.h"
#include "kernels/elementwise.h"
#include "kernels/layout.h"
#include "kernels/merge.h"

namespace ulysses {
namespace {

using testing::DeviceTensor;
using testing::HostTensor;

struct Geo {
  int P;
  std::int64_t Sl, B;
  int H, heads, C, c_begin;
  std::int64_t D;
  DType dtype;
  int head_pad = 0;  // extra heads in the activation (non-contiguous head slices)
  int row_pad = 0;   // elements after each head's row in the activation (strided heads)
  int unit = 0;      // message channel width when a head spans D / unit channels (0: D)
};

// [B, Sl, H, D] view of a [B, Sl, H, D + row_pad] buffer.
TensorView rows_of(void* data, DType dtype, std::int64_t B, std::int64_t Sl, std::int64_t H,
                   std::int64_t D, std::int64_t row_pad, Device device) {
  const std::int64_t Dp = D + row_pad;
  return TensorView::strided(data, dtype, {B, Sl, H, D}, {Sl * H * Dp, H * Dp, Dp, 1}, device);
}

HostTensor stamped(DType dtype, std::initializer_list<std::int64_t> shape, int salt) {
  HostTensor t(dtype, shape);
  for (std::int64_t i = 0; i < t.numel(); ++i)
    t.set(i, static_cast<double>((i * 7 + salt) % 97 - 48));
  return t;
}

class GpuLayout : public ::testing::TestWithParam<Geo> {};

TEST_P(GpuLayout, PackAndUnpackMatchHostBitwise) {
  ULYSSES_REQUIRE_GPUS(1);
  const Geo g = GetParam();
  const int H = g.H + g.head_pad;
  std::vector<int> begin;
  for (int p = 0; p < g.P; ++p) begin.push_back((p * g.heads) % (g.H - g.heads + 1));
  const std::int64_t Dp = g.D + g.row_pad;
  const std::int64_t U = g.unit > 0 ? g.unit : g.D;
  HostTensor act = stamped(g.dtype, {g.B, g.Sl, H, Dp}, 3);
  const TensorView act_rows = rows_of(act.view.data, g.dtype, g.B, g.Sl, H, g.D, g.row_pad, {});
  HostTensor msg(g.dtype, {g.P, g.Sl, g.B, g.C, U});
  testing::poison(msg);
  HostTensor msg_host = msg;
  kernels::MessageLayout lh{msg_host.view.data, g.dtype, g.P, g.Sl, g.B, g.C, U};
  ASSERT_TRUE(kernels::pack_heads(act_rows, begin, g.heads, lh, g.c_begin, nullptr).is_ok());

  DeviceTensor act_d = DeviceTensor::of(act), msg_d = DeviceTensor::of(msg);
  const TensorView act_d_rows =
      rows_of(act_d.ptr, g.dtype, g.B, g.Sl, H, g.D, g.row_pad, Device::cuda(0));
  kernels::MessageLayout ld{msg_d.ptr, g.dtype, g.P, g.Sl, g.B, g.C, U};
  Status s = kernels::pack_heads(act_d_rows, begin, g.heads, ld, g.c_begin, nullptr);
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_BITWISE_EQ(msg_host, msg_d.download(msg), "pack");

  // Unpack into a poisoned activation: distinct heads per peer (identity routing) for a
  // permutation. The whole buffer is compared, so the gaps between strided rows must keep their
  // poison.
  std::vector<int> disjoint;
  for (int p = 0; p < g.P; ++p) disjoint.push_back(p * g.heads);
  const std::int64_t Hout = g.P * g.heads;
  HostTensor out(g.dtype, {g.B, g.Sl, Hout, Dp});
  testing::poison(out);
  HostTensor src = stamped(g.dtype, {g.P, g.Sl, g.B, g.C, U}, 11);
  HostTensor out_host = out;
  kernels::MessageLayout sh{src.view.data, g.dtype, g.P, g.Sl, g.B, g.C, U};
  ASSERT_TRUE(kernels::unpack_heads(
                  sh, g.c_begin, disjoint, g.heads,
                  rows_of(out_host.view.data, g.dtype, g.B, g.Sl, Hout, g.D, g.row_pad, {}),
                  nullptr)
                  .is_ok());
  DeviceTensor out_d = DeviceTensor::of(out), src_d = DeviceTensor::of(src);
  kernels::MessageLayout sd{src_d.ptr, g.dtype, g.P, g.Sl, g.B, g.C, U};
  ASSERT_TRUE(kernels::unpack_heads(
                  sd, g.c_begin, disjoint, g.heads,
                  rows_of(out_d.ptr, g.dtype, g.B, g.Sl, Hout, g.D, g.row_pad, Device::cuda(0)),
                  nullptr)
                  .is_ok());
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(testing::count_nan(out_host), g.B * g.Sl * Hout * g.row_pad);
  EXPECT_BITWISE_EQ(out_host, out_d.download(out), "unpack");
}

INSTANTIATE_TEST_SUITE_P(
    Widths, GpuLayout,
    ::testing::Values(Geo{2, 5, 2, 8, 4, 12, 0, 64, DType::kBFloat16},    // 16-byte rows
                      Geo{4, 3, 1, 8, 2, 4, 2, 4, DType::kBFloat16},      // 8-byte rows
                      Geo{3, 7, 2, 6, 2, 6, 4, 2, DType::kFloat16},       // 4-byte rows
                      Geo{2, 4, 3, 4, 2, 5, 1, 3, DType::kBFloat16},      // 6-byte rows -> 2
                      Geo{8, 2, 1, 16, 2, 3, 1, 5, DType::kFloat8E4M3},   // odd bytes -> 1
                      Geo{2, 9, 1, 4, 2, 6, 2, 128, DType::kFloat32, 3},  // padded heads
                      // Long dense segments (16 heads x 16 vectors: several unrolled rounds per
                      // lane) over many blocks, and a tail that is not a multiple of the unroll.
                      Geo{2, 700, 1, 32, 16, 48, 8, 128, DType::kBFloat16},
                      Geo{3, 301, 2, 12, 3, 5, 1, 120, DType::kBFloat16},
                      // Strided heads: one segment per row (16-byte and 4-byte vectors).
                      Geo{2, 257, 2, 8, 4, 12, 4, 64, DType::kBFloat16, 0, 64},
                      Geo{4, 33, 1, 8, 2, 3, 1, 6, DType::kFloat16, 1, 2},
                      // Heads spanning several channels (head_dim_v != head_dim): 192-wide heads
                      // in 64-wide channels (MLA's Q|K rows), dense and strided; 24-wide heads
                      // in 8-wide channels (16-byte vectors); 12-wide in 4-wide (8-byte).
                      Geo{2, 65, 2, 8, 4, 14, 1, 192, DType::kBFloat16, 0, 0, 64},
                      Geo{3, 17, 1, 6, 2, 10, 3, 192, DType::kBFloat16, 1, 64, 64},
                      Geo{2, 9, 2, 4, 2, 7, 1, 24, DType::kFloat16, 0, 0, 8},
                      Geo{4, 5, 1, 6, 3, 11, 2, 12, DType::kBFloat16, 0, 4, 4}),
    [](const auto& param_info) { return "case" + std::to_string(param_info.index); });

// FP8 rows: the device pack must write the host's bytes exactly (codes, exponent bytes, and no
// byte of the padding), and the device dequantize must give the host's values bit for bit. Rows
// span many binades (scales 2^-30..2^30, fp16: 2^-8..2^8), one row is zero; vectorized (D a
// multiple of 8 with aligned strides: 8, 16 or 32 lanes per row) and scalar paths (odd row bytes,
// strided heads, fp32). Same geometries as GpuLayout's (head_pad 0); with `unit`, a head spans
// D / unit rows, each scaled on its own (head_dim_v != head_dim: rows of gcd(D, Dv) values).
class GpuFp8Rows : public ::testing::TestWithParam<Geo> {};

TEST_P(GpuFp8Rows, PackAndDequantizeMatchHostBitwise) {
  ULYSSES_REQUIRE_GPUS(1);
  const Geo g = GetParam();
  std::vector<int> begin;
  for (int p = 0; p < g.P; ++p) begin.push_back((p * g.heads) % (g.H - g.heads + 1));
  const std::int64_t Dp = g.D + g.row_pad;
  std::mt19937_64 rng(testing::fresh_seed());
  HostTensor act(g.dtype, {g.B, g.Sl, g.H, Dp});
  testing::fill_uniform(act, rng, -2.0, 2.0);
  const int span = g.dtype == DType::kFloat16 ? 8 : 30;
  const std::int64_t U = g.unit > 0 ? g.unit : g.D;
  const int k = static_cast<int>(g.D / U);  // rows per head
  for (std::int64_t head = 0; head < act.numel() / Dp; ++head) {
    // Each of a head's rows in a binade of its own; head 1's first row zero.
    for (std::int64_t d = 0; d < Dp; ++d) {
      const std::int64_t row = head * (k + 1) + d / U;
      const double scale =
          row == k + 1 ? 0.0 : std::ldexp(1.0, static_cast<int>(row * 37 % (2 * span + 1)) - span);
      act.set(head * Dp + d, act.at(head * Dp + d) * scale);
    }
  }
  const TensorView act_rows = rows_of(act.view.data, g.dtype, g.B, g.Sl, g.H, g.D, g.row_pad, {});
  const kernels::Fp8MessageLayout shape{nullptr, g.P, g.Sl, g.B, g.C, U};
  const auto bytes = static_cast<std::int64_t>(g.P * shape.peer_bytes());
  HostTensor msg(DType::kFloat8E4M3, {bytes});
  std::fill(msg.storage.begin(), msg.storage.end(), static_cast<unsigned char>(0xAB));
  HostTensor msg_host = msg;
  kernels::Fp8MessageLayout mh = shape;
  mh.data = msg_host.view.data;
  ASSERT_TRUE(kernels::pack_heads_fp8(act_rows, begin, g.heads, mh, g.c_begin, nullptr).is_ok());

  DeviceTensor act_d = DeviceTensor::of(act), msg_d = DeviceTensor::of(msg);
  kernels::Fp8MessageLayout md = shape;
  md.data = msg_d.ptr;
  Status s = kernels::pack_heads_fp8(
      rows_of(act_d.ptr, g.dtype, g.B, g.Sl, g.H, g.D, g.row_pad, Device::cuda(0)), begin, g.heads,
      md, g.c_begin, nullptr);
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  ASSERT_CUDA(cudaDeviceSynchronize());
  const HostTensor msg_dev = msg_d.download(msg);
  EXPECT_EQ(std::memcmp(msg_host.storage.data(), msg_dev.storage.data(), msg.storage.size()), 0)
      << "pack_heads_fp8: device bytes differ from the host's";

  // Dequantize every row (a full message: stamp the rows the pack left alone with the host's own
  // codes of another activation, so every channel holds real codes).
  kernels::Fp8MessageLayout full_h = shape;
  full_h.data = msg_host.view.data;
  for (int c0 = 0; c0 + k <= g.C; c0 += g.heads * k) {
    const int n = std::min(g.heads, (g.C - c0) / k);
    ASSERT_TRUE(kernels::pack_heads_fp8(act_rows, begin, n, full_h, c0, nullptr).is_ok());
  }
  HostTensor out(g.dtype, {g.P, g.Sl, g.B, g.C, U});
  testing::poison(out);
  HostTensor out_host = out;
  ASSERT_TRUE(kernels::dequantize_fp8(full_h, {out_host.view.data, g.dtype, g.P, g.Sl, g.B, g.C, U},
                                      Device::host(), nullptr)
                  .is_ok());
  DeviceTensor full_d = DeviceTensor::of(msg_host), out_d = DeviceTensor::of(out);
  kernels::Fp8MessageLayout fd = shape;
  fd.data = full_d.ptr;
  s = kernels::dequantize_fp8(fd, {out_d.ptr, g.dtype, g.P, g.Sl, g.B, g.C, U}, Device::cuda(0),
                              nullptr);
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(testing::count_nan(out_host), 0);
  EXPECT_BITWISE_EQ(out_host, out_d.download(out), "dequantize_fp8");
}

INSTANTIATE_TEST_SUITE_P(
    Rows, GpuFp8Rows,
    ::testing::Values(Geo{2, 5, 2, 8, 4, 12, 0, 128, DType::kBFloat16},        // 16 lanes per row
                      Geo{3, 7, 1, 6, 2, 6, 4, 64, DType::kFloat16},           // 8 lanes
                      Geo{2, 3, 2, 4, 2, 4, 2, 256, DType::kBFloat16},         // 32 lanes
                      Geo{2, 4, 1, 8, 4, 8, 4, 96, DType::kBFloat16},          // 12 of 16 lanes
                      Geo{2, 300, 2, 16, 8, 24, 8, 128, DType::kBFloat16},     // many blocks
                      Geo{4, 9, 1, 8, 2, 3, 1, 128, DType::kBFloat16, 0, 64},  // strided, aligned
                      Geo{2, 6, 1, 4, 2, 2, 0, 12, DType::kBFloat16},          // 24-byte rows
                      Geo{2, 5, 1, 8, 4, 4, 0, 128, DType::kBFloat16, 0, 4},   // unaligned stride
                      Geo{2, 5, 1, 4, 2, 4, 0, 64, DType::kFloat32},           // fp32 (scalar)
                      // Heads of several rows (head_dim_v != head_dim): 192 as 3 rows of 64,
                      // 128 as 2 (fp16), strided heads, and fp32 rows of 8.
                      Geo{2, 5, 2, 4, 2, 12, 0, 192, DType::kBFloat16, 0, 0, 64},
                      Geo{3, 7, 1, 6, 2, 10, 2, 128, DType::kFloat16, 0, 0, 64},
                      Geo{2, 4, 1, 4, 2, 8, 1, 192, DType::kBFloat16, 0, 64, 64},
                      Geo{2, 5, 1, 4, 2, 8, 0, 24, DType::kFloat32, 0, 0, 8}),
    [](const auto& param_info) { return "case" + std::to_string(param_info.index); });

TEST(GpuLayout, SumReplicasAndLseMatchHost) {
  ULYSSES_REQUIRE_GPUS(1);
  const int P = 4, C = 2;
  const std::int64_t Sl = 6, B = 2, D = 16;
  const std::vector<int> kv = {0, 0, 1, 1};  // two replicas per KV head
  std::mt19937_64 rng(testing::fresh_seed());
  HostTensor msg(DType::kFloat32, {P, Sl, B, C, D});
  testing::fill_uniform(msg, rng);
  for (DType dt : {DType::kFloat32, DType::kBFloat16, DType::kFloat16}) {
    HostTensor out(dt, {B, Sl, 2, D});
    testing::poison(out);
    HostTensor out_host = out;
    kernels::MessageLayout mh{msg.view.data, DType::kFloat32, P, Sl, B, C, D};
    ASSERT_TRUE(kernels::unpack_sum_replicas(mh, 1, kv, out_host.view, nullptr).is_ok());
    DeviceTensor msg_d = DeviceTensor::of(msg), out_d = DeviceTensor::of(out);
    kernels::MessageLayout md{msg_d.ptr, DType::kFloat32, P, Sl, B, C, D};
    ASSERT_TRUE(kernels::unpack_sum_replicas(md, 1, kv, out_d.view, nullptr).is_ok());
    ASSERT_CUDA(cudaDeviceSynchronize());
    EXPECT_BITWISE_EQ(out_host, out_d.download(out),
                      std::string("sum ") + std::string(dtype_name(dt)));
  }
  // A head spanning 2 channels of 8 (head_dim_v != head_dim), from channel 3 of 5.
  HostTensor wide_msg(DType::kFloat32, {P, Sl, B, 5, 8});
  testing::fill_uniform(wide_msg, rng);
  {
    HostTensor out(DType::kBFloat16, {B, Sl, 2, D});
    testing::poison(out);
    HostTensor out_host = out;
    kernels::MessageLayout mh{wide_msg.view.data, DType::kFloat32, P, Sl, B, 5, 8};
    ASSERT_TRUE(kernels::unpack_sum_replicas(mh, 3, kv, out_host.view, nullptr).is_ok());
    DeviceTensor msg_d = DeviceTensor::of(wide_msg), out_d = DeviceTensor::of(out);
    kernels::MessageLayout md{msg_d.ptr, DType::kFloat32, P, Sl, B, 5, 8};
    ASSERT_TRUE(kernels::unpack_sum_replicas(md, 3, kv, out_d.view, nullptr).is_ok());
    ASSERT_CUDA(cudaDeviceSynchronize());
    EXPECT_EQ(testing::count_nan(out_host), 0);
    EXPECT_BITWISE_EQ(out_host, out_d.download(out), "sum of 2-channel heads");
  }
  HostTensor lmsg(DType::kFloat32, {P, Sl, B, 3});
  testing::fill_uniform(lmsg, rng);
  HostTensor lse(DType::kFloat32, {B, 3 * P, Sl});
  testing::poison(lse);
  HostTensor lse_host = lse;
  const std::vector<int> qb = {0, 3, 6, 9};
  ASSERT_TRUE(kernels::unpack_lse({lmsg.view.data, DType::kFloat32, P, Sl, B, 3, 1}, qb,
                                  lse_host.view, nullptr)
                  .is_ok());
  DeviceTensor lmsg_d = DeviceTensor::of(lmsg), lse_d = DeviceTensor::of(lse);
  ASSERT_TRUE(
      kernels::unpack_lse({lmsg_d.ptr, DType::kFloat32, P, Sl, B, 3, 1}, qb, lse_d.view, nullptr)
          .is_ok());
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(testing::count_nan(lse_host), 0);
  EXPECT_BITWISE_EQ(lse_host, lse_d.download(lse), "lse");
}

// move_heads: a batch of packs (or unpacks) on the device, one launch where the moves allow it,
// must give the bytes of one host call per move over whole poisoned buffers. The batches mirror
// what a plan issues (a chunk's Q, K and V into one message, peers' rows and the rank's own apart,
// bf16 and fp32 rows of one vector width in one launch), and the ones that take more launches
// (vector widths that differ: one per width; more moves than a launch takes: groups; more peers:
// a launch of their own).
struct BatchCase {
  std::string name;
  int P;
  std::int64_t Sl, B;
  struct Act {
    DType dtype;
    int H;
    std::int64_t D;
  };
  struct Msg {
    DType dtype;
    int C;
    std::int64_t U;
  };
  struct Move {
    int act, msg, heads, c_begin;
    std::vector<int> begin;  // per peer
  };
  std::vector<Act> acts;
  std::vector<Msg> msgs;
  std::vector<Move> moves;
};

std::vector<BatchCase> batch_cases() {
  // Every case's moves write distinct channels of the messages and distinct heads of the
  // activations (over the moves and their peers), so they hold as packs and as unpacks.
  std::vector<BatchCase> out;
  const DType bf = DType::kBFloat16;
  {  // a chunk's Q (2 heads of 8 per peer, dense), K and V (1 of 4) into one Q|K|V message and
    // into an own-rows message, as pack_qkv() with a rank's own rows apart
    BatchCase c{
        "qkv", 2, 37, 2, {{bf, 8, 64}, {bf, 4, 64}, {bf, 4, 64}}, {{bf, 4, 64}, {bf, 4, 64}}, {}};
    c.moves = {{0, 0, 2, 0, {0, 2}}, {1, 0, 1, 2, {0, 1}}, {2, 0, 1, 3, {0, 1}},
               {0, 1, 2, 0, {4, 6}}, {1, 1, 1, 2, {2, 3}}, {2, 1, 1, 3, {2, 3}}};
    out.push_back(c);
  }
  {  // bf16 rows of 64 and fp32 rows of 32 (128 bytes each): one launch, 16-byte vectors
    BatchCase c{"dtypes",
                3,
                19,
                1,
                {{bf, 6, 64}, {DType::kFloat32, 3, 32}},
                {{bf, 4, 64}, {DType::kFloat32, 2, 32}},
                {}};
    c.moves = {{0, 0, 2, 1, {0, 2, 4}}, {1, 1, 1, 1, {0, 1, 2}}};
    out.push_back(c);
  }
  {  // heads spanning 3 channels (192 in 64: MLA's Q|K rows) beside 1-channel V heads
    BatchCase c{"mla", 2, 11, 2, {{bf, 4, 192}, {bf, 2, 64}}, {{bf, 8, 64}}, {}};
    c.moves = {{0, 0, 2, 0, {0, 2}}, {1, 0, 1, 6, {0, 1}}};
    out.push_back(c);
  }
  {  // vector widths that differ (16 and 2 bytes): one launch per width
    BatchCase c{"widths",
                2,
                9,
                2,
                {{bf, 4, 64}, {DType::kFloat16, 4, 3}},
                {{bf, 2, 64}, {DType::kFloat16, 3, 3}},
                {}};
    c.moves = {{0, 0, 2, 0, {0, 2}}, {1, 1, 1, 2, {3, 1}}};
    out.push_back(c);
  }
  {  // 33 peers (more than a batched launch takes): a launch per move
    BatchCase c{"peers", 33, 3, 1, {{bf, 33, 64}, {bf, 33, 64}}, {{bf, 2, 64}}, {}};
    std::vector<int> up(33), down(33);
    for (int p = 0; p < 33; ++p) {
      up[static_cast<std::size_t>(p)] = p;
      down[static_cast<std::size_t>(p)] = 32 - p;
    }
    c.moves = {{0, 0, 1, 0, up}, {1, 0, 1, 1, down}};
    out.push_back(c);
  }
  {  // 17 moves (more than one launch takes: 16 and 1), each a channel of its own
    BatchCase c{"moves", 2, 5, 1, {{bf, 34, 64}}, {{bf, 17, 64}}, {}};
    for (int h = 0; h < 17; ++h) c.moves.push_back({0, 0, 1, h, {h, 17 + h}});
    out.push_back(c);
  }
  {  // 17 moves of 16-byte rows between two of 2-byte rows: the full width goes out while the
    // other waits, then both widths' rest
    BatchCase c{"interleaved",
                2,
                5,
                1,
                {{bf, 34, 64}, {DType::kFloat16, 4, 3}},
                {{bf, 17, 64}, {DType::kFloat16, 3, 3}},
                {}};
    c.moves.push_back({1, 1, 1, 0, {0, 2}});
    for (int h = 0; h < 17; ++h) c.moves.push_back({0, 0, 1, h, {h, 17 + h}});
    c.moves.push_back({1, 1, 1, 2, {3, 1}});
    out.push_back(c);
  }
  return out;
}

TEST(GpuLayout, MoveHeadsBatchMatchesOneHostCallEach) {
  ULYSSES_REQUIRE_GPUS(1);
  for (const BatchCase& bc : batch_cases()) {
    for (const bool pack : {true, false}) {
      SCOPED_TRACE(bc.name + (pack ? " pack" : " unpack"));
      std::vector<HostTensor> acts, msgs;
      int salt = 1;
      for (const auto& a : bc.acts) {
        acts.push_back(pack ? stamped(a.dtype, {bc.B, bc.Sl, a.H, a.D}, salt++)
                            : HostTensor(a.dtype, {bc.B, bc.Sl, a.H, a.D}));
        if (!pack) testing::poison(acts.back());
      }
      for (const auto& m : bc.msgs) {
        msgs.push_back(pack ? HostTensor(m.dtype, {bc.P, bc.Sl, bc.B, m.C, m.U})
                            : stamped(m.dtype, {bc.P, bc.Sl, bc.B, m.C, m.U}, salt++));
        if (pack) testing::poison(msgs.back());
      }
      std::vector<HostTensor> acts_host = acts, msgs_host = msgs;
      std::vector<DeviceTensor> acts_d, msgs_d;
      for (const HostTensor& t : acts) acts_d.push_back(DeviceTensor::of(t));
      for (const HostTensor& t : msgs) msgs_d.push_back(DeviceTensor::of(t));
      std::vector<kernels::HeadMove> device_moves;
      for (const auto& mv : bc.moves) {
        const auto& m = bc.msgs[static_cast<std::size_t>(mv.msg)];
        auto host_msg =
            kernels::MessageLayout{msgs_host[static_cast<std::size_t>(mv.msg)].view.data,
                                   m.dtype,
                                   bc.P,
                                   bc.Sl,
                                   bc.B,
                                   m.C,
                                   m.U};
        const TensorView host_act = acts_host[static_cast<std::size_t>(mv.act)].view;
        const Status st =
            pack ? kernels::pack_heads(host_act, mv.begin, mv.heads, host_msg, mv.c_begin, nullptr)
                 : kernels::unpack_heads(host_msg, mv.c_begin, mv.begin, mv.heads, host_act,
                                         nullptr);
        ASSERT_TRUE(st.is_ok()) << st.to_string();
        device_moves.push_back(
            {acts_d[static_cast<std::size_t>(mv.act)].view,
             mv.begin,
             mv.heads,
             {msgs_d[static_cast<std::size_t>(mv.msg)].ptr, m.dtype, bc.P, bc.Sl, bc.B, m.C, m.U},
             mv.c_begin});
      }
      const Status st = kernels::move_heads(pack, device_moves, nullptr);
      ASSERT_TRUE(st.is_ok()) << st.to_string();
      ASSERT_CUDA(cudaDeviceSynchronize());
      for (std::size_t i = 0; i < acts.size(); ++i) {
        EXPECT_BITWISE_EQ(acts_host[i], acts_d[i].download(acts[i]),
                          "activation " + std::to_string(i));
      }
      for (std::size_t i = 0; i < msgs.size(); ++i) {
        EXPECT_BITWISE_EQ(msgs_host[i], msgs_d[i].download(msgs[i]),
                          "message " + std::to_string(i));
      }
      // The batch moved something: the outputs are not all poison any more.
      std::int64_t poison_left = 0, outputs = 0;
      for (const HostTensor& t : pack ? msgs_host : acts_host) {
        poison_left += testing::count_nan(t), outputs += t.numel();
      }
      EXPECT_LT(poison_left, outputs);
    }
  }
}

// A batch with a move that does not fit its message is refused before anything moves: the first
// move (over 33 peers, so a launch of its own) must not have written the message either.
TEST(GpuLayout, MoveHeadsChecksEveryMoveBeforeAnyLaunch) {
  ULYSSES_REQUIRE_GPUS(1);
  const DType bf = DType::kBFloat16;
  HostTensor act = stamped(bf, {1, 3, 33, 64}, 1);
  HostTensor wrong = stamped(DType::kFloat16, {1, 3, 33, 64}, 2);  // not the message's dtype
  HostTensor msg(bf, {33, 3, 1, 1, 64});
  testing::poison(msg);
  DeviceTensor act_d = DeviceTensor::of(act), wrong_d = DeviceTensor::of(wrong);
  DeviceTensor msg_d = DeviceTensor::of(msg);
  std::vector<int> up(33);
  for (int p = 0; p < 33; ++p) up[static_cast<std::size_t>(p)] = p;
  const kernels::MessageLayout m{msg_d.ptr, bf, 33, 3, 1, 1, 64};
  const std::vector<kernels::HeadMove> moves{{act_d.view, up, 1, m, 0},
                                             {wrong_d.view, up, 1, m, 0}};
  const Status st = kernels::move_heads(true, moves, nullptr);
  EXPECT_FALSE(st.is_ok());
  EXPECT_NE(st.to_string().find("message layout"), std::string::npos) << st.to_string();
  ASSERT_CUDA(cudaDeviceSynchronize());
  const HostTensor after = msg_d.download(msg);
  EXPECT_EQ(testing::count_nan(after), after.numel());
}

// A strided [n0, n1, n2, n3] view `offset` elements into a flat buffer that holds it (and the
// gaps between its rows), on the host and mirrored on the device.
struct Strided {
  HostTensor buf;
  std::array<std::int64_t, 4> shape{}, strides{};
  std::int64_t offset = 0;

  Strided(DType dtype, std::array<std::int64_t, 4> sh, std::array<std::int64_t, 4> st,
          std::int64_t off)
      : shape(sh), strides(st), offset(off) {
    std::int64_t last = off;
    for (int k = 0; k < 4; ++k)
      last += (sh[static_cast<std::size_t>(k)] - 1) * st[static_cast<std::size_t>(k)];
    buf = HostTensor(dtype, {last + 3});
  }
  TensorView view(void* base, Device device) const {
    TensorView v = TensorView::strided(
        static_cast<char*>(base) + offset * static_cast<std::int64_t>(dtype_size(buf.view.dtype)),
        buf.view.dtype, {shape[0], shape[1], shape[2], shape[3]},
        {strides[0], strides[1], strides[2], strides[3]}, device);
    return v;
  }
  TensorView host_view() { return view(buf.view.data, Device::host()); }
};

struct EwGeo {
  const char* name;
  std::array<std::int64_t, 4> shape, dst_strides, src_strides;
  std::int64_t dst_offset, src_offset;
};

std::array<std::int64_t, 4> dense(std::array<std::int64_t, 4> s) {
  return {s[1] * s[2] * s[3], s[2] * s[3], s[3], 1};
}

std::vector<EwGeo> ew_geometries() {
  const std::array<std::int64_t, 4> a{2, 33, 4, 64}, b{1, 1000, 8, 128}, c{2, 17, 3, 64},
      d{1, 9, 2, 64}, e{1, 11, 3, 6}, f{1, 5, 2, 8};
  return {
      {"contiguous (one block)", a, dense(a), dense(a), 0, 0},
      {"Q out of a Q|K|V buffer", b, dense(b), {1000 * 16 * 128, 16 * 128, 128, 1}, 0, 0},
      {"gaps after every head", c, {17 * 3 * 72, 3 * 72, 72, 1}, dense(c), 0, 0},
      {"dst off the 16-byte grid", d, dense(d), dense(d), 1, 0},
      {"src off the 16-byte grid", d, dense(d), dense(d), 0, 3},
      {"rows of 6", e, {11 * 3 * 8, 3 * 8, 8, 1}, dense(e), 0, 0},
      {"head_dim strided", f, {5 * 2 * 16, 2 * 16, 16, 2}, dense(f), 0, 0},
  };
}

// dst holds NaN everywhere (gaps included) except, for `add`, random values in the view; src holds
// random values in its view. The device result must equal the host's over the whole dst buffer.
void check_elementwise(const EwGeo& g, DType dt, DType st, const char* op, std::mt19937_64& rng) {
  SCOPED_TRACE(std::string(g.name) + " " + op + " " + std::string(dtype_name(dt)) + " <- " +
               std::string(dtype_name(st)));
  Strided dst(dt, g.shape, g.dst_strides, g.dst_offset),
      src(st, g.shape, g.src_strides, g.src_offset);
  testing::poison(dst.buf);
  testing::fill_uniform(src.buf, rng, -4.0, 4.0);
  const bool add = std::string(op) == "accumulate";
  if (add) {
    HostTensor vals(dt, {g.shape[0], g.shape[1], g.shape[2], g.shape[3]});
    testing::fill_uniform(vals, rng, -4.0, 4.0);
    ASSERT_TRUE(kernels::host::convert(dst.host_view(), vals.view).is_ok());
  }
  HostTensor expected = dst.buf;
  Strided want = dst;
  want.buf = expected;
  Status hs;
  if (std::string(op) == "zero") {
    hs = kernels::host::zero(want.host_view());
  } else if (add) {
    hs = kernels::host::accumulate(want.host_view(), src.host_view());
  } else {
    hs = kernels::host::convert(want.host_view(), src.host_view());
  }
  ASSERT_TRUE(hs.is_ok()) << hs.to_string();
  DeviceTensor dd = DeviceTensor::of(dst.buf), sd = DeviceTensor::of(src.buf);
  const TensorView dv = dst.view(dd.ptr, Device::cuda(0)), sv = src.view(sd.ptr, Device::cuda(0));
  Status ds;
  if (std::string(op) == "zero") {
    ds = kernels::cuda::fill_zero(dv, nullptr);
  } else if (std::string(op) == "copy") {
    ds = kernels::cuda::copy_elements(dv, sv, nullptr);
  } else {
    ds = kernels::cuda::convert_elements(dv, sv, add, nullptr);
  }
  ASSERT_TRUE(ds.is_ok()) << ds.to_string();
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_BITWISE_EQ(want.buf, dd.download(dst.buf), "whole dst buffer");
}

TEST(GpuElementwise, MatchHostBitwiseOverWholeBuffers) {
  ULYSSES_REQUIRE_GPUS(1);
  const std::uint64_t seed = testing::fresh_seed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  const DType f32 = DType::kFloat32, bf16 = DType::kBFloat16, f16 = DType::kFloat16;
  for (const EwGeo& g : ew_geometries()) {
    for (DType t : {f32, bf16, f16}) check_elementwise(g, t, t, "zero", rng);
    for (DType t : {f32, bf16}) check_elementwise(g, t, t, "copy", rng);
    const std::pair<DType, DType> conversions[] = {
        {f32, bf16}, {bf16, f32}, {f16, bf16}, {f32, f16}};
    for (auto [d, s] : conversions) check_elementwise(g, d, s, "convert", rng);
    for (DType s : {bf16, f32, f16}) check_elementwise(g, f32, s, "accumulate", rng);
  }
}

// fill_zero_rows / convert_rows / copy_rows (the cuDNN backend's staging of a packed call's
// gradients into running fp32 sums, and of its Q into O's token stride): over the pieces' rows
// exactly what the whole-view kernels do there, every other bit of dst (rows between pieces, gaps,
// rows past the last piece) untouched. Random pieces with gaps and empty ones; one geometry with
// more pieces than one launch holds.
void check_rows(const EwGeo& g, DType dt, DType st, const char* op, int pieces,
                std::mt19937_64& rng) {
  SCOPED_TRACE(std::string(g.name) + " rows " + op + " " + std::string(dtype_name(dt)) + " <- " +
               std::string(dtype_name(st)) + ", " + std::to_string(pieces) + " pieces");
  std::vector<std::int32_t> begin, len;
  std::int64_t row = static_cast<std::int64_t>(rng() % 3);
  for (int i = 0; i < pieces && row < g.shape[1]; ++i) {
    const std::int64_t l = std::min<std::int64_t>(
        rng() % 5 == 0 ? 0 : 1 + static_cast<std::int64_t>(rng() % 4), g.shape[1] - row);
    begin.push_back(static_cast<std::int32_t>(row));
    len.push_back(static_cast<std::int32_t>(l));
    row += l + static_cast<std::int64_t>(rng() % 3);
  }
  Strided dst(dt, g.shape, g.dst_strides, g.dst_offset),
      src(st, g.shape, g.src_strides, g.src_offset);
  testing::poison(dst.buf);
  testing::fill_uniform(src.buf, rng, -4.0, 4.0);
  const std::string name(op);
  // The pieces' rows of dst hold values (NaN elsewhere stays NaN's bits).
  auto rows_of = [](TensorView v, std::int64_t r0, std::int64_t n) {
    v.data = static_cast<char*>(v.data) +
             r0 * v.stride(1) * static_cast<std::int64_t>(dtype_size(v.dtype));
    v.shape[1] = n;
    return v;
  };
  for (std::size_t i = 0; i < begin.size(); ++i) {
    HostTensor vals(dt, {1, len[i], g.shape[2], g.shape[3]});
    testing::fill_uniform(vals, rng, -4.0, 4.0);
    ASSERT_TRUE(
        kernels::host::convert(rows_of(dst.host_view(), begin[i], len[i]), vals.view).is_ok());
  }
  Strided want = dst;
  for (std::size_t i = 0; i < begin.size(); ++i) {
    const TensorView w = rows_of(want.host_view(), begin[i], len[i]);
    const TensorView x = rows_of(src.host_view(), begin[i], len[i]);
    const Status hs = name == "zero"         ? kernels::host::zero(w)
                      : name == "accumulate" ? kernels::host::accumulate(w, x)
                                             : kernels::host::convert(w, x);
    ASSERT_TRUE(hs.is_ok()) << hs.to_string();
  }
  DeviceTensor dd = DeviceTensor::of(dst.buf), sd = DeviceTensor::of(src.buf);
  const TensorView dv = dst.view(dd.ptr, Device::cuda(0)), sv = src.view(sd.ptr, Device::cuda(0));
  const kernels::RowPieces rp{begin, len};
  const Status ds = name == "zero" ? kernels::cuda::fill_zero_rows(dv, rp, nullptr)
                    : name == "copy"
                        ? kernels::cuda::copy_rows(dv, sv, rp, nullptr)
                        : kernels::cuda::convert_rows(dv, sv, rp, name == "accumulate", nullptr);
  ASSERT_TRUE(ds.is_ok()) << ds.to_string();
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_BITWISE_EQ(want.buf, dd.download(dst.buf), "whole dst buffer");
}

TEST(GpuElementwise, RowsOfPiecesMatchHostAndLeaveTheRest) {
  ULYSSES_REQUIRE_GPUS(1);
  const std::uint64_t seed = testing::fresh_seed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  const DType f32 = DType::kFloat32, bf16 = DType::kBFloat16, f16 = DType::kFloat16;
  std::vector<EwGeo> geos;
  for (const EwGeo& g : ew_geometries()) {
    if (g.shape[0] == 1) geos.push_back(g);
  }
  const std::array<std::int64_t, 4> r{1, 40, 2, 16};
  // Rows 36 elements apart: no 16-byte vector lands on every row.
  geos.push_back({"row stride off the 16-byte grid", r, {40 * 36, 36, 16, 1}, dense(r), 0, 0});
  for (const EwGeo& g : geos) {
    for (int pieces : {1, 7, 3 * kernels::kPiecesPerLaunch}) {
      for (DType t : {f32, bf16}) check_rows(g, t, t, "zero", pieces, rng);
      for (DType s : {bf16, f32, f16}) check_rows(g, f32, s, "accumulate", pieces, rng);
      check_rows(g, f32, bf16, "convert", pieces, rng);
      for (DType t : {bf16, f16, f32}) check_rows(g, t, t, "copy", pieces, rng);
    }
  }
}

// zero_tokens_from (the backend's prefill of padding rows): rows before `first` and the gaps keep
// their bits.
TEST(GpuElementwise, ZeroTokensFromLeavesEarlierRows) {
  ULYSSES_REQUIRE_GPUS(1);
  std::mt19937_64 rng(testing::fresh_seed());
  Strided t(DType::kBFloat16, {1, 50, 4, 64}, {50 * 6 * 64, 6 * 64, 64, 1}, 0);
  testing::fill_uniform(t.buf, rng);
  HostTensor expected = t.buf;
  for (std::int64_t s = 13; s < 50; ++s)
    for (std::int64_t h = 0; h < 4; ++h)
      for (std::int64_t d = 0; d < 64; ++d) expected.set(s * 6 * 64 + h * 64 + d, 0.0);
  DeviceTensor dd = DeviceTensor::of(t.buf);
  ASSERT_TRUE(
      kernels::cuda::zero_tokens_from(t.view(dd.ptr, Device::cuda(0)), 13, nullptr).is_ok());
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_BITWISE_EQ(expected, dd.download(t.buf), "after zero_tokens_from(13)");
}

// The sinks' gradient (ring's, allgather's and the cuDNN backend's packed backward with sinks):
// against the host's FP64 sum within fp32 accumulation error, entries outside [head_offset,
// head_offset + H) untouched, rows with LSE = -inf skipped even where their O and dO are NaN (rows
// of no sequence hold whatever the caller left there), and bitwise the same on a second run (fixed
// order of additions).
TEST(GpuElementwise, SinkGradMatchesHostAndRepeatsBitwise) {
  ULYSSES_REQUIRE_GPUS(1);
  const std::uint64_t seed = testing::fresh_seed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  // 2600 rows: more than one pass of the eight blocks per head (128 rows each) on Hopper.
  const std::int64_t B = 2, S = 1300, H = 3, heads_total = 7;
  const int head_offset = 2;
  // 16-bit head_dim 128 and 64: 16-byte pieces (two rows, or four, per warp access); fp32 64:
  // 4-element loads; 6: element by element.
  for (auto [D, dt] : {std::pair<std::int64_t, DType>{128, DType::kBFloat16},
                       {64, DType::kFloat16},
                       {64, DType::kFloat32},
                       {6, DType::kBFloat16}}) {
    SCOPED_TRACE(D);
    // O and dO as H of 5 heads per token (strided rows), LSE [B, H, S] with some rows at -inf.
    Strided o(dt, {B, S, H, D}, {S * 5 * D, 5 * D, D, 1}, 0),
        d_o(dt, {B, S, H, D}, {S * 5 * D, 5 * D, D, 1}, 0);
    testing::fill_uniform(o.buf, rng);
    testing::fill_uniform(d_o.buf, rng);
    HostTensor lse(DType::kFloat32, {B, H, S}), sinks(DType::kFloat32, {heads_total});
    testing::fill_uniform(lse, rng, 0.0, 3.0);
    for (std::int64_t i = 0; i < lse.numel(); i += 7) {
      lse.set(i, -INFINITY);
      const std::int64_t b = i / (H * S), h = i / S % H, s = i % S;
      for (std::int64_t d = 0; d < D; ++d) {
        o.buf.set(((b * S + s) * 5 + h) * D + d, NAN);
        d_o.buf.set(((b * S + s) * 5 + h) * D + d, NAN);
      }
    }
    testing::fill_uniform(sinks, rng, -1.0, 1.0);
    HostTensor want(DType::kFloat32, {heads_total});
    testing::poison(want);
    ASSERT_TRUE(kernels::host::sink_grad(o.host_view(), d_o.host_view(), lse.view, sinks.view,
                                         head_offset, want.view)
                    .is_ok());
    DeviceTensor od = DeviceTensor::of(o.buf), dod = DeviceTensor::of(d_o.buf),
                 ld = DeviceTensor::of(lse), sd = DeviceTensor::of(sinks);
    HostTensor poisoned(DType::kFloat32, {heads_total});
    testing::poison(poisoned);
    HostTensor got[2];
    for (HostTensor& g : got) {
      DeviceTensor gd = DeviceTensor::of(poisoned);
      ASSERT_TRUE(kernels::cuda::sink_grad(o.view(od.ptr, Device::cuda(0)),
                                           d_o.view(dod.ptr, Device::cuda(0)), ld.view, sd.view,
                                           head_offset, gd.view, nullptr)
                      .is_ok());
      ASSERT_CUDA(cudaDeviceSynchronize());
      g = gd.download(poisoned);
    }
    EXPECT_BITWISE_EQ(got[0], got[1], "second run");
    for (std::int64_t h = 0; h < heads_total; ++h) {
      if (h < head_offset || h >= head_offset + H) {
        EXPECT_TRUE(std::isnan(got[0].at(h))) << "entry " << h << " was written";
        continue;
      }
      // Each term is at most e^(1 - 0) * 1 * 1; B * S * D terms in fp32.
      const double bound = 1e-6 * std::exp(1.0) * static_cast<double>(B * S * D);
      EXPECT_NEAR(got[0].at(h), want.at(h), bound) << "head " << h << " " << dtype_name(dt);
      EXPECT_NE(want.at(h), 0.0);
    }
  }
}

// Elementwise closeness over whole buffers: NaN where expected, the same infinity where expected,
// else within rel * |expected| + abs
// (rel: one ulp of the data's dtype, whose rounding of a slightly different fp32 value may differ).
void expect_close(const HostTensor& got, const HostTensor& want, double rel, double abs,
                  const std::string& what) {
  ASSERT_EQ(got.numel(), want.numel()) << what;
  int bad = 0;
  for (std::int64_t i = 0; i < want.numel() && bad < 5; ++i) {
    const double w = want.at(i), g = got.at(i);
    const bool ok = std::isnan(w)   ? std::isnan(g)
                    : std::isinf(w) ? g == w
                                    : std::fabs(g - w) <= rel * std::fabs(w) + abs;
    if (!ok) {
      ++bad;
      ADD_FAILURE() << what << ": element " << i << " expected " << w << ", got " << g;
    }
  }
}

// Ring's merge of a block's partial result into the accumulator, and the final normalisation with
// sinks (ring's last step, the cuDNN backend's sink fold, in place there): against the host's FP64
// within an ulp of the data's dtype, over whole poisoned strided buffers (elements between the
// views' rows stay NaN). Rows whose block LSE is -inf stay bitwise as they were; rows whose LSE is
// -inf keep their O and get no sink. Row counts not a multiple of the kernels' row groups; head_dim
// 64 and 128 (4-element accesses; 16-bit finalize: 16-byte pieces) and 6 (element by element);
// LSEs head-major ([B, H, S]
// contiguous: a warp's rows are tokens of one head) and token-major (as Ulysses' head-sharded
// rows: its rows are heads of one token).
TEST(GpuElementwise, MergeAndFinalizeMatchHost) {
  ULYSSES_REQUIRE_GPUS(1);
  const std::uint64_t seed = testing::fresh_seed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  const std::int64_t B = 2, S = 37, H = 3;
  const int heads_total = 7, head_offset = 2;
  struct Types {
    std::int64_t D;
    DType acc, blk;
  };
  for (const auto& [t, token_major] :
       {std::pair{Types{128, DType::kFloat32, DType::kBFloat16}, false},
        std::pair{Types{128, DType::kFloat32, DType::kBFloat16}, true},
        std::pair{Types{64, DType::kBFloat16, DType::kBFloat16}, false},
        std::pair{Types{128, DType::kBFloat16, DType::kBFloat16}, false},
        std::pair{Types{64, DType::kFloat16, DType::kFloat16}, true},
        std::pair{Types{6, DType::kFloat32, DType::kBFloat16}, false}}) {
    const std::int64_t D = t.D;
    SCOPED_TRACE(std::to_string(D) + " " + std::string(dtype_name(t.acc)) + " " +
                 std::string(dtype_name(t.blk)) + (token_major ? " LSE token-major" : ""));
    auto ulp = [](DType d) {
      return d == DType::kFloat32 ? 1e-6 : d == DType::kFloat16 ? 1.0 / 1024 : 1.0 / 128;
    };
    // H of 5 heads per token (acc) and of 4 (blk): rows with gaps; NaN in the gaps.
    Strided acc(t.acc, {B, S, H, D}, {S * 5 * D, 5 * D, D, 1}, 0),
        blk(t.blk, {B, S, H, D}, {S * 4 * D, 4 * D, D, 1}, 0);
    testing::poison(acc.buf);
    testing::poison(blk.buf);
    HostTensor lacc(DType::kFloat32, {B, H, S}), lblk(DType::kFloat32, {B, H, S}),
        sinks(DType::kFloat32, {heads_total});
    // Element (b, h, s) of an LSE, as an offset into its storage.
    auto lse_at = [&](std::int64_t b, std::int64_t h, std::int64_t s) {
      return token_major ? (s * B + b) * H + h : (b * H + h) * S + s;
    };
    if (token_major) {
      for (HostTensor* l : {&lacc, &lblk}) {
        l->view = TensorView::strided(l->storage.data(), DType::kFloat32, {B, H, S}, {H, 1, B * H});
      }
    }
    testing::fill_uniform(lacc, rng, 0.0, 3.0);
    testing::fill_uniform(lblk, rng, 0.0, 3.0);
    testing::fill_uniform(sinks, rng, -1.0, 2.0);
    for (std::int64_t i = 0; i < lacc.numel(); i += 5) lacc.set(i, -INFINITY);
    for (std::int64_t i = 1; i < lblk.numel(); i += 7) lblk.set(i, -INFINITY);
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t s = 0; s < S; ++s)
        for (std::int64_t h = 0; h < H; ++h)
          for (std::int64_t d = 0; d < D; ++d) {
            acc.buf.set(((b * S + s) * 5 + h) * D + d, u(rng));
            blk.buf.set(((b * S + s) * 4 + h) * D + d, u(rng));
          }
    // merge_partial, in place.
    HostTensor want_o = acc.buf, want_l = lacc;
    ASSERT_TRUE(kernels::host::merge_partial(acc.view(want_o.view.data, Device::host()),
                                             want_l.view, blk.host_view(), lblk.view)
                    .is_ok());
    DeviceTensor ad = DeviceTensor::of(acc.buf), lad = DeviceTensor::of(lacc),
                 bd = DeviceTensor::of(blk.buf), lbd = DeviceTensor::of(lblk);
    ASSERT_TRUE(kernels::cuda::merge_partial(acc.view(ad.ptr, Device::cuda(0)), lad.view,
                                             blk.view(bd.ptr, Device::cuda(0)), lbd.view, nullptr)
                    .is_ok());
    ASSERT_CUDA(cudaDeviceSynchronize());
    const HostTensor merged = ad.download(acc.buf), merged_l = lad.download(lacc);
    expect_close(merged, want_o, ulp(t.acc), 1e-6, "merge: O");
    expect_close(merged_l, want_l, 1e-6, 1e-6, "merge: LSE");
    for (std::int64_t b = 0; b < B; ++b)  // rows the block saw nothing of: untouched
      for (std::int64_t h = 0; h < H; ++h)
        for (std::int64_t s = 0; s < S; ++s) {
          if (lblk.at(lse_at(b, h, s)) != -INFINITY) continue;
          for (std::int64_t d = 0; d < D; ++d) {
            const std::int64_t i = ((b * S + s) * 5 + h) * D + d;
            ASSERT_EQ(
                std::memcmp(merged.storage.data() + i * dtype_size(t.acc),
                            acc.buf.storage.data() + i * dtype_size(t.acc), dtype_size(t.acc)),
                0)
                << "merge wrote row (" << b << ", " << s << ", " << h << ")";
          }
        }
    // finalize_partial with and without sinks: in place, and into a blk-typed output.
    for (bool with_sinks : {true, false}) {
      SCOPED_TRACE(with_sinks ? "sinks" : "no sinks");
      const TensorView sv = with_sinks ? sinks.view : TensorView{};
      HostTensor in_o = want_o, in_l = want_l;  // the merged accumulator (host)
      HostTensor fin_o = in_o, fin_l = in_l;
      ASSERT_TRUE(kernels::host::finalize_partial(
                      acc.view(in_o.view.data, Device::host()), in_l.view, sv, head_offset,
                      acc.view(fin_o.view.data, Device::host()), fin_l.view)
                      .is_ok());
      HostTensor out_o = blk.buf, out_l = in_l;
      testing::poison(out_o);
      testing::poison(out_l);
      HostTensor want_out = out_o, want_out_l = out_l;
      ASSERT_TRUE(kernels::host::finalize_partial(
                      acc.view(in_o.view.data, Device::host()), in_l.view, sv, head_offset,
                      blk.view(want_out.view.data, Device::host()), want_out_l.view)
                      .is_ok());
      DeviceTensor od = DeviceTensor::of(in_o), ld = DeviceTensor::of(in_l),
                   sd = DeviceTensor::of(sinks), xd = DeviceTensor::of(out_o),
                   xl = DeviceTensor::of(out_l);
      const TensorView sdv = with_sinks ? sd.view : TensorView{};
      const TensorView ov = acc.view(od.ptr, Device::cuda(0));
      ASSERT_TRUE(kernels::cuda::finalize_partial(ov, ld.view, sdv, head_offset,
                                                  blk.view(xd.ptr, Device::cuda(0)), xl.view,
                                                  nullptr)
                      .is_ok());
      ASSERT_TRUE(
          kernels::cuda::finalize_partial(ov, ld.view, sdv, head_offset, ov, ld.view, nullptr)
              .is_ok());
      ASSERT_CUDA(cudaDeviceSynchronize());
      expect_close(od.download(in_o), fin_o, ulp(t.acc), 1e-6, "finalize in place: O");
      expect_close(ld.download(in_l), fin_l, 1e-6, 1e-6, "finalize in place: LSE");
      expect_close(xd.download(out_o), want_out, ulp(t.blk), 1e-6, "finalize: O");
      expect_close(xl.download(out_l), want_out_l, 1e-6, 1e-6, "finalize: LSE");
    }
  }
}

}  // namespace
}  // namespace ulysses
