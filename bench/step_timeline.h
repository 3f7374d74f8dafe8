// ulysses-bench --timeline: where one step's time goes on each rank, from CUDA events recorded
// around every local kernel call and every exchange of an ordinary step (nothing serialised, unlike
// --trace-calls). Host-only: the events live in gpu_bench.cc; the interval arithmetic here is what
// the CPU tests check.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace ulysses::bench {

/// One marked piece of a step, in ms from the step's start on its rank's caller stream.
struct TimelineSpan {
  int rank = 0;
  int stream = 0;       // 0: the caller's stream; 1, 2, ...: the plan's others, in order seen
  bool kernel = false;  // a local kernel call; else an exchange (or another collective)
  std::string what;     // "fwd 16 heads", "exchange", ...
  double begin_ms = 0, end_ms = 0;
  double bytes = 0;  // exchanges: bytes this rank sends to other ranks
};

/// A step's spans reduced to what limits it.
struct TimelineSummary {
  double step_ms = 0;
  double kernel_busy_ms = 0;  // time at least one kernel call ran
  double kernel_sum_ms = 0;   // the calls' durations added (> busy where calls overlap)
  double exchange_busy_ms = 0;
  double exchange_exposed_ms = 0;  // exchange time beside no kernel call: not hidden
  double idle_ms = 0;              // neither a kernel call nor an exchange (packs, waits, host)
};

using Intervals = std::vector<std::pair<double, double>>;

/// Sorted, disjoint intervals covering the same points as `in` (empty ones dropped).
inline Intervals merge_intervals(Intervals in) {
  std::sort(in.begin(), in.end());
  Intervals out;
  for (const auto& [b, e] : in) {
    if (e <= b) {
      continue;
    }
    if (!out.empty() && b <= out.back().second) {
      out.back().second = std::max(out.back().second, e);
    } else {
      out.emplace_back(b, e);
    }
  }
  return out;
}

/// Total length of the union of `in`.
inline double covered_ms(const Intervals& in) {
  double total = 0;
  for (const auto& [b, e] : merge_intervals(in)) {
    total += e - b;
  }
  return total;
}

/// Length of the points `a` and `b` both cover.
inline double overlap_ms(const Intervals& a, const Intervals& b) {
  const Intervals x = merge_intervals(a), y = merge_intervals(b);
  double total = 0;
  std::size_t i = 0, j = 0;
  while (i < x.size() && j < y.size()) {
    const double lo = std::max(x[i].first, y[j].first);
    const double hi = std::min(x[i].second, y[j].second);
    if (hi > lo) {
      total += hi - lo;
    }
    if (x[i].second < y[j].second) {
      ++i;
    } else {
      ++j;
    }
  }
  return total;
}

/// The summary of one rank's step of `step_ms` (spans clipped to [0, step_ms]).
inline TimelineSummary summarize_step(const std::vector<TimelineSpan>& spans, double step_ms) {
  TimelineSummary s;
  s.step_ms = step_ms;
  Intervals kernels, exchanges;
  for (const TimelineSpan& t : spans) {
    const double b = std::clamp(t.begin_ms, 0.0, step_ms);
    const double e = std::clamp(t.end_ms, 0.0, step_ms);
    (t.kernel ? kernels : exchanges).emplace_back(b, e);
    if (t.kernel) {
      s.kernel_sum_ms += std::max(0.0, e - b);
    }
  }
  s.kernel_busy_ms = covered_ms(kernels);
  s.exchange_busy_ms = covered_ms(exchanges);
  s.exchange_exposed_ms = s.exchange_busy_ms - overlap_ms(exchanges, kernels);
  Intervals both = kernels;
  both.insert(both.end(), exchanges.begin(), exchanges.end());
  s.idle_ms = std::max(0.0, step_ms - covered_ms(both));
  return s;
}

/// One row's marked step for a trace file: its name ("seq 8192 cp 2 ulysses via peer chunks 2")
/// and every rank's spans.
struct TimelineTrace {
  std::string row;
  std::vector<TimelineSpan> spans;
};

/// `text` as the inside of a JSON string.
inline std::string json_escaped(const std::string& text) {
  std::string out;
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x",
                    static_cast<unsigned>(static_cast<unsigned char>(c)));
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

/// Writes `rows` in the Trace Event Format that Perfetto and chrome://tracing open
/// (--timeline-trace): one process per row and rank, named after both, one thread per stream
/// (0: the caller's), one complete event per span, in microseconds from the step's start.
inline void write_trace_events(std::ostream& os, const std::vector<TimelineTrace>& rows) {
  // ms as microseconds to the nanosecond, whatever the stream's precision (steps reach seconds).
  auto micros = [](double ms) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f", ms * 1e3);
    std::string text = buf;
    text.erase(text.find_last_not_of('0') + 1);  // 1500.000 -> 1500.
    if (text.back() == '.') {
      text.pop_back();
    }
    return text;
  };
  os << "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [";
  bool first = true;
  auto sep = [&] {
    os << (first ? "\n" : ",\n");
    first = false;
  };
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::vector<int> ranks;
    for (const TimelineSpan& t : rows[i].spans) {
      if (std::find(ranks.begin(), ranks.end(), t.rank) == ranks.end()) {
        ranks.push_back(t.rank);
      }
    }
    for (const int r : ranks) {
      const std::size_t pid = i * 1000 + static_cast<std::size_t>(r);
      sep();
      os << "{\"ph\": \"M\", \"name\": \"process_name\", \"pid\": " << pid
         << ", \"args\": {\"name\": \"" << json_escaped(rows[i].row) << ", rank " << r << "\"}}";
      sep();
      os << "{\"ph\": \"M\", \"name\": \"process_sort_index\", \"pid\": " << pid
         << ", \"args\": {\"sort_index\": " << pid << "}}";
    }
    for (const TimelineSpan& t : rows[i].spans) {
      sep();
      os << "{\"ph\": \"X\", \"name\": \"" << json_escaped(t.what) << "\", \"cat\": \""
         << (t.kernel ? "kernel" : "exchange")
         << "\", \"pid\": " << i * 1000 + static_cast<std::size_t>(t.rank)
         << ", \"tid\": " << t.stream << ", \"ts\": " << micros(t.begin_ms)
         << ", \"dur\": " << micros(t.end_ms - t.begin_ms)
         << ", \"args\": {\"bytes\": " << static_cast<long long>(t.bytes) << "}}";
    }
  }
  os << "\n]}\n";
}

/// Most warm-up steps extra_warmup_steps() asks for (a bound for tiny steps).
inline constexpr int kMaxWarmupSteps = 20000;

/// Warm-up steps to run after the first ones, which took `done_ms` of GPU time at `step_ms` per
/// step now, so that the warm-up lasts at least `warmup_ms` (--warmup-ms): a GPU fresh from idle
/// runs at its boost clock for the first ~0.1 s of load before its power cap pulls it down, so
/// timed steps after a short warm-up read faster than a sustained run (PERF.md, Method).
inline int extra_warmup_steps(double warmup_ms, double done_ms, double step_ms) {
  if (!(warmup_ms > done_ms) || !(step_ms > 0)) {
    return 0;
  }
  const double n = std::ceil((warmup_ms - done_ms) / step_ms);
  return n >= kMaxWarmupSteps ? kMaxWarmupSteps : static_cast<int>(n);
}

}  // namespace ulysses::bench
