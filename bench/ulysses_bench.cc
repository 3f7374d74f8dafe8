// ulysses-bench: runs distributed attention, checks it against the unsharded run, and times it.
//
// Every row carries performance and correctness together: ms per forward+backward step, the max
// error of O, dQ, dK, dV against the unsharded reference, and pass/fail. Exit code 0 only if every
// row passed; 2 for invalid arguments (with the library's validation message), 1 for a failed
// check.
//
// This build's path: host ranks on the loopback communicator with the FP64 reference kernel (the
// whole algorithm on CPU). Times here are CPU times of the reference, not GPU performance.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_options.h"
#include "common/check.h"
#include "common/dtype_convert.h"
#include "common/host_tensor.h"
#include "ulysses/gpu.h"
#include "ulysses/ulysses.h"

namespace {

using namespace ulysses;
using bench::Options;

struct Row {
  int cp = 1;
  std::int64_t seq = 0;
  std::string strategy;
  double ms_median = 0, ms_max_rank = 0;
  double err_o = 0, err_dq = 0, err_dk = 0, err_dv = 0;
  bool exact = false;  // bitwise equal to the unsharded run where expected
  bool checked = false;
  bool pass = true;
  bool skipped = false;  // --doc-order balanced where the order changes nothing
  double balance = 1;    // the slowest rank's attention pairs over the mean
  std::string note;
  std::string repro;
};

using Tensor = detail::HostTensor;

double max_abs_diff(const Tensor& a, const Tensor& b) {
  double m = 0;
  for (std::int64_t i = 0; i < a.view.numel(); ++i) {
    const double x = a.at(i), y = b.at(i);
    if (std::isnan(x) || std::isnan(y)) return INFINITY;
    if (x == y) continue;  // also equal infinities
    m = std::max(m, std::fabs(x - y));
  }
  return m;
}

bool bitwise_equal(const Tensor& a, const Tensor& b) { return a.storage == b.storage; }

std::string repro_command(const Options& o, int cp, std::int64_t seq, Strategy strategy,
                          SavedActivations saved, PackedSharding sharding, bool balanced) {
  std::ostringstream os;
  os << "ulysses-bench --device cpu --cp " << cp << " --seq " << seq << " --batch " << o.batch
     << " --heads " << o.heads << " --kv-heads " << o.kv_heads << " --head-dim " << o.head_dim
     << (o.head_dim_v > 0 ? " --head-dim-v " + std::to_string(o.head_dim_v) : std::string())
     << " --dtype " << o.dtype << (o.causal ? " --causal" : " --no-causal") << " --window "
     << o.window[0] << "," << o.window[1] << (o.sinks ? " --sinks" : "") << " --varlen " << o.varlen
     << " --strategy " << strategy_name(strategy)
     << (strategy == Strategy::kHybrid ? " --ulysses-degree " + std::to_string(o.ulysses_degree)
                                       : std::string())
     << (sharding != PackedSharding::kDefault
             ? " --packed-sharding " + std::string(packed_sharding_name(sharding))
             : std::string())
     << (saved == SavedActivations::kLseOnly
             ? std::string(" --saved lse") +
                   (strategy == Strategy::kUlysses
                        ? " --in-flight " + std::to_string(o.in_flight.front())
                        : std::string())
             : std::string())
     << (strategy == Strategy::kUlysses && !o.chunks.empty()
             ? " --chunks " + std::to_string(o.chunks.front())
             : std::string())
     << (balanced ? " --doc-order balanced" : "") << " --iters " << o.iters;
  return os.str();
}

// Packs `n` sequences of pseudo-random lengths into at most `total` tokens (the rest is padding).
std::vector<std::int32_t> make_cu_seqlens(int n, std::int64_t total, std::mt19937_64& rng) {
  std::vector<std::int32_t> cu = {0};
  std::uniform_real_distribution<double> u(0.5, 1.5);
  std::vector<double> w(static_cast<std::size_t>(n));
  double sum = 0;
  for (double& x : w) sum += (x = u(rng));
  const double real = static_cast<double>(total) * 0.9;  // leave ~10% padding
  for (int i = 0; i < n; ++i) {
    cu.push_back(cu.back() +
                 static_cast<std::int32_t>(real * w[static_cast<std::size_t>(i)] / sum));
  }
  return cu;
}

// Runs one (cp, seq) case on the loopback communicator; returns the row, or a Status for bad input.
// `balanced`: the documents in the order balance_packed_sequences() gives this layout (a row
// marked skipped where that is the generated order).
Result<Row> run_cpu_case(const Options& o, int cp, std::int64_t seq, DType dtype, Strategy strategy,
                         SavedActivations saved_activations, PackedSharding sharding,
                         bool balanced) {
  Row row;
  row.cp = cp;
  row.seq = seq;
  row.strategy = std::string(strategy_name(strategy)) +
                 (sharding == PackedSharding::kStream ? "+stream" : "") +
                 (saved_activations == SavedActivations::kLseOnly ? "+lse" : "") +
                 (balanced ? "+balanced" : "");
  row.repro = repro_command(o, cp, seq, strategy, saved_activations, sharding, balanced);
  const bool thd = o.varlen > 0;
  const std::int64_t B = thd ? 1 : o.batch;
  const PlanConfig cfg{
      .attention = {.num_heads_q = o.heads,
                    .num_heads_kv = o.kv_heads,
                    .head_dim = o.head_dim,
                    .head_dim_v = o.head_dim_v,
                    .causal = o.causal,
                    .window_left = o.window[0],
                    .window_right = o.window[1],
                    .sinks = o.sinks},
      .parallel = {.strategy = strategy,
                   .cp = cp,
                   .ulysses_degree = strategy == Strategy::kHybrid ? o.ulysses_degree : 0,
                   .packed_sharding = sharding},
      .layout = thd ? Layout::kTHD : Layout::kBSHD,
      .dtype = dtype,
      .batch = B,
      .seqlen = seq,
      .training = true,
      .overlap_chunks = strategy == Strategy::kUlysses && !o.chunks.empty() ? o.chunks.front() : 1,
      .backward_keeps_saved = o.keep_saved,
      .saved_activations = saved_activations,
      .chunks_in_flight = o.in_flight.front()};
  if (Status s = cfg.validate(); !s.is_ok()) return s;

  std::mt19937_64 rng(o.seed ? o.seed : std::random_device{}());
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  const std::int64_t D = o.head_dim, Dv = cfg.attention.value_dim();
  // `value`: V, O, dO and dV, of head_dim_v.
  auto act = [&](int heads, bool value = false) {
    return Tensor(dtype, {B, seq, heads, value ? Dv : D});
  };
  Tensor q = act(o.heads), k = act(o.kv_heads), v = act(o.kv_heads, true), d_o = act(o.heads, true);
  Tensor sinks(DType::kFloat32, {o.heads});
  for (Tensor* t : {&q, &k, &v, &d_o, &sinks}) {
    for (std::int64_t i = 0; i < t->view.numel(); ++i) t->set(i, u(rng));
  }
  // Zigzag strategies: documents in multiples of 2 ring tokens, so that ring's and hybrid's padded
  // layout is the stream itself and one unsharded run checks every strategy.
  const std::int64_t unit = strategy == Strategy::kUlysses ? 1 : 2 * cfg.parallel.ring_size();
  std::vector<std::int32_t> cu;
  if (thd) {
    if (seq / unit < 2 * o.varlen) {
      return detail::arg_error("ulysses-bench", "--varlen",
                               "leaves documents under one zigzag unit", o.varlen,
                               detail::str_cat("<= ", seq / unit / 2, " at seq ", seq));
    }
    cu = make_cu_seqlens(o.varlen, seq / unit, rng);
    for (std::int32_t& x : cu) x *= static_cast<std::int32_t>(unit);
    if (balanced) {  // the inputs are random, so the new offsets alone make the reordered batch
      ULYSSES_ASSIGN_OR_RETURN(auto order,
                               balance_packed_sequences(cfg.parallel, cfg.attention, seq, cu));
      row.skipped = order.cu_seqlens == cu;
      if (row.skipped) return row;
      cu = order.cu_seqlens;
    }
  }
  ULYSSES_ASSIGN_OR_RETURN(row.balance, bench::rank_balance(cfg.parallel, cfg.attention, seq, cu));

  // Views in the layout the user passes: [B, S, H, D], or [T, H, D] for packed batches.
  auto user_view = [&](const Tensor& t) {
    if (!thd) return t.view;
    return TensorView::contiguous(t.view.data, t.view.dtype,
                                  {seq, t.view.shape[2], t.view.shape[3]});
  };
  auto lse_view = [&](Tensor& t) {
    if (!thd) return t.view;
    return TensorView::contiguous(t.view.data, DType::kFloat32, {o.heads, seq});
  };

  // Distributed run: every rank times its own steps.
  Tensor o_d = act(o.heads, true), dq_d = act(o.heads), dk_d = act(o.kv_heads),
         dv_d = act(o.kv_heads, true);
  Tensor lse_d(DType::kFloat32, {B, o.heads, seq});
  std::vector<Tensor> dsinks_d(static_cast<std::size_t>(cp), Tensor(DType::kFloat32, {o.heads}));
  auto kernel = make_reference_attention();
  auto comms_or = create_loopback_group(cp);
  if (!comms_or.is_ok()) return comms_or.status();
  auto& comms = *comms_or;
  std::vector<Status> status(static_cast<std::size_t>(cp));
  std::vector<std::vector<double>> times(static_cast<std::size_t>(cp));
  std::vector<std::thread> threads;
  for (int r = 0; r < cp; ++r) {
    threads.emplace_back([&, r] {
      auto& st = status[static_cast<std::size_t>(r)];
      auto plan = DistributedAttention::create(cfg, *comms[static_cast<std::size_t>(r)], *kernel);
      if (!plan.is_ok()) {
        st = plan.status();
        return;
      }
      std::vector<unsigned char> ws((*plan)->workspace_bytes()), saved((*plan)->saved_bytes());
      const Layout layout = cfg.layout;
      // Ulysses shards are views; ring and hybrid hold zigzag ranges, copied in and out.
      const bool zigzag = strategy != Strategy::kUlysses;
      std::vector<Tensor> local;
      local.reserve(16);
      auto shard = [&](const Tensor& t) {
        if (!zigzag) return shard_view(user_view(t), layout, cp, r).value();
        local.push_back(Tensor(t.view.dtype, {B, seq / cp, t.view.shape[2], t.view.shape[3]}));
        if (Status s = copy_shard(t.view, local.back().view, 1, cfg.parallel, r, cu); !s.is_ok()) {
          st = s;
        }
        TensorView mine = local.back().view;
        if (thd) {
          mine = TensorView::contiguous(mine.data, mine.dtype,
                                        {seq / cp, mine.shape[2], mine.shape[3]});
        }
        return mine;
      };
      auto lse_shard = [&]() {
        if (!zigzag) return shard_lse_view(lse_view(lse_d), layout, cp, r).value();
        local.push_back(Tensor(DType::kFloat32, {B, o.heads, seq / cp}));
        TensorView mine = local.back().view;
        if (thd) mine = TensorView::contiguous(mine.data, mine.dtype, {o.heads, seq / cp});
        return mine;
      };
      // A [T / cp, H, D] (or [H, T / cp]) shard as the [1, ...] tensor it lives in.
      auto as_batch = [&](TensorView t) {
        if (!thd) return t;
        if (t.ndim == 3) {
          return TensorView::contiguous(t.data, t.dtype, {1, t.shape[0], t.shape[1], t.shape[2]});
        }
        return TensorView::contiguous(t.data, t.dtype, {1, t.shape[0], t.shape[1]});
      };
      ForwardArgs f{.q = shard(q),
                    .k = shard(k),
                    .v = shard(v),
                    .o = shard(o_d),
                    .lse = lse_shard(),
                    .cu_seqlens = cu,
                    .workspace = ws.data(),
                    .saved = saved.data()};
      BackwardArgs b{.d_o = shard(d_o),
                     .dq = shard(dq_d),
                     .dk = shard(dk_d),
                     .dv = shard(dv_d),
                     .cu_seqlens = cu,
                     .workspace = ws.data(),
                     .saved = saved.data(),
                     .q = f.q,  // read with saved_activations = lse
                     .k = f.k,
                     .v = f.v,
                     .o = f.o};
      if (o.sinks) {
        f.sinks = b.sinks = sinks.view;
        b.dsinks = dsinks_d[static_cast<std::size_t>(r)].view;
      }
      for (int it = 0; it < std::max(1, o.iters); ++it) {
        const auto t0 = std::chrono::steady_clock::now();
        if ((st = (*plan)->forward(f, nullptr)).is_ok()) st = (*plan)->backward(b, nullptr);
        if (!st.is_ok()) return;
        times[static_cast<std::size_t>(r)].push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count());
      }
      if (zigzag) {
        // Outputs back into the global tensors, at this rank's positions.
        const std::pair<const TensorView*, Tensor*> outs[] = {
            {&f.o, &o_d}, {&b.dq, &dq_d}, {&b.dk, &dk_d}, {&b.dv, &dv_d}};
        for (const auto& [mine, global] : outs) {
          if (Status s = place_shard(as_batch(*mine), global->view, 1, cfg.parallel, r, cu);
              !s.is_ok()) {
            st = s;
          }
        }
        if (Status s = place_shard(as_batch(f.lse), lse_d.view, 2, cfg.parallel, r, cu);
            !s.is_ok()) {
          st = s;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const Status& s : status) {
    if (!s.is_ok()) return s;
  }
  std::vector<double> rank_medians;
  for (auto& t : times) {
    std::sort(t.begin(), t.end());
    rank_medians.push_back(t[t.size() / 2]);
  }
  row.ms_median = rank_medians[0];
  row.ms_max_rank = *std::max_element(rank_medians.begin(), rank_medians.end());

  if (!o.check) return row;
  // Unsharded reference on the full sequence.
  Tensor o_r = act(o.heads, true), dq_r = act(o.heads), dk_r = act(o.kv_heads),
         dv_r = act(o.kv_heads, true);
  Tensor lse_r(DType::kFloat32, {B, o.heads, seq}), dsinks_r(DType::kFloat32, {o.heads});
  const LocalProblem p = LocalProblem::unsharded(cfg.attention, dtype, B, seq, thd);
  LocalForwardArgs lf{
      .q = q.view, .k = k.view, .v = v.view, .o = o_r.view, .lse = lse_r.view, .cu_seqlens = cu};
  LocalBackwardArgs lb{.q = q.view,
                       .k = k.view,
                       .v = v.view,
                       .o = o_r.view,
                       .lse = lse_r.view,
                       .d_o = d_o.view,
                       .dq = dq_r.view,
                       .dk = dk_r.view,
                       .dv = dv_r.view,
                       .cu_seqlens = cu};
  if (o.sinks) {
    lf.sinks = lb.sinks = sinks.view;
    lb.dsinks = dsinks_r.view;
  }
  if (Status s = reference_forward(p, lf); !s.is_ok()) return s;
  if (Status s = reference_backward(p, lb); !s.is_ok()) return s;
  row.checked = true;
  row.err_o = max_abs_diff(o_r, o_d);
  row.err_dq = max_abs_diff(dq_r, dq_d);
  row.err_dk = max_abs_diff(dk_r, dk_d);
  row.err_dv = max_abs_diff(dv_r, dv_d);
  // Exact equality is the bar wherever heads are independent; replicated KV heads (cp > kv_heads)
  // sum fp32 partials, which only a tolerance can hold: |dK - ref| within 2 ulp of the dtype.
  const bool replicated = cp > o.kv_heads;
  bool exact = bitwise_equal(o_r, o_d) && bitwise_equal(lse_r, lse_d) && bitwise_equal(dq_r, dq_d);
  for (const Tensor& ds : dsinks_d) exact = exact && (!o.sinks || bitwise_equal(dsinks_r, ds));
  const bool kv_exact = bitwise_equal(dk_r, dk_d) && bitwise_equal(dv_r, dv_d);
  row.exact = exact && kv_exact;
  if (strategy != Strategy::kUlysses) {
    // Ring merges partial results (allgather sums dK/dV partials): never bitwise; every output
    // within 2 ulp of the dtype.
    const double ulp = std::ldexp(1.0, dtype == DType::kFloat32 ? -23 : -7);
    auto scale = [](const Tensor& t) {
      double m = 0;
      for (std::int64_t i = 0; i < t.view.numel(); ++i) m = std::max(m, std::fabs(t.at(i)));
      return m;
    };
    row.pass = row.err_o <= 2 * ulp * scale(o_r) && row.err_dq <= 2 * ulp * scale(dq_r) &&
               row.err_dk <= 2 * ulp * scale(dk_r) && row.err_dv <= 2 * ulp * scale(dv_r);
    row.note = "ring merges partials: all outputs held to 2 ulp";
  } else if (replicated) {
    const double ulp = std::ldexp(1.0, dtype == DType::kFloat32 ? -23 : -7);
    double scale = 0;
    for (const Tensor* t : {&dk_r, &dv_r}) {
      for (std::int64_t i = 0; i < t->view.numel(); ++i)
        scale = std::max(scale, std::fabs(t->at(i)));
    }
    row.pass = exact && std::max(row.err_dk, row.err_dv) <= 2 * ulp * scale;
    row.note = "kv replicated: dK/dV held to 2 ulp";
  } else {
    row.pass = row.exact;
  }
  return row;
}

void print_table(const std::vector<Row>& rows, const Options& o) {
  std::printf(
      "# ulysses-bench, host loopback + FP64 reference kernel (CPU times, not GPU performance)\n");
  std::printf(
      "# B=%lld Hq=%d Hkv=%d D=%d Dv=%d %s causal=%d window=%d,%d sinks=%d varlen=%d iters=%d\n",
      static_cast<long long>(o.batch), o.heads, o.kv_heads, o.head_dim,
      o.head_dim_v > 0 ? o.head_dim_v : o.head_dim, o.dtype.c_str(), o.causal ? 1 : 0, o.window[0],
      o.window[1], o.sinks ? 1 : 0, o.varlen, o.iters);
  std::printf("%4s %8s %-26s %12s %12s %5s %10s %10s %10s %10s %6s %5s\n", "cp", "seq", "strategy",
              "ms/step", "ms max-rank", "bal", "err O", "err dQ", "err dK", "err dV", "exact",
              "check");
  for (const Row& r : rows) {
    std::printf("%4d %8lld %-26s %12.2f %12.2f %5.2f %10.3g %10.3g %10.3g %10.3g %6s %5s\n", r.cp,
                static_cast<long long>(r.seq), r.strategy.c_str(), r.ms_median, r.ms_max_rank,
                r.balance, r.err_o, r.err_dq, r.err_dk, r.err_dv,
                r.checked ? (r.exact ? "yes" : "no") : "-",
                r.checked ? (r.pass ? "PASS" : "FAIL") : "-");
  }
  for (const Row& r : rows) {
    if (!r.note.empty())
      std::printf("# cp=%d seq=%lld: %s\n", r.cp, static_cast<long long>(r.seq), r.note.c_str());
  }
  for (const Row& r : rows) std::printf("# repro: %s\n", r.repro.c_str());
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

bool write_json(const std::string& path, const std::vector<Row>& rows, const Options& o) {
  std::ofstream f(path);
  if (!f) return false;
  f << "{\n  \"tool\": \"ulysses-bench\",\n  \"path\": \"host-loopback-reference\",\n"
    << "  \"config\": {\"batch\": " << o.batch << ", \"heads\": " << o.heads
    << ", \"kv_heads\": " << o.kv_heads << ", \"head_dim\": " << o.head_dim
    << ", \"head_dim_v\": " << (o.head_dim_v > 0 ? o.head_dim_v : o.head_dim) << ", \"dtype\": \""
    << o.dtype << "\", \"causal\": " << (o.causal ? "true" : "false") << ", \"window\": ["
    << o.window[0] << ", " << o.window[1] << "], \"sinks\": " << (o.sinks ? "true" : "false")
    << ", \"varlen\": " << o.varlen << ", \"iters\": " << o.iters << "},\n  \"rows\": [\n";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    f << "    {\"cp\": " << r.cp << ", \"seq\": " << r.seq << ", \"strategy\": \"" << r.strategy
      << "\", \"ms_per_step\": " << r.ms_median << ", \"ms_per_step_max_rank\": " << r.ms_max_rank
      << ", \"rank_balance\": " << r.balance << ", \"err_o\": " << r.err_o
      << ", \"err_dq\": " << r.err_dq << ", \"err_dk\": " << r.err_dk
      << ", \"err_dv\": " << r.err_dv << ", \"exact\": " << (r.exact ? "true" : "false")
      << ", \"checked\": " << (r.checked ? "true" : "false")
      << ", \"pass\": " << (r.pass ? "true" : "false") << ", \"repro\": \"" << json_escape(r.repro)
      << "\"}" << (i + 1 < rows.size() ? "," : "") << "\n";
  }
  f << "  ]\n}\n";
  return static_cast<bool>(f);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "ulysses-bench: context-parallel attention, checked against the unsharded run and timed.\n"
      "GPU path (default when GPUs are present): cuDNN attention, NCCL across every local GPU;\n"
      "each sequence length puts the kernel alone on one GPU (cp=1, whole sequence) beside the\n"
      "plans at cp=P (one GPU: P=1, what the library adds). Defaults: seq 8k,32k,128k,\n"
      "B=1 Hq=32 Hkv=8 D=128 causal bf16. CPU path (--device cpu, or no GPU): P host ranks on\n"
      "the loopback communicator with the FP64 reference kernel. Lists (--cp 1,2,4) sweep."};
  app.add_option("--cp", o.cp,
                 "ranks sharing one sequence (list); GPU: cp 1 runs the plans on one GPU beside "
                 "the kernel alone")
      ->delimiter(',');
  app.add_option("--seq", o.seq,
                 "global tokens per sequence, or packed tokens with --varlen (list)")
      ->delimiter(',');
  app.add_option("--batch", o.batch, "sequences per step (fixed-length layout)");
  app.add_option("--heads", o.heads, "query heads");
  app.add_option("--kv-heads", o.kv_heads, "key/value heads (GQA/MQA)");
  app.add_option("--head-dim", o.head_dim, "head dimension (of Q and K)");
  app.add_option("--head-dim-v", o.head_dim_v,
                 "head dimension of V and O when it differs (MLA, DeepSeek-V3: 128 with --head-dim "
                 "192); payload fp8 scales rows of gcd(head-dim, head-dim-v) values");
  app.add_option("--dtype", o.dtype, "fp32, bf16, fp16, fp8e4m3, fp8e5m2");
  app.add_flag("--causal,!--no-causal", o.causal, "causal mask (default on)");
  app.add_option("--window", o.window,
                 "sliding window LEFT,RIGHT in tokens (-1: unbounded); GPU rows count the visible "
                 "pairs in TFLOP/s")
      ->delimiter(',')
      ->expected(2);
  app.add_flag("--sinks", o.sinks,
               "learnable per-head attention sinks (GPU rows also check dSinks against cp=1)");
  app.add_option("--varlen", o.varlen,
                 "pack N variable-length sequences (layout thd; on GPUs documents that fill --seq "
                 "in multiples of 2 cp tokens, attention inside each); 0: off");
  app.add_option("--strategy", o.strategy,
                 "ulysses, ring, hybrid, allgather (list, default ulysses,ring: one table row per "
                 "strategy; ring, hybrid and allgather shard in zigzag order)")
      ->delimiter(',');
  app.add_option("--ulysses-degree", o.ulysses_degree,
                 "hybrid: ranks per Ulysses group (divides cp); the groups form the ring (a cp it "
                 "does not divide, or equals, runs no hybrid row: named as skipped)");
  app.add_option("--chunks", o.chunks,
                 "overlap_chunks: pipeline the exchanges with the kernel in this many head chunks "
                 "(list; GPU default 1,2,4 up to the fewest KV heads a rank owns)")
      ->delimiter(',');
  app.add_flag("--keep-saved", o.keep_saved,
               "backward_keeps_saved: backward leaves `saved` intact (default: ulysses' backward "
               "reuses it for the returning gradients, a smaller peak)");
  app.add_option(
         "--saved", o.saved,
         "saved_activations, list: heads (forward keeps head-sharded Q, K, V, O) or lse "
         "(keeps only the LSE; backward takes q, k, v, o again and rebuilds the head-sharded ones)")
      ->delimiter(',')
      ->check(CLI::IsMember({"heads", "lse"}));
  app.add_option("--in-flight", o.in_flight,
                 "chunks_in_flight with --saved lse: head chunks whose exchange buffers exist at "
                 "once (list of 1, 2; GPU: one row each where chunks > 1)")
      ->delimiter(',')
      ->check(CLI::Range(1, 2));
  app.add_option(
         "--transport", o.transport,
         "GPU path, the cp > 1 rows' communicator (list): nccl (default; uniform exchanges "
         "through ncclAlltoAll), nccl-grouped (every exchange a group of ncclSend/ncclRecv), "
         "nccl-blocking (blocking NCCL communicators made by the bench and wrapped, as a "
         "framework's would be: no host thread per call, which a non-blocking one starts), "
         "peer (copy-engine copies between this process's GPUs, no NCCL), loopback (cp "
         "virtual ranks on GPU 0: checks and memory per rank, not speed)")
      ->delimiter(',')
      ->check(CLI::IsMember({"nccl", "nccl-grouped", "nccl-blocking", "peer", "loopback"}));
  app.add_option("--cuda-graph", o.cuda_graph,
                 "GPU path, NCCL rows (list of off, on): on captures each cp > 1 step (forward + "
                 "backward) into a CUDA graph after the warm-up steps and times its replays, "
                 "which takes the host's share out of the step time. --decode: on rows keep the "
                 "cache layout in device memory (DecodeConfig::device_layout, built-in kernel) "
                 "and time replays of one captured step")
      ->delimiter(',')
      ->check(CLI::IsMember({"off", "on"}));
  app.add_option("--steps", o.steps,
                 "GPU path, plan rows (list of synced, queued): synced waits for every timed step "
                 "on its own and reports the median (the host's share included); queued issues the "
                 "timed steps back to back and reports their mean (the host issues ahead while "
                 "the GPU works, as in a training loop over many layers)")
      ->delimiter(',')
      ->check(CLI::IsMember({"synced", "queued"}));
  app.add_option("--payload", o.payload,
                 "GPU path (list of native, fp8): what travels to the ranks that compute on it "
                 "(ulysses: the inbound exchanges, Q, K, V, dO; ring and hybrid: the K/V blocks "
                 "of the ring); fp8 rows are checked against cp=1 on inputs rounded as they "
                 "travel, their error columns show the difference from cp=1 on the originals")
      ->delimiter(',')
      ->check(CLI::IsMember({"native", "fp8"}));
  app.add_option("--packed-sharding", o.packed_sharding,
                 "with --varlen, ring and hybrid rows (list of default, per_sequence, stream): "
                 "per_sequence pads every document and cuts it into 2R zigzag chunks of its own "
                 "(TransformerEngine's THD layout; the default), stream cuts the packed stream "
                 "like one sequence (Llama 3's, as allgather does); one row each")
      ->delimiter(',')
      ->check(CLI::IsMember({"default", "per_sequence", "per-sequence", "stream"}));
  app.add_option("--doc-order", o.doc_order,
                 "with --varlen (list of given, balanced): the documents as generated, or "
                 "reordered for each row's layout by balance_packed_sequences() (the packed "
                 "stream in zigzag chunks, allgather and --packed-sharding stream, is uneven for "
                 "documents: the bal column shows the slowest rank's pairs over the mean); rows "
                 "whose layout does not depend on the order are not repeated")
      ->delimiter(',')
      ->check(CLI::IsMember({"given", "balanced"}));
  app.add_flag("--decode", o.decode,
               "GPU: decode steps against a KV cache sharded over cp ranks (DistributedDecode); "
               "--seq is the cache length (default 32768,131072,1048576), --cp defaults to 1 and "
               "every GPU (--transport loopback: cp virtual ranks on GPU 0, checks only)");
  app.add_option("--decode-tokens", o.decode_tokens, "--decode: new tokens per step (default 1)");
  app.add_flag("--ragged", o.ragged,
               "--decode with --batch B: sequences of different lengths, sequence b holding "
               "L (b + 1) / B of the cache length L (continuous batching; default: all L)");
  app.add_option("--splits", o.splits,
                 "--decode: DecodeConfig::max_splits, pieces a rank's cache is cut into (list)")
      ->delimiter(',');
  app.add_option("--min-split-rows", o.min_split_rows,
                 "--decode: DecodeConfig::min_split_rows, the shortest piece (list)")
      ->delimiter(',');
  app.add_option("--split-kernel", o.split_kernel,
                 "--decode: DecodeConfig::split_kernel, what runs the pieces (list of auto, local: "
                 "cuDNN, built_in: the library's split-KV kernel; default auto,local,built_in)")
      ->delimiter(',')
      ->check(CLI::IsMember({"auto", "local", "built_in"}));
  app.add_option("--page-size", o.page_size,
                 "--decode: DecodeConfig::page_size, rows per page of a paged KV cache (list; 0: "
                 "unpaged, the default): the cache's pages lie in shuffled order in a pool, the "
                 "page table on the device; paged rows run the built-in kernel (split_kernel "
                 "local is skipped for them)")
      ->delimiter(',')
      ->check(CLI::NonNegativeNumber);
  app.add_option("--page-order", o.page_order,
                 "--decode with --page-size: shuffled (the default: pages at random places of the "
                 "pool, as a serving engine's free list leaves them) or in_order (each "
                 "sequence's pages one after another: the unpaged layout read through a table)")
      ->check(CLI::IsMember({"shuffled", "in_order"}));
  app.add_flag("--trace-calls", o.trace_calls,
               "GPU path: after each row's timed steps, a fresh warm-up (--warmup-ms) and three "
               "more steps in which every local kernel call runs alone (ranks take turns) and is "
               "timed (its fastest of the three kept: with --transport loopback another rank's "
               "exchanges and sums may still run beside a call); prints per call its direction, "
               "query and key rows, sequences, mask, visible (query, key) pairs, ms and TFLOP/s, "
               "and the step's time outside the kernel");
  app.add_flag(
      "--timeline", o.timeline,
      "GPU path, cp > 1 rows: after each row's timed steps, a fresh warm-up and three more "
      "in which CUDA events mark every local kernel call and every exchange on the stream it "
      "runs on (nothing serialised, unlike --trace-calls); prints each rank's fastest marked "
      "step span by span, then its kernel-busy time, its exchange time beside no kernel (not "
      "hidden) and the time neither ran (packs, unpacks, waits); the JSON gets the same");
  app.add_option("--timeline-trace", o.timeline_trace,
                 "with --timeline (implied): also write every row's marked steps to this file in "
                 "the Trace Event Format that ui.perfetto.dev and chrome://tracing open: a process "
                 "per row and rank, a thread per stream");
  app.add_option("--iters", o.iters, "timed steps per row (median reported)");
  app.add_option("--warmup-ms", o.warmup_ms,
                 "GPU path, training rows (not --decode): after the two warm-up steps, more until "
                 "the warm-up has lasted this many ms of GPU time (default 500; 0: two steps "
                 "only), so the timed steps run at the clocks a sustained run settles to under "
                 "the power cap (an idle H200 starts at its boost clock and runs long steps ~10% "
                 "faster for the first ~0.1 s)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--rounds", o.rounds,
                 "GPU path, training rows (not --decode): run cp = 1 and every row of a length "
                 "this many times in turn (default 1); ms is then each row's median over the "
                 "rounds and eff the median of its efficiencies against the cp = 1 run of the "
                 "same round, so that the clock's drift under the power cap over a sweep cancels "
                 "in each pair (checks, --trace-calls and --timeline in the first round)")
      ->check(CLI::Range(1, 100));
  app.add_flag("--check,!--no-check", o.check, "compare with the unsharded run (default on)");
  app.add_option("--json", o.json, "also write the rows as JSON to this file");
  app.add_option("--seed", o.seed, "random seed (0: fresh)");
  app.add_option("--device", o.device,
                 "auto (GPUs when present), gpu, or cpu (host loopback + FP64 reference)");
  CLI11_PARSE(app, argc, argv);

  const bool gpu = o.device == "gpu" || (o.device == "auto" && cuda_device_count() > 0);
  if (o.rounds > 1 && (o.decode || !gpu)) {
    std::fprintf(stderr, "ulysses-bench: --rounds %d repeats the GPU path's training rows (%s)\n",
                 o.rounds, o.decode ? "not --decode" : "this run takes the CPU path");
    return 2;
  }
  if (gpu) {
    std::set<std::string> given;
    for (const char* flag : {"--cp", "--seq", "--batch", "--heads", "--kv-heads", "--head-dim",
                             "--iters", "--strategy", "--chunks"}) {
      if (app.count(flag) > 0) given.insert(flag);
    }
    return o.decode ? bench::run_gpu_decode_bench(o, given) : bench::run_gpu_bench(o, given);
  }
  if (o.trace_calls || o.timeline || !o.timeline_trace.empty()) {
    std::fprintf(
        stderr, "ulysses-bench: %s times GPU kernel calls (--device gpu)\n",
        o.trace_calls ? "--trace-calls" : (o.timeline ? "--timeline" : "--timeline-trace"));
    return 2;
  }
  if (o.decode) {
    std::fprintf(stderr,
                 "ulysses-bench: --decode runs on GPUs (the CPU tests check DistributedDecode "
                 "against the FP64 reference)\n");
    return 2;
  }
  if (o.device != "cpu" && o.device != "auto") {
    std::fprintf(stderr, "ulysses-bench: --device %s is not one of auto, gpu, cpu\n",
                 o.device.c_str());
    return 2;
  }

  if (o.payload != std::vector<std::string>{"native"}) {
    std::fprintf(stderr,
                 "ulysses-bench: --payload is for the GPU path (the CPU tests cover fp8 "
                 "payloads against the FP64 reference)\n");
    return 2;
  }
  auto dtype = parse_dtype(o.dtype);
  if (!dtype.is_ok()) {
    std::fprintf(stderr, "ulysses-bench: %s\n", dtype.status().to_string().c_str());
    return 2;
  }
  std::vector<Strategy> strategies;
  for (const std::string& name : o.strategy) {
    auto strategy = parse_strategy(name);
    if (!strategy.is_ok()) {
      std::fprintf(stderr, "ulysses-bench: %s\n", strategy.status().to_string().c_str());
      return 2;
    }
    strategies.push_back(*strategy);
  }
  std::vector<Row> rows;
  for (std::int64_t seq : o.seq) {
    for (int cp : o.cp) {
      for (Strategy strategy : strategies) {
        if (strategy == Strategy::kHybrid &&
            (o.ulysses_degree < 1 || cp % o.ulysses_degree != 0 || cp == o.ulysses_degree)) {
          // The sweep's hybrid rows: cp = U x R with both above 1.
          std::printf(
              "# cp=%d seq=%lld hybrid: skipped, --ulysses-degree %d must divide cp and "
              "leave a ring of 2 or more (below cp)\n",
              cp, static_cast<long long>(seq), o.ulysses_degree);
          continue;
        }
        const bool zigzag_ring = strategy == Strategy::kRing || strategy == Strategy::kHybrid;
        for (const PackedSharding sharding : packed_shardings(o, zigzag_ring && o.varlen > 0)) {
          for (const std::string& name : o.saved) {
            const SavedActivations saved = parse_saved_activations(name).value();  // CLI-checked
            for (const std::string& order :
                 o.varlen > 0 ? o.doc_order : std::vector<std::string>{"given"}) {
              auto row =
                  run_cpu_case(o, cp, seq, *dtype, strategy, saved, sharding, order == "balanced");
              if (!row.is_ok()) {
                std::fprintf(stderr, "ulysses-bench: cp=%d seq=%lld: %s\n", cp,
                             static_cast<long long>(seq), row.status().to_string().c_str());
                return row.status().code() == StatusCode::kInvalidArgument ||
                               row.status().code() == StatusCode::kUnsupported
                           ? 2
                           : 1;
              }
              if (row->skipped) {
                std::printf(
                    "# cp=%d seq=%lld %s: documents not reordered (already the best "
                    "order found for this layout)\n",
                    cp, static_cast<long long>(seq), row->strategy.c_str());
                continue;
              }
              rows.push_back(*row);
            }
          }
        }
      }
    }
  }
  print_table(rows, o);
  if (!o.json.empty() && !write_json(o.json, rows, o)) {
    std::fprintf(stderr, "ulysses-bench: cannot write %s\n", o.json.c_str());
    return 1;
  }
  const bool all_pass = std::all_of(rows.begin(), rows.end(), [](const Row& r) { return r.pass; });
  std::printf("%s\n", all_pass ? "ALL PASS" : "SOME ROWS FAILED");
  return all_pass ? 0 : 1;
}
