// ulysses-bench --timeline reduces a step's marked spans to kernel, exchange and idle time; its
// "exposed exchange" number is what decides whether head chunks hide the exchanges, so the interval
// arithmetic is checked against counting unit cells on random intervals.
#include <gtest/gtest.h>

#include <cctype>
#include <random>
#include <sstream>
#include <string>

#include "bench/step_timeline.h"

namespace ulysses::bench {
namespace {

// Unit cells [c, c + 1) of [0, n) that some interval of `in` covers (integer endpoints).
std::vector<bool> cells(const Intervals& in, int n) {
  std::vector<bool> out(static_cast<std::size_t>(n), false);
  for (const auto& [b, e] : in) {
    for (int c = static_cast<int>(b); c < static_cast<int>(e); ++c) {
      out[static_cast<std::size_t>(c)] = true;
    }
  }
  return out;
}

Intervals random_intervals(std::mt19937& rng, int count, int n) {
  std::uniform_int_distribution<int> at(0, n);
  Intervals out;
  for (int i = 0; i < count; ++i) {
    int b = at(rng), e = at(rng);
    if (i % 5 == 4) {
      e = b;  // empty ones too
    }
    out.emplace_back(std::min(b, e), std::max(b, e));
  }
  return out;
}

TEST(Timeline, CoveredAndOverlapCountWhatCellsSay) {
  std::mt19937 rng(20261204);
  constexpr int kN = 60;
  for (int trial = 0; trial < 300; ++trial) {
    const Intervals a = random_intervals(rng, 1 + trial % 7, kN);
    const Intervals b = random_intervals(rng, 1 + trial % 4, kN);
    const std::vector<bool> ca = cells(a, kN), cb = cells(b, kN);
    double want_a = 0, want_both = 0;
    for (int c = 0; c < kN; ++c) {
      want_a += ca[static_cast<std::size_t>(c)] ? 1 : 0;
      want_both += ca[static_cast<std::size_t>(c)] && cb[static_cast<std::size_t>(c)] ? 1 : 0;
    }
    ASSERT_EQ(covered_ms(a), want_a) << "trial " << trial;
    ASSERT_EQ(overlap_ms(a, b), want_both) << "trial " << trial;
    ASSERT_EQ(overlap_ms(b, a), want_both) << "trial " << trial;
    // Merged: sorted, disjoint, not touching, covering the same cells.
    const Intervals m = merge_intervals(a);
    for (std::size_t i = 0; i < m.size(); ++i) {
      ASSERT_LT(m[i].first, m[i].second);
      if (i > 0) {
        ASSERT_LT(m[i - 1].second, m[i].first);
      }
    }
    ASSERT_EQ(cells(m, kN), ca) << "trial " << trial;
  }
}

TEST(Timeline, SummaryTellsHiddenFromExposedExchanges) {
  // Kernels on two streams overlap in [4, 5]; exchanges at both ends, each 1 ms under a kernel;
  // nothing in [10, 12]. One span runs past the step's end and is clipped.
  const std::vector<TimelineSpan> spans = {
      {.stream = 0, .kernel = true, .what = "fwd", .begin_ms = 1, .end_ms = 5},
      {.stream = 1, .kernel = true, .what = "fwd", .begin_ms = 4, .end_ms = 8},
      {.stream = 2, .kernel = false, .what = "exchange", .begin_ms = 0, .end_ms = 2},
      {.stream = 2, .kernel = false, .what = "exchange", .begin_ms = 7, .end_ms = 10},
      {.stream = 2, .kernel = false, .what = "exchange", .begin_ms = 11.5, .end_ms = 13},
  };
  const TimelineSummary s = summarize_step(spans, 12);
  EXPECT_EQ(s.step_ms, 12);
  EXPECT_EQ(s.kernel_sum_ms, 8);
  EXPECT_EQ(s.kernel_busy_ms, 7);
  EXPECT_EQ(s.exchange_busy_ms, 5.5);     // 2 + 3 + 0.5 (clipped at 12)
  EXPECT_EQ(s.exchange_exposed_ms, 3.5);  // [0, 1], [8, 10], [11.5, 12]
  EXPECT_EQ(s.idle_ms, 1.5);              // [10, 11.5]
}

TEST(Timeline, EmptyStepIsAllIdle) {
  const TimelineSummary s = summarize_step({}, 3);
  EXPECT_EQ(s.kernel_busy_ms, 0);
  EXPECT_EQ(s.exchange_exposed_ms, 0);
  EXPECT_EQ(s.idle_ms, 3);
}

TEST(Warmup, ExtraStepsFillTheRequestedTime) {
  EXPECT_EQ(extra_warmup_steps(0, 7, 3.5), 0);      // --warmup-ms 0: the two fixed steps only
  EXPECT_EQ(extra_warmup_steps(500, 600, 300), 0);  // already long enough
  EXPECT_EQ(extra_warmup_steps(500, 7, 3.5), 141);  // ceil(493 / 3.5)
  EXPECT_EQ(extra_warmup_steps(500, 100, 50), 8);   // exactly 400 more
  EXPECT_EQ(extra_warmup_steps(500, 0, 0), 0);      // no step time measured: none
  EXPECT_EQ(extra_warmup_steps(1e9, 0, 1e-3), kMaxWarmupSteps);
  for (double step :
       {0.2, 1.9, 28.0, 460.0}) {  // the steps added reach the time, one fewer would not
    const int n = extra_warmup_steps(500, 2 * step, step);
    EXPECT_GE(2 * step + n * step, 500 - 1e-9) << step;
    if (n > 0) {
      EXPECT_LT(2 * step + (n - 1) * step, 500) << step;
    }
  }
}

// A minimal JSON syntax check (RFC 8259 values; numbers as the writer prints them), so the trace
// file is known to load in Perfetto / chrome://tracing: true if `text` is one valid value.
class JsonCheck {
 public:
  explicit JsonCheck(std::string text) : s_(std::move(text)) {}
  bool valid() {
    ws();
    if (!value()) {
      return false;
    }
    ws();
    return i_ == s_.size();
  }

 private:
  bool value() {
    if (i_ >= s_.size()) {
      return false;
    }
    const char c = s_[i_];
    if (c == '{') {
      return object();
    }
    if (c == '[') {
      return array();
    }
    if (c == '"') {
      return string();
    }
    return number();
  }
  bool object() {
    ++i_;
    ws();
    if (peek('}')) {
      return true;
    }
    do {
      ws();
      if (!string()) {
        return false;
      }
      ws();
      if (!peek(':')) {
        return false;
      }
      ws();
      if (!value()) {
        return false;
      }
      ws();
    } while (peek(','));
    return peek('}');
  }
  bool array() {
    ++i_;
    ws();
    if (peek(']')) {
      return true;
    }
    do {
      ws();
      if (!value()) {
        return false;
      }
      ws();
    } while (peek(','));
    return peek(']');
  }
  bool string() {
    if (!peek('"')) {
      return false;
    }
    while (i_ < s_.size() && s_[i_] != '"') {
      if (static_cast<unsigned char>(s_[i_]) < 0x20) {
        return false;
      }
      if (s_[i_] == '\\') {
        ++i_;
        if (i_ < s_.size() && s_[i_] == 'u') {
          for (int k = 0; k < 4; ++k) {
            if (++i_ >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[i_]))) {
              return false;
            }
          }
        } else if (i_ >= s_.size() || std::string("\"\\/bfnrt").find(s_[i_]) == std::string::npos) {
          return false;
        }
      }
      ++i_;
    }
    return peek('"');
  }
  bool number() {
    const std::size_t start = i_;
    while (i_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[i_])) ||
                              std::string("+-.eE").find(s_[i_]) != std::string::npos)) {
      ++i_;
    }
    return i_ > start;
  }
  bool peek(char c) {
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  void ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) {
      ++i_;
    }
  }
  std::string s_;
  std::size_t i_ = 0;
};

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) {
    ++n;
  }
  return n;
}

TEST(Timeline, TraceFileIsValidJsonWithAnEventPerSpan) {
  const std::vector<TimelineTrace> rows = {
      {.row = "seq 8192 cp 2 ulysses via peer chunks 2",
       .spans =
           {{.rank = 0,
             .stream = 0,
             .kernel = true,
             .what = "fwd 8 heads",
             .begin_ms = 1.5,
             .end_ms = 4},
            {.rank = 0,
             .stream = 1,
             .what = "exchange",
             .begin_ms = 0,
             .end_ms = 1.5,
             .bytes = 12582912},
            {.rank = 1, .stream = 0, .kernel = true, .what = "bwd", .begin_ms = 2, .end_ms = 9}}},
      {.row = "a \"quoted\"\nname\\", .spans = {{.rank = 0, .what = "x", .end_ms = 1}}},
      {.row = "no spans"},
  };
  std::ostringstream os;
  write_trace_events(os, rows);
  const std::string trace = os.str();
  EXPECT_TRUE(JsonCheck(trace).valid()) << trace;
  EXPECT_EQ(count_of(trace, "\"ph\": \"X\""), 4u);
  // A process per (row, rank) that has spans, each named and sorted.
  EXPECT_EQ(count_of(trace, "\"process_name\""), 3u);
  EXPECT_NE(trace.find("\"name\": \"seq 8192 cp 2 ulysses via peer chunks 2, rank 1\""),
            std::string::npos);
  EXPECT_NE(trace.find("\"name\": \"a \\\"quoted\\\"\\u000aname\\\\, rank 0\""), std::string::npos)
      << trace;
  // Microseconds from the step's start; the second row's process ids are apart from the first's.
  EXPECT_NE(trace.find("\"name\": \"fwd 8 heads\", \"cat\": \"kernel\", \"pid\": 0, \"tid\": 0, "
                       "\"ts\": 1500, \"dur\": 2500"),
            std::string::npos)
      << trace;
  EXPECT_NE(trace.find("\"cat\": \"exchange\", \"pid\": 0, \"tid\": 1, \"ts\": 0, \"dur\": 1500, "
                       "\"args\": {\"bytes\": 12582912}"),
            std::string::npos)
      << trace;
  EXPECT_NE(trace.find("\"pid\": 1000, \"tid\": 0"), std::string::npos) << trace;
  // The checker itself rejects what a broken writer would produce.
  EXPECT_FALSE(JsonCheck("{\"a\": [1, 2,]}").valid());
  EXPECT_FALSE(JsonCheck("{\"a\": \"x\ny\"}").valid());
  EXPECT_FALSE(JsonCheck("{\"a\": 1} {").valid());
}

}  // namespace
}  // namespace ulysses::bench
