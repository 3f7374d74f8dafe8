// The FP64 reference: checked against an independently written mask-predicate formulation, its
// gradients against FP64 central finite differences, and its contract (padding, fully masked rows,
// head independence, every output written).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "common/test_util.h"

namespace ulysses {
namespace {

using testing::HostTensor;

struct Problem {
  AttentionConfig cfg;
  std::int64_t B = 1, S = 8;
  std::vector<std::int32_t> cu;  // non-empty: varlen (B must be 1)
  DType dtype = DType::kFloat64;
  std::string name;
};

void PrintTo(const Problem& p, std::ostream* os) { *os << p.name; }

// Everything one reference call needs, with fresh random inputs.
struct Tensors {
  HostTensor q, k, v, sinks, o, lse, d_o, dq, dk, dv, dsinks;
  Tensors(const Problem& p, std::mt19937_64& rng) {
    const auto& c = p.cfg;
    q = HostTensor(p.dtype, {p.B, p.S, c.num_heads_q, c.head_dim});
    k = HostTensor(p.dtype, {p.B, p.S, c.num_heads_kv, c.head_dim});
    v = HostTensor(p.dtype, {p.B, p.S, c.num_heads_kv, c.value_dim()});
    sinks = HostTensor(DType::kFloat32, {c.num_heads_q});
    o = HostTensor(p.dtype, {p.B, p.S, c.num_heads_q, c.value_dim()});
    lse = HostTensor(DType::kFloat32, {p.B, c.num_heads_q, p.S});
    d_o = o;
    dq = q;
    dk = k;
    dv = v;
    dsinks = sinks;
    for (HostTensor* t : {&q, &k, &v, &d_o}) testing::fill_uniform(*t, rng, -1.5, 1.5);
    testing::fill_uniform(sinks, rng, -1.0, 1.0);
    for (HostTensor* t : {&o, &lse, &dq, &dk, &dv, &dsinks}) testing::poison(*t);
  }
  LocalForwardArgs fwd(const Problem& p) {
    LocalForwardArgs a;
    a.q = q.view;
    a.k = k.view;
    a.v = v.view;
    if (p.cfg.sinks) a.sinks = sinks.view;
    a.o = o.view;
    a.lse = lse.view;
    a.cu_seqlens = p.cu;
    return a;
  }
  LocalBackwardArgs bwd(const Problem& p) {
    LocalBackwardArgs a;
    a.q = q.view;
    a.k = k.view;
    a.v = v.view;
    a.o = o.view;
    a.lse = lse.view;
    a.d_o = d_o.view;
    if (p.cfg.sinks) {
      a.sinks = sinks.view;
      a.dsinks = dsinks.view;
    }
    a.dq = dq.view;
    a.dk = dk.view;
    a.dv = dv.view;
    a.cu_seqlens = p.cu;
    return a;
  }
};

LocalProblem local(const Problem& p) {
  return LocalProblem::unsharded(p.cfg, p.dtype, p.B, p.S, !p.cu.empty());
}

// Independent formulation: an explicit visibility predicate over all (i, j) pairs.
bool visible(const Problem& p, std::int64_t i, std::int64_t j) {
  if (!p.cu.empty()) {
    std::int64_t si = -1, sj = -1;
    for (std::size_t s = 0; s + 1 < p.cu.size(); ++s) {
      if (i >= p.cu[s] && i < p.cu[s + 1]) si = static_cast<std::int64_t>(s);
      if (j >= p.cu[s] && j < p.cu[s + 1]) sj = static_cast<std::int64_t>(s);
    }
    if (si < 0 || si != sj) return false;
  }
  if (p.cfg.causal && j > i) return false;
  if (p.cfg.window_left >= 0 && i - j > p.cfg.window_left) return false;
  if (p.cfg.window_right >= 0 && j - i > p.cfg.window_right) return false;
  return true;
}

bool is_padding(const Problem& p, std::int64_t i) { return !p.cu.empty() && i >= p.cu.back(); }

void naive_forward(const Problem& p, Tensors& t, HostTensor& o, HostTensor& lse) {
  const auto& c = p.cfg;
  const int ratio = c.num_heads_q / c.num_heads_kv;
  for (std::int64_t b = 0; b < p.B; ++b) {
    for (int h = 0; h < c.num_heads_q; ++h) {
      const int g = h / ratio;
      for (std::int64_t i = 0; i < p.S; ++i) {
        std::vector<double> w(static_cast<std::size_t>(p.S), 0.0);
        double mx = -INFINITY;
        for (std::int64_t j = 0; j < p.S; ++j) {
          if (!visible(p, i, j)) continue;
          double s = 0;
          for (int d = 0; d < c.head_dim; ++d) {
            s += t.q.at(t.q.view.offset({b, i, h, d})) * t.k.at(t.k.view.offset({b, j, g, d}));
          }
          w[static_cast<std::size_t>(j)] = s * c.scale();
          mx = std::max(mx, w[static_cast<std::size_t>(j)]);
        }
        const bool sink = c.sinks && !is_padding(p, i);
        if (sink) mx = std::max(mx, t.sinks.at(h));
        double denom = sink ? std::exp(t.sinks.at(h) - mx) : 0.0;
        std::vector<double> acc(static_cast<std::size_t>(c.value_dim()), 0.0);
        for (std::int64_t j = 0; j < p.S; ++j) {
          if (!visible(p, i, j)) continue;
          const double e = std::exp(w[static_cast<std::size_t>(j)] - mx);
          denom += e;
          for (int d = 0; d < c.value_dim(); ++d) {
            acc[static_cast<std::size_t>(d)] += e * t.v.at(t.v.view.offset({b, j, g, d}));
          }
        }
        for (int d = 0; d < c.value_dim(); ++d) {
          o.set(o.view.offset({b, i, h, d}),
                denom > 0 ? acc[static_cast<std::size_t>(d)] / denom : 0.0);
        }
        lse.set(lse.view.offset({b, h, i}), denom > 0 ? mx + std::log(denom) : -INFINITY);
      }
    }
  }
}

std::vector<Problem> problems() {
  std::vector<Problem> ps;
  ps.push_back(
      {{.num_heads_q = 2, .num_heads_kv = 2, .head_dim = 5}, 2, 7, {}, DType::kFloat64, "mha"});
  ps.push_back({{.num_heads_q = 4, .num_heads_kv = 2, .head_dim = 4, .causal = true, .sinks = true},
                1,
                9,
                {},
                DType::kFloat64,
                "gqa_causal_sinks"});
  ps.push_back(
      {{.num_heads_q = 3, .num_heads_kv = 1, .head_dim = 3, .window_left = 2, .window_right = 1},
       2,
       8,
       {},
       DType::kFloat64,
       "mqa_window"});
  ps.push_back({{.num_heads_q = 2,
                 .num_heads_kv = 1,
                 .head_dim = 4,
                 .causal = true,
                 .window_left = 3,
                 .sinks = true},
                1,
                12,
                {0, 3, 4, 9},
                DType::kFloat64,
                "varlen_padding_causal_window_sinks"});
  ps.push_back({{.num_heads_q = 2, .num_heads_kv = 2, .head_dim = 6, .softmax_scale = 0.7f},
                1,
                10,
                {0, 6, 10},
                DType::kFloat64,
                "varlen_full_custom_scale"});
  // head_dim_v != head_dim (MLA): V and O narrower, or wider, than Q and K.
  ps.push_back({{.num_heads_q = 4,
                 .num_heads_kv = 2,
                 .head_dim = 6,
                 .head_dim_v = 4,
                 .causal = true,
                 .sinks = true},
                2,
                7,
                {},
                DType::kFloat64,
                "mla_gqa_causal_sinks"});
  ps.push_back({{.num_heads_q = 2,
                 .num_heads_kv = 1,
                 .head_dim = 3,
                 .head_dim_v = 5,
                 .window_left = 2,
                 .window_right = 1},
                1,
                10,
                {0, 4, 9},
                DType::kFloat64,
                "wider_values_varlen_window"});
  return ps;
}

class ReferenceProblems : public ::testing::TestWithParam<Problem> {};

TEST_P(ReferenceProblems, ForwardMatchesIndependentFormulation) {
  const Problem p = GetParam();
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Tensors t(p, rng);
  ASSERT_TRUE(reference_forward(local(p), t.fwd(p)).is_ok());
  EXPECT_EQ(testing::count_nan(t.o), 0) << "unwritten outputs";
  EXPECT_EQ(testing::count_nan(t.lse), 0) << "unwritten lse";
  HostTensor o = t.o, lse = t.lse;
  testing::poison(o);
  testing::poison(lse);
  naive_forward(p, t, o, lse);
  EXPECT_LE(testing::max_abs_diff(t.o, o), 1e-13);
  EXPECT_LE(testing::max_abs_diff(t.lse, lse), 1e-5);  // lse is stored as fp32
}

// FP64 central differences of L = sum(W * O) against the analytic backward (dO = W).
TEST_P(ReferenceProblems, GradientsMatchFiniteDifferences) {
  const Problem p = GetParam();
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Tensors t(p, rng);
  ASSERT_TRUE(reference_forward(local(p), t.fwd(p)).is_ok());
  ASSERT_TRUE(reference_backward(local(p), t.bwd(p)).is_ok());
  auto loss = [&]() {
    HostTensor o = t.o;
    LocalForwardArgs a = t.fwd(p);
    a.o = o.view;
    a.lse = TensorView{};
    EXPECT_TRUE(reference_forward(local(p), a).is_ok());
    double l = 0;
    for (std::int64_t i = 0; i < o.numel(); ++i) l += o.at(i) * t.d_o.at(i);
    return l;
  };
  auto check = [&](HostTensor& x, const HostTensor& grad, const char* what) {
    const double h = 1e-5;
    double max_err = 0, max_grad = 0;
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      const double x0 = x.at(i);
      x.set(i, x0 + h);
      const double lp = loss();
      x.set(i, x0 - h);
      const double lm = loss();
      x.set(i, x0);
      const double fd = (lp - lm) / (2 * h);
      max_err = std::max(max_err, std::fabs(fd - grad.at(i)));
      max_grad = std::max(max_grad, std::fabs(grad.at(i)));
    }
    EXPECT_GT(max_grad, 0.0) << what << ": gradient is identically zero";
    EXPECT_LE(max_err, 1e-6 * max_grad)
        << what << ": max |fd - analytic| " << max_err << " vs max |grad| " << max_grad;
  };
  check(t.q, t.dq, "dq");
  check(t.k, t.dk, "dk");
  check(t.v, t.dv, "dv");
  if (p.cfg.sinks) {
    // Sinks are fp32 parameters: perturb by an exactly representable fp32 step (2^-12); the
    // second-order error ~ h^2 |L'''| stays far below the tolerance.
    for (int hh = 0; hh < p.cfg.num_heads_q; ++hh) {
      const float base = static_cast<float>(t.sinks.at(hh));
      const float up = base + 0x1p-12f, down = base - 0x1p-12f;
      t.sinks.set(hh, up);
      const double lp = loss();
      t.sinks.set(hh, down);
      const double lm = loss();
      t.sinks.set(hh, base);
      const double fd = (lp - lm) / (static_cast<double>(up) - static_cast<double>(down));
      EXPECT_NEAR(fd, t.dsinks.at(hh), 1e-6 * std::max(1.0, std::fabs(fd)))
          << "dsinks[" << hh << "]";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Reference, ReferenceProblems, ::testing::ValuesIn(problems()),
                         [](const auto& param_info) { return param_info.param.name; });

TEST(Reference, PaddingRowsAreZeroWithInfiniteLse) {
  Problem p{{.num_heads_q = 2, .num_heads_kv = 1, .head_dim = 4, .causal = true, .sinks = true},
            1,
            10,
            {0, 3, 7},
            DType::kBFloat16,
            "pad"};
  std::mt19937_64 rng(testing::fresh_seed());
  Tensors t(p, rng);
  ASSERT_TRUE(reference_forward(local(p), t.fwd(p)).is_ok());
  ASSERT_TRUE(reference_backward(local(p), t.bwd(p)).is_ok());
  for (std::int64_t i = 7; i < 10; ++i) {
    for (int h = 0; h < 2; ++h) {
      EXPECT_EQ(t.lse.at(t.lse.view.offset({0, h, i})), -std::numeric_limits<double>::infinity());
      for (int d = 0; d < 4; ++d) {
        EXPECT_EQ(t.o.at(t.o.view.offset({0, i, h, d})), 0.0);
        EXPECT_EQ(t.dq.at(t.dq.view.offset({0, i, h, d})), 0.0);
      }
    }
    for (int d = 0; d < 4; ++d) {
      EXPECT_EQ(t.dk.at(t.dk.view.offset({0, i, 0, d})), 0.0);
      EXPECT_EQ(t.dv.at(t.dv.view.offset({0, i, 0, d})), 0.0);
    }
  }
  for (HostTensor* g : {&t.dq, &t.dk, &t.dv, &t.dsinks}) {
    for (std::int64_t i = 0; i < g->numel(); ++i) ASSERT_TRUE(std::isfinite(g->at(i)));
  }
}

TEST(Reference, EmptyAndOneTokenSequencesWithSinks) {
  // cu_seqlens with an empty sequence (3, 3) and a one-token sequence (3, 4): the lone token's
  // softmax runs over itself and the sink only.
  Problem p{{.num_heads_q = 1, .num_heads_kv = 1, .head_dim = 2, .sinks = true},
            1,
            4,
            {0, 3, 3, 4},
            DType::kFloat64,
            "sink_only"};
  std::mt19937_64 rng(testing::fresh_seed());
  Tensors t(p, rng);
  ASSERT_TRUE(reference_forward(local(p), t.fwd(p)).is_ok());
  // Row 3 is a one-token sequence: softmax over {itself, sink}.
  const double s3 = p.cfg.scale() *
                    (t.q.at(t.q.view.offset({0, 3, 0, 0})) * t.k.at(t.k.view.offset({0, 3, 0, 0})) +
                     t.q.at(t.q.view.offset({0, 3, 0, 1})) * t.k.at(t.k.view.offset({0, 3, 0, 1})));
  const double sink = t.sinks.at(0);
  const double lse = std::log(std::exp(s3) + std::exp(sink));
  EXPECT_NEAR(t.lse.at(t.lse.view.offset({0, 0, 3})), lse, 1e-6);
  const double w = std::exp(s3 - lse);
  EXPECT_NEAR(t.o.at(t.o.view.offset({0, 3, 0, 1})), w * t.v.at(t.v.view.offset({0, 3, 0, 1})),
              1e-14);
}

// head_dim_v < head_dim: values (and dO) padded with zero columns to head_dim give bitwise the same
// O, LSE, dQ, dK, dV and dSinks in the columns both have, and zeros in the others (a zero column
// adds exact zeros to every sum).
TEST(Reference, NarrowValuesEqualZeroPaddedValues) {
  const AttentionConfig mixed{.num_heads_q = 4,
                              .num_heads_kv = 2,
                              .head_dim = 12,
                              .head_dim_v = 8,
                              .causal = true,
                              .window_left = 5,
                              .sinks = true};
  AttentionConfig padded = mixed;
  padded.head_dim_v = 0;
  const Problem pm{mixed, 2, 9, {}, DType::kFloat64, "mixed"};
  const Problem pp{padded, 2, 9, {}, DType::kFloat64, "padded"};
  std::mt19937_64 rng(testing::fresh_seed());
  Tensors m(pm, rng), z(pp, rng);
  z.q = m.q;
  z.k = m.k;
  z.sinks = m.sinks;
  // z.v and z.d_o: m's columns, then zeros.
  auto pad = [](const HostTensor& narrow, HostTensor& wide) {
    const TensorView& n = narrow.view;
    for (std::int64_t i = 0; i < wide.numel(); ++i) wide.set(i, 0.0);
    for (std::int64_t b = 0; b < n.size(0); ++b) {
      for (std::int64_t s = 0; s < n.size(1); ++s) {
        for (std::int64_t h = 0; h < n.size(2); ++h) {
          for (std::int64_t d = 0; d < n.size(3); ++d) {
            wide.set(wide.view.offset({b, s, h, d}), narrow.at(n.offset({b, s, h, d})));
          }
        }
      }
    }
  };
  pad(m.v, z.v);
  pad(m.d_o, z.d_o);
  for (auto [t, p] : {std::pair{&m, &pm}, std::pair{&z, &pp}}) {
    ASSERT_TRUE(reference_forward(local(*p), t->fwd(*p)).is_ok());
    ASSERT_TRUE(reference_backward(local(*p), t->bwd(*p)).is_ok());
  }
  EXPECT_EQ(testing::count_nan(m.o) + testing::count_nan(m.dv), 0);
  // Narrow tensors against the padded run's first columns; the padded run's other columns are 0.
  auto same = [](const HostTensor& narrow, const HostTensor& wide) {
    std::int64_t diff = 0;
    const TensorView& n = narrow.view;
    for (std::int64_t b = 0; b < n.size(0); ++b) {
      for (std::int64_t s = 0; s < n.size(1); ++s) {
        for (std::int64_t h = 0; h < n.size(2); ++h) {
          for (std::int64_t d = 0; d < wide.view.size(3); ++d) {
            const double w = wide.at(wide.view.offset({b, s, h, d}));
            diff += d < n.size(3) ? w != narrow.at(n.offset({b, s, h, d})) : w != 0.0;
          }
        }
      }
    }
    return diff;
  };
  EXPECT_EQ(same(m.o, z.o), 0) << "O";
  EXPECT_EQ(same(m.dv, z.dv), 0) << "dV";
  EXPECT_EQ(testing::compare_bits(z.lse, m.lse).count, 0) << "LSE";
  EXPECT_EQ(testing::compare_bits(z.dq, m.dq).count, 0) << "dQ";
  EXPECT_EQ(testing::compare_bits(z.dk, m.dk).count, 0) << "dK";
  EXPECT_EQ(testing::compare_bits(z.dsinks, m.dsinks).count, 0) << "dSinks";
  EXPECT_GT(testing::max_abs(m.dq), 0.0);
}

TEST(Reference, HeadSubsetIsBitwiseEqualToAllHeads) {
  // The contract Ulysses relies on: a slice of heads computes exactly what the full run computes.
  for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
    Problem p{{.num_heads_q = 6, .num_heads_kv = 3, .head_dim = 8, .causal = true, .sinks = true},
              2,
              11,
              {},
              dtype,
              "slice"};
    std::mt19937_64 rng(testing::fresh_seed());
    Tensors t(p, rng);
    ASSERT_TRUE(reference_forward(local(p), t.fwd(p)).is_ok());
    ASSERT_TRUE(reference_backward(local(p), t.bwd(p)).is_ok());
    // Heads 2..3 use KV head 1.
    LocalProblem lp = local(p);
    lp.head_offset_q = 2;
    lp.num_heads_q_local = 2;
    lp.head_offset_kv = 1;
    lp.num_heads_kv_local = 1;
    auto slice = [](const HostTensor& x, int h0, int n) {
      TensorView v = x.view;
      v.data = static_cast<char*>(v.data) +
               h0 * v.stride(2) * static_cast<std::int64_t>(dtype_size(v.dtype));
      v.shape[2] = n;
      return v;
    };
    Tensors s = t;
    for (HostTensor* x : {&s.o, &s.lse, &s.dq, &s.dk, &s.dv, &s.dsinks}) testing::poison(*x);
    LocalForwardArgs fa;
    fa.q = slice(s.q, 2, 2);
    fa.k = slice(s.k, 1, 1);
    fa.v = slice(s.v, 1, 1);
    fa.sinks = s.sinks.view;
    fa.o = slice(s.o, 2, 2);
    fa.lse = s.lse.view;
    fa.lse.data = static_cast<float*>(fa.lse.data) + 2 * fa.lse.stride(1);
    fa.lse.shape[1] = 2;
    ASSERT_TRUE(reference_forward(lp, fa).is_ok());
    LocalBackwardArgs ba;
    ba.q = fa.q;
    ba.k = fa.k;
    ba.v = fa.v;
    ba.o = fa.o;
    ba.lse = fa.lse;
    ba.d_o = slice(s.d_o, 2, 2);
    ba.sinks = s.sinks.view;
    ba.dsinks = s.dsinks.view;
    ba.dq = slice(s.dq, 2, 2);
    ba.dk = slice(s.dk, 1, 1);
    ba.dv = slice(s.dv, 1, 1);
    ASSERT_TRUE(reference_backward(lp, ba).is_ok());
    std::int64_t diff = 0;
    for (std::int64_t b = 0; b < 2; ++b) {
      for (std::int64_t i = 0; i < 11; ++i) {
        for (int d = 0; d < 8; ++d) {
          for (int h = 2; h < 4; ++h) {
            diff += t.o.at(t.o.view.offset({b, i, h, d})) != s.o.at(s.o.view.offset({b, i, h, d}));
            diff +=
                t.dq.at(t.dq.view.offset({b, i, h, d})) != s.dq.at(s.dq.view.offset({b, i, h, d}));
          }
          diff +=
              t.dk.at(t.dk.view.offset({b, i, 1, d})) != s.dk.at(s.dk.view.offset({b, i, 1, d}));
          diff +=
              t.dv.at(t.dv.view.offset({b, i, 1, d})) != s.dv.at(s.dv.view.offset({b, i, 1, d}));
        }
      }
    }
    for (int h = 2; h < 4; ++h) diff += t.dsinks.at(h) != s.dsinks.at(h);
    EXPECT_EQ(diff, 0) << dtype_name(dtype);
    EXPECT_TRUE(std::isnan(s.dsinks.at(0))) << "wrote dsinks of a head it does not own";
  }
}

TEST(Reference, CausalFirstRowCopiesFirstValue) {
  Problem p{{.num_heads_q = 2, .num_heads_kv = 2, .head_dim = 3, .causal = true},
            1,
            5,
            {},
            DType::kFloat32,
            "causal"};
  std::mt19937_64 rng(testing::fresh_seed());
  Tensors t(p, rng);
  ASSERT_TRUE(reference_forward(local(p), t.fwd(p)).is_ok());
  for (int h = 0; h < 2; ++h) {
    for (int d = 0; d < 3; ++d) {
      EXPECT_EQ(t.o.at(t.o.view.offset({0, 0, h, d})), t.v.at(t.v.view.offset({0, 0, h, d})));
    }
  }
}

// What a pluggable kernel is handed is checked against the problem before it runs: each
// inconsistency is refused by name (the same checks guard cuDNN's kernel).
TEST(Reference, BadLocalProblemsAreNamed) {
  auto kernel = make_reference_attention();
  const AttentionConfig cfg{.num_heads_q = 4, .num_heads_kv = 2, .head_dim = 4};
  const LocalProblem good = LocalProblem::unsharded(cfg, DType::kFloat64, 1, 8, false);
  ASSERT_TRUE(kernel->check_support(good).is_ok());
  auto expect = [](const Status& s, std::initializer_list<std::string_view> needles) {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    for (auto n : needles) EXPECT_NE(s.message().find(n), std::string::npos) << s.message();
  };
  auto with = [&](auto change) {
    LocalProblem p = good;
    change(p);
    return kernel->check_support(p);
  };
  expect(with([](LocalProblem& p) {
           p.varlen = true;
           p.batch = 2;
         }),
         {"batch", "must be 1 for a packed"});
  expect(with([](LocalProblem& p) {
           p.head_offset_q = 2;
           p.num_heads_q_local = 3;
         }),
         {"query head slice", "[2, 5)", "inside [0, 4)"});
  expect(with([](LocalProblem& p) { p.num_heads_kv_local = 0; }),
         {"key/value head slice", "[0, 0)", "inside [0, 2)"});
  // Query heads 2..3 use KV head 1; a slice of KV head 0 alone does not hold it.
  expect(with([](LocalProblem& p) {
           p.head_offset_q = 2;
           p.num_heads_q_local = 2;
           p.num_heads_kv_local = 1;
         }),
         {"does not hold the heads the query slice uses", "[0, 1)", "covering [1, 2)"});
  expect(with([](LocalProblem& p) {
           p.varlen = true;
           p.seqlen_kv = 16;
         }),
         {"seqlen_kv / diagonal_offset", "16 / 0"});
  expect(with([](LocalProblem& p) { p.grad_kv_dtype = DType::kBFloat16; }),
         {"grad_kv_dtype", "bf16", "fp64 or fp32"});

  // Views: a tensor on another device than the kernel's, and cu_seqlens beside VarlenRows.
  HostTensor q(DType::kFloat64, {1, 8, 4, 4}), kv(DType::kFloat64, {1, 8, 2, 4});
  HostTensor o(DType::kFloat64, {1, 8, 4, 4});
  TensorView k_on_gpu = kv.view;
  k_on_gpu.device = Device::cuda(0);
  expect(kernel->forward(good, {.q = q.view, .k = k_on_gpu, .v = kv.view, .o = o.view}, nullptr),
         {"k", "is on the wrong device", "cuda:0", "host"});
  LocalProblem rows = LocalProblem::unsharded(cfg, DType::kFloat64, 1, 8, true);
  rows.varlen_rows = true;
  const std::vector<std::int32_t> cu{0, 8}, begin{0}, len{8};
  expect(
      kernel->forward(rows,
                      {.q = q.view,
                       .k = kv.view,
                       .v = kv.view,
                       .o = o.view,
                       .cu_seqlens = cu,
                       .rows = {.q_begin = begin, .q_len = len, .kv_begin = begin, .kv_len = len}},
                      nullptr),
      {"cu_seqlens", "is given with varlen_rows"});
}

}  // namespace
}  // namespace ulysses

namespace ulysses {
namespace {

// A [1, rows, H, D] (or [1, H, rows] for an LSE, dim 2) view of rows [row0, row0 + rows).
TensorView row_slice(const TensorView& v, int dim, std::int64_t row0, std::int64_t rows) {
  TensorView out = v;
  out.shape[static_cast<std::size_t>(dim)] = rows;
  out.data = static_cast<char*>(v.data) +
             row0 * v.stride(dim) * static_cast<std::int64_t>(dtype_size(v.dtype));
  return out;
}

TEST(ReferenceVarlenRows, ContiguousRowsEqualCuSeqlensBitwise) {
  // VarlenRows with q = kv = the cu_seqlens ranges is the same problem: bitwise the same outputs.
  Problem p{{.num_heads_q = 4,
             .num_heads_kv = 2,
             .head_dim = 8,
             .causal = true,
             .window_left = 3,
             .sinks = true},
            1,
            20,
            {0, 5, 5, 12, 16},
            DType::kFloat64,
            "rows"};
  std::mt19937_64 rng(testing::fresh_seed());
  Tensors a(p, rng), b = a;
  ASSERT_TRUE(reference_forward(local(p), a.fwd(p)).is_ok());
  ASSERT_TRUE(reference_backward(local(p), a.bwd(p)).is_ok());
  const std::vector<std::int32_t> begin{0, 5, 5, 12}, len{5, 0, 7, 4};
  const VarlenRows rows{.q_begin = begin, .q_len = len, .kv_begin = begin, .kv_len = len};
  LocalProblem lp = local(p);
  lp.varlen_rows = true;
  LocalForwardArgs f = b.fwd(p);
  LocalBackwardArgs g = b.bwd(p);
  f.cu_seqlens = g.cu_seqlens = {};
  f.rows = g.rows = rows;
  ASSERT_TRUE(reference_forward(lp, f).is_ok());
  ASSERT_TRUE(reference_backward(lp, g).is_ok());
  EXPECT_BITWISE_EQ(a.o, b.o, "O");
  EXPECT_BITWISE_EQ(a.lse, b.lse, "LSE");
  EXPECT_BITWISE_EQ(a.dq, b.dq, "dQ");
  EXPECT_BITWISE_EQ(a.dk, b.dk, "dK");
  EXPECT_BITWISE_EQ(a.dv, b.dv, "dV");
  EXPECT_BITWISE_EQ(a.dsinks, b.dsinks, "dSinks");
}

// Queries and keys in different rows with gaps, causal: every sequence must equal a dense block
// call on its own rows; rows of no sequence are 0 (LSE -inf). Top-left with diagonal offset 2, and
// bottom-right (each sequence's offset kv_len - q_len, plus a window) with offset 0.
struct OwnBlockCase {
  std::string name;
  bool bottom_right;
  std::int64_t off;
  int window_left;
  std::vector<std::int32_t> qb, ql, kb, kl;
};

class ReferenceVarlenRowsBlocks : public ::testing::TestWithParam<OwnBlockCase> {};

INSTANTIATE_TEST_SUITE_P(
    ReferenceVarlenRows, ReferenceVarlenRowsBlocks,
    ::testing::Values(
        OwnBlockCase{"top_left_offset_2", false, 2, -1, {0, 6}, {4, 5}, {1, 7}, {4, 5}},
        OwnBlockCase{"bottom_right", true, 0, -1, {0, 6}, {4, 5}, {0, 6}, {6, 6}},
        OwnBlockCase{"bottom_right_window", true, 0, 2, {1, 6}, {3, 5}, {0, 5}, {5, 7}}),
    [](const auto& param_info) { return param_info.param.name; });

TEST_P(ReferenceVarlenRowsBlocks, EachSequenceIsItsOwnBlock) {
  const OwnBlockCase bc = GetParam();
  const AttentionConfig cfg{.num_heads_q = 2,
                            .num_heads_kv = 1,
                            .head_dim = 4,
                            .causal = true,
                            .window_left = bc.window_left};
  const std::int64_t Sq = 14, Skv = 12, off = bc.off;
  const std::vector<std::int32_t>&qb = bc.qb, &ql = bc.ql, &kb = bc.kb, &kl = bc.kl;
  std::mt19937_64 rng(testing::fresh_seed());
  const DType f64 = DType::kFloat64;
  HostTensor q(f64, {1, Sq, 2, 4}), k(f64, {1, Skv, 1, 4}), v = k, d_o = q, o = q, dq = q, dk = k,
                                                            dv = k;
  HostTensor lse(DType::kFloat32, {1, 2, Sq});
  for (HostTensor* t : {&q, &k, &v, &d_o}) testing::fill_uniform(*t, rng);
  for (HostTensor* t : {&o, &dq, &dk, &dv, &lse}) testing::poison(*t);
  LocalProblem p = LocalProblem::unsharded(cfg, f64, 1, Sq, true);
  p.varlen_rows = true;
  p.seqlen_kv = Skv;
  p.diagonal_offset = off;
  p.bottom_right = bc.bottom_right;
  const VarlenRows rows{.q_begin = qb, .q_len = ql, .kv_begin = kb, .kv_len = kl};
  ASSERT_TRUE(
      reference_forward(
          p, {.q = q.view, .k = k.view, .v = v.view, .o = o.view, .lse = lse.view, .rows = rows})
          .is_ok());
  ASSERT_TRUE(reference_backward(p, {.q = q.view,
                                     .k = k.view,
                                     .v = v.view,
                                     .o = o.view,
                                     .lse = lse.view,
                                     .d_o = d_o.view,
                                     .dq = dq.view,
                                     .dk = dk.view,
                                     .dv = dv.view,
                                     .rows = rows})
                  .is_ok());
  std::vector<char> q_used(static_cast<std::size_t>(Sq), 0), k_used(static_cast<std::size_t>(Skv));
  for (std::size_t s = 0; s < qb.size(); ++s) {
    LocalProblem d = LocalProblem::unsharded(cfg, f64, 1, ql[s]);
    d.seqlen_kv = kl[s];
    d.diagonal_offset = off + (bc.bottom_right ? kl[s] - ql[s] : 0);
    HostTensor eo(f64, {1, ql[s], 2, 4}), edq = eo, edk(f64, {1, kl[s], 1, 4}), edv = edk;
    HostTensor e_lse(DType::kFloat32, {1, 2, ql[s]});
    const TensorView sq = row_slice(q.view, 1, qb[s], ql[s]),
                     sdo = row_slice(d_o.view, 1, qb[s], ql[s]),
                     sk = row_slice(k.view, 1, kb[s], kl[s]),
                     sv = row_slice(v.view, 1, kb[s], kl[s]);
    ASSERT_TRUE(
        reference_forward(d, {.q = sq, .k = sk, .v = sv, .o = eo.view, .lse = e_lse.view}).is_ok());
    ASSERT_TRUE(reference_backward(d, {.q = sq,
                                       .k = sk,
                                       .v = sv,
                                       .o = eo.view,
                                       .lse = e_lse.view,
                                       .d_o = sdo,
                                       .dq = edq.view,
                                       .dk = edk.view,
                                       .dv = edv.view})
                    .is_ok());
    HostTensor got = eo;
    ASSERT_TRUE(copy_tensor(got.view, row_slice(o.view, 1, qb[s], ql[s])).is_ok());
    EXPECT_BITWISE_EQ(eo, got, "O of sequence " + std::to_string(s));
    ASSERT_TRUE(copy_tensor(got.view, row_slice(dq.view, 1, qb[s], ql[s])).is_ok());
    EXPECT_BITWISE_EQ(edq, got, "dQ of sequence " + std::to_string(s));
    HostTensor gk = edk;
    ASSERT_TRUE(copy_tensor(gk.view, row_slice(dk.view, 1, kb[s], kl[s])).is_ok());
    EXPECT_BITWISE_EQ(edk, gk, "dK of sequence " + std::to_string(s));
    ASSERT_TRUE(copy_tensor(gk.view, row_slice(dv.view, 1, kb[s], kl[s])).is_ok());
    EXPECT_BITWISE_EQ(edv, gk, "dV of sequence " + std::to_string(s));
    HostTensor gl = e_lse;
    ASSERT_TRUE(copy_tensor(gl.view, row_slice(lse.view, 2, qb[s], ql[s])).is_ok());
    EXPECT_BITWISE_EQ(e_lse, gl, "LSE of sequence " + std::to_string(s));
    for (std::int32_t i = 0; i < ql[s]; ++i) q_used[static_cast<std::size_t>(qb[s] + i)] = 1;
    for (std::int32_t j = 0; j < kl[s]; ++j) k_used[static_cast<std::size_t>(kb[s] + j)] = 1;
  }
  for (std::int64_t i = 0; i < Sq; ++i) {
    if (q_used[static_cast<std::size_t>(i)]) continue;
    for (int h = 0; h < 2; ++h) {
      EXPECT_EQ(lse.at(lse.view.offset({0, h, i})), -std::numeric_limits<double>::infinity());
      for (int x = 0; x < 4; ++x) {
        EXPECT_EQ(o.at(o.view.offset({0, i, h, x})), 0.0) << "row " << i;
        EXPECT_EQ(dq.at(dq.view.offset({0, i, h, x})), 0.0) << "row " << i;
      }
    }
  }
  for (std::int64_t j = 0; j < Skv; ++j) {
    if (k_used[static_cast<std::size_t>(j)]) continue;
    for (int x = 0; x < 4; ++x) {
      EXPECT_EQ(dk.at(dk.view.offset({0, j, 0, x})), 0.0) << "key row " << j;
      EXPECT_EQ(dv.at(dv.view.offset({0, j, 0, x})), 0.0) << "key row " << j;
    }
  }
}

TEST(ReferenceVarlenRows, BadRowsAreNamed) {
  auto kernel = make_reference_attention();
  const AttentionConfig cfg{.num_heads_q = 1, .num_heads_kv = 1, .head_dim = 4};
  LocalProblem p = LocalProblem::unsharded(cfg, DType::kFloat64, 1, 8, true);
  p.varlen_rows = true;
  HostTensor q(DType::kFloat64, {1, 8, 1, 4}), o = q;
  auto fwd = [&](std::vector<std::int32_t> qb, std::vector<std::int32_t> ql,
                 std::vector<std::int32_t> kb, std::vector<std::int32_t> kl) {
    return kernel->forward(p,
                           {.q = q.view,
                            .k = q.view,
                            .v = q.view,
                            .o = o.view,
                            .rows = {.q_begin = qb, .q_len = ql, .kv_begin = kb, .kv_len = kl}},
                           nullptr);
  };
  auto expect = [](const Status& s, std::initializer_list<std::string_view> needles) {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    for (auto n : needles) EXPECT_NE(s.message().find(n), std::string::npos) << s.message();
  };
  expect(fwd({0, 4}, {4, 5}, {0, 4}, {4, 4}), {"rows.q_begin[1]", "[4, 9)", "8)"});
  expect(fwd({0, 2}, {4, 2}, {0, 4}, {4, 4}), {"rows.q_begin[1]", "[2, 4)", "not overlapping"});
  expect(fwd({0}, {-1}, {0}, {4}), {"rows.q_len[0]", "got -1"});
  expect(fwd({0, 4}, {4}, {0, 4}, {4, 4}), {"rows", "one length"});
  LocalProblem bad = p;
  bad.varlen = false;
  expect(kernel->check_support(bad), {"varlen_rows", "needs varlen"});
  LocalProblem corner = p;
  corner.varlen_rows = false;
  corner.bottom_right = true;
  expect(kernel->check_support(corner), {"bottom_right", "needs varlen_rows"});
}

}  // namespace
}  // namespace ulysses
