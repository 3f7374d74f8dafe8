// ulysses-bench --decode: decode steps against a KV cache sharded by sequence (DistributedDecode).
//
// Rows: total cache tokens x cp x min_split_rows x max_splits x split_kernel x page_size. Each rank
// holds a contiguous 1/cp of the cache (bf16, K [B, L/cp, Hkv, D], V [.., Dv] with --head-dim-v;
// --page-size P: the same rows in pages of P rows at shuffled places of a pool); every
// step attends `query_tokens` new tokens to all of it. Reported: ms per step (median; rank 0's
// stream), the host time forward() takes to enqueue it (median; near ms/step means the host, not
// the GPU, sets the pace), the GPU's time per step when the steps are queued ahead behind a held
// stream ("queued ms"), the K/V bytes each GPU reads per step and the rate, the floor (those bytes
// at the device's measured copy bandwidth), and the largest |O - O of the first row of that cache
// length| (splitting and sharding change only the rounding of the merge; held to 4 bf16 ulps of max
// |O| x sqrt(pieces)). cp > 1 needs one GPU per rank (NCCL, one thread each), or --transport
// loopback: cp virtual ranks on GPU 0, which checks the sharded rows against cp = 1 but times
// nothing meaningful. --ragged: sequence b of the batch holds L (b + 1) / B tokens (each rank 1/cp
// of each), given per sequence (segment_offsets, query_positions). --cuda-graph on: rows whose
// layout is in device memory (DecodeConfig::device_layout), one step captured into a CUDA graph
// after the warm-up and its replays timed (host ms: cudaGraphLaunch); not with split_kernel local,
// nor for virtual ranks (--transport loopback, cp > 1).
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "bench/bench_cuda.h"
#include "bench/bench_options.h"
#include "common/dtype_convert.h"
#include "ulysses/decode.h"
#include "ulysses/gpu.h"

namespace ulysses::bench {
namespace {

void die(const Status& s) {
  std::fprintf(stderr, "ulysses-bench --decode: %s\n", s.to_string().c_str());
  std::exit(1);
}

// Device-to-device copy bandwidth of `device` (read + write counted once each), GB/s: the rate at
// which a kernel can at best stream the cache.
double copy_bandwidth(int device) {
  BENCH_CUDA(cudaSetDevice(device));
  const std::size_t n = std::size_t{1} << 30;
  void *a, *b;
  BENCH_CUDA(cudaMalloc(&a, n));
  BENCH_CUDA(cudaMalloc(&b, n));
  cudaEvent_t e0, e1;
  BENCH_CUDA(cudaEventCreate(&e0));
  BENCH_CUDA(cudaEventCreate(&e1));
  float best = 1e30f;
  for (int i = 0; i < 5; ++i) {
    BENCH_CUDA(cudaEventRecord(e0));
    BENCH_CUDA(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
    BENCH_CUDA(cudaEventRecord(e1));
    BENCH_CUDA(cudaEventSynchronize(e1));
    float ms = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    best = std::min(best, ms);
  }
  cudaFree(a);
  cudaFree(b);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return 2.0 * static_cast<double>(n) / (best * 1e-3) / 1e9;
}

// bf16 bits of uniform [-1, 1) values.
std::vector<std::uint16_t> random_bf16(std::size_t n, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<std::uint16_t> x(n);
  for (auto& e : x) e = detail::double_to_bf16_bits(u(rng));
  return x;
}

// Fills `bytes` of device memory with elements [start, start + bytes / 2) of the endless
// repetition of a random host tile (a long cache from a short one; the same global cache however
// it is sharded).
void fill_tiled(void* dst, std::size_t bytes, const std::vector<std::uint16_t>& tile,
                std::size_t start) {
  std::vector<std::uint16_t> rotated(tile.size());
  for (std::size_t i = 0; i < tile.size(); ++i) rotated[i] = tile[(start + i) % tile.size()];
  const std::size_t t = std::min(bytes, rotated.size() * 2);
  BENCH_CUDA(cudaMemcpy(dst, rotated.data(), t, cudaMemcpyHostToDevice));
  // Doubling copies of whole tiles keep the period.
  for (std::size_t done = t; done < bytes;) {
    const std::size_t n = std::min(done, bytes - done);
    BENCH_CUDA(cudaMemcpy(static_cast<char*>(dst) + done, dst, n, cudaMemcpyDeviceToDevice));
    done += n;
  }
}

// One row's DecodeConfig choices besides the cache length and cp.
struct Variant {
  std::int64_t min_rows;
  int splits;
  std::string kernel;  // DecodeConfig::split_kernel
  std::int64_t page;   // DecodeConfig::page_size
  bool graph;          // device_layout, the steps timed as CUDA graph replays
};

struct Row {
  std::int64_t cache;
  int cp, splits;
  std::int64_t min_rows;
  std::string kernel;  // DecodeConfig::split_kernel
  std::int64_t page;   // DecodeConfig::page_size
  bool graph;
  double ms, host_ms, gpu_ms, bytes_per_gpu, floor_ms, err;
  bool pass;
};

}  // namespace

int run_gpu_decode_bench(Options o, const std::set<std::string>& given) {
  const int ngpu = cuda_device_count();
  if (ngpu < 1) {
    std::fprintf(stderr, "ulysses-bench --decode: needs a GPU, found none\n");
    return 2;
  }
  if (!given.count("--seq")) o.seq = {32768, 131072, 1048576};
  if (!given.count("--heads")) o.heads = 32;
  if (!given.count("--kv-heads")) o.kv_heads = 8;
  if (!given.count("--head-dim")) o.head_dim = 128;
  if (!given.count("--iters")) o.iters = 20;
  std::vector<int> cps = given.count("--cp") ? o.cp : std::vector<int>{1};
  if (!given.count("--cp") && ngpu > 1) cps.push_back(ngpu);
  // --transport loopback: cp virtual ranks on GPU 0 (device loopback): checks, not speed.
  const bool loopback = o.transport == std::vector<std::string>{"loopback"};
  for (int cp : cps) {
    if ((cp > ngpu && !loopback) || cp < 1) {
      std::fprintf(stderr,
                   "ulysses-bench --decode: --cp %d needs %d GPUs (one per rank; --transport "
                   "loopback: virtual ranks on GPU 0), found %d\n",
                   cp, cp, ngpu);
      return 2;
    }
  }
  if (o.dtype != "bf16") {
    std::fprintf(stderr, "ulysses-bench --decode: the GPU benchmark runs bf16 (got %s)\n",
                 o.dtype.c_str());
    return 2;
  }
  const std::int64_t B = o.batch, T = o.decode_tokens;
  // Q and K heads of D, V and O heads of Dv (--head-dim-v; MLA).
  const int Hq = o.heads, Hkv = o.kv_heads, D = o.head_dim,
            Dv = o.head_dim_v > 0 ? o.head_dim_v : o.head_dim;
  std::vector<double> bandwidth(static_cast<std::size_t>(ngpu));
  bandwidth[0] = copy_bandwidth(0);
  std::printf(
      "# ulysses-bench --decode: %d GPU(s), cuDNN %d; B=%lld, %lld new token(s) per step, Hq=%d "
      "Hkv=%d D=%d Dv=%d bf16 %s%s%s; cache split evenly over cp ranks; %d timed steps (median); "
      "device copy bandwidth %.0f GB/s%s\n",
      ngpu, cudnn_runtime_version(), static_cast<long long>(B), static_cast<long long>(T), Hq, Hkv,
      D, Dv, o.causal ? "causal" : "full", o.window[0] >= 0 ? " window" : "",
      o.ragged ? "; ragged: sequence b holds L (b + 1) / B tokens" : "", o.iters, bandwidth[0],
      loopback ? "; --transport loopback: cp > 1 rows are virtual ranks on GPU 0 (their ms are "
                 "every rank's work and the device loopback's copies, not speed)"
               : "");
  if (std::any_of(o.page_size.begin(), o.page_size.end(), [](std::int64_t p) { return p > 0; })) {
    std::printf("# paged rows: each sequence's pages %s in the pool, page table on the device\n",
                o.page_order == "shuffled" ? "at shuffled places" : "in order");
  }
  std::printf("%9s %3s %6s %8s %9s %5s %5s %10s %10s %10s %12s %9s %10s %6s %10s %5s\n", "cache",
              "cp", "splits", "min rows", "kernel", "page", "graph", "ms/step", "host ms",
              "queued ms", "KV MiB/GPU", "GB/s", "floor ms", "x floor", "err O", "check");
  // Paged caches and device layouts run in the built-in kernel only: no local rows for them.
  std::vector<Variant> variants;
  for (std::int64_t min_rows : o.min_split_rows)
    for (int splits : o.splits)
      for (const std::string& kernel : o.split_kernel)
        for (std::int64_t page : o.page_size)
          for (const std::string& graph : o.cuda_graph) {
            const bool on = graph == "on";
            if ((page == 0 && !on) || kernel != "local") {
              variants.push_back({min_rows, splits, kernel, page, on});
            }
          }
  std::vector<Row> rows;
  bool all_pass = true;
  std::mt19937_64 rng(o.seed ? o.seed : std::random_device{}());
  for (std::int64_t L : o.seq) {
    // One set of inputs per cache length: every row of it attends the same q to the same keys.
    const std::vector<std::uint16_t> q_host =
        random_bf16(static_cast<std::size_t>(B * T * Hq * D), rng);
    const std::vector<std::uint16_t> tile = random_bf16(std::size_t{1} << 24, rng);
    std::vector<float> first_o;
    // Sequence b's length: L, or with --ragged L (b + 1) / B.
    auto length = [&](std::int64_t b) { return o.ragged ? L * (b + 1) / B : L; };
    for (int cp : cps) {
      const std::int64_t local = L / cp + (L % cp ? 1 : 0);
      for (const auto& [min_rows, splits, kernel_name, page, graph] : variants) {
        if (graph && cp > 1 && loopback) continue;  // virtual ranks' copies are not captured
        // Rows per sequence on a rank: its share, paged in whole pages.
        const std::int64_t cache_rows = page > 0 ? (local + page - 1) / page * page : local;
        const DecodeKernel split_kernel = kernel_name == "auto"    ? DecodeKernel::kAuto
                                          : kernel_name == "local" ? DecodeKernel::kLocal
                                                                   : DecodeKernel::kBuiltIn;
        DecodeConfig cfg{.attention = {.num_heads_q = Hq,
                                       .num_heads_kv = Hkv,
                                       .head_dim = D,
                                       .head_dim_v = Dv,
                                       .causal = o.causal,
                                       .window_left = o.window[0]},
                         .cp = cp,
                         .dtype = DType::kBFloat16,
                         .batch = B,
                         .query_tokens = T,
                         .cache_rows = cache_rows,
                         .max_segments = 1,  // per sequence
                         .min_split_rows = min_rows,
                         .max_splits = splits,
                         .split_kernel = split_kernel,
                         .page_size = page,
                         .device_layout = graph};
        std::vector<std::unique_ptr<Communicator>> comms(static_cast<std::size_t>(cp));
        if (cp == 1 || loopback) {
          auto g = create_device_loopback_group(cp, 0);
          if (!g.is_ok()) die(g.status());
          comms = std::move(g).value();
        } else {
          auto id = create_nccl_unique_id();
          if (!id.is_ok()) die(id.status());
          std::vector<std::thread> init;
          for (int r = 0; r < cp; ++r) {
            init.emplace_back([&, r] {
              auto c = create_nccl_communicator(*id, cp, r, r);
              if (!c.is_ok()) die(c.status());
              comms[static_cast<std::size_t>(r)] = std::move(c).value();
            });
          }
          for (auto& t : init) t.join();
        }
        std::vector<double> ms(static_cast<std::size_t>(cp)), host_ms(ms.size()), gpu_ms(ms.size());
        std::vector<float> o_rank0;
        std::vector<std::thread> threads;
        for (int r = 0; r < cp; ++r) {
          threads.emplace_back([&, r] {
            const int device = loopback ? 0 : r;
            BENCH_CUDA(cudaSetDevice(device));
            auto kernel = create_cudnn_attention(device);
            if (!kernel.is_ok()) die(kernel.status());
            auto plan =
                DistributedDecode::create(cfg, *comms[static_cast<std::size_t>(r)], **kernel);
            if (!plan.is_ok()) die(plan.status());
            // Sequence b's share on this rank: positions [b0(b), b0(b) + rows_here(b)).
            auto b0 = [&](std::int64_t b) { return length(b) * r / cp; };
            auto rows_here = [&](std::int64_t b) { return length(b) * (r + 1) / cp - b0(b); };
            // bf16 elements of a K row and a V row, and bytes of q and of o.
            const auto k_row = static_cast<std::size_t>(Hkv * D),
                       v_row = static_cast<std::size_t>(Hkv * Dv);
            const std::size_t q_bytes = static_cast<std::size_t>(B * T * Hq * D) * 2,
                              act = static_cast<std::size_t>(B * T * Hq * Dv) * 2;
            void *k, *v, *q, *out, *ws, *table_device = nullptr;
            const auto all_rows = static_cast<std::size_t>(B * cache_rows);
            BENCH_CUDA(cudaMalloc(&k, all_rows * k_row * 2));
            BENCH_CUDA(cudaMalloc(&v, all_rows * v_row * 2));
            BENCH_CUDA(cudaMalloc(&q, q_bytes));
            BENCH_CUDA(cudaMalloc(&out, act));
            BENCH_CUDA(cudaMalloc(&ws, std::max<std::size_t>(1, (*plan)->workspace_bytes())));
            for (std::int64_t b = 0; b < B; ++b) {
              const auto first = static_cast<std::size_t>(b * L + b0(b));
              const auto n = static_cast<std::size_t>(cache_rows);
              fill_tiled(
                  static_cast<char*>(k) + static_cast<std::size_t>(b * cache_rows) * k_row * 2,
                  n * k_row * 2, tile, first * k_row);
              fill_tiled(
                  static_cast<char*>(v) + static_cast<std::size_t>(b * cache_rows) * v_row * 2,
                  n * v_row * 2, tile, first * v_row + 12345);
            }
            // Paged: the rows above, page by page, moved to shuffled places of a pool of as
            // many pages (--page-order in_order: left in place); sequence b's page i is pool
            // page table[b n + i].
            std::vector<std::int32_t> table;
            if (page > 0) {
              const std::int64_t pages = B * cache_rows / page;
              table.resize(static_cast<std::size_t>(pages));
              std::iota(table.begin(), table.end(), 0);
              if (o.page_order == "shuffled") {
                std::shuffle(table.begin(), table.end(), std::mt19937_64(1234 + r));
              }
              for (void** buf : {&k, &v}) {
                const std::size_t page_bytes =
                    static_cast<std::size_t>(page) * (buf == &k ? k_row : v_row) * 2;
                void* pool;
                BENCH_CUDA(cudaMalloc(&pool, all_rows * (buf == &k ? k_row : v_row) * 2));
                for (std::size_t i = 0; i < table.size(); ++i) {
                  BENCH_CUDA(cudaMemcpyAsync(
                      static_cast<char*>(pool) + static_cast<std::size_t>(table[i]) * page_bytes,
                      static_cast<char*>(*buf) + i * page_bytes, page_bytes,
                      cudaMemcpyDeviceToDevice));
                }
                BENCH_CUDA(cudaDeviceSynchronize());
                BENCH_CUDA(cudaFree(*buf));
                *buf = pool;
              }
              BENCH_CUDA(cudaMalloc(&table_device, table.size() * 4));
              BENCH_CUDA(
                  cudaMemcpy(table_device, table.data(), table.size() * 4, cudaMemcpyHostToDevice));
            }
            BENCH_CUDA(cudaMemcpy(q, q_host.data(), q_bytes, cudaMemcpyHostToDevice));
            cudaStream_t st;
            BENCH_CUDA(cudaStreamCreate(&st));
            const Device dev = Device::cuda(device);
            // The new tokens sit at the end of each sequence (positions L_b - T ..): the last
            // rank holds them, so causal lets each see every key up to itself.
            std::vector<CacheSegment> segs;
            std::vector<std::int64_t> offsets = {0}, positions;
            for (std::int64_t b = 0; b < (o.ragged ? B : 1); ++b) {
              segs.push_back({0, rows_here(b), b0(b)});
              offsets.push_back(b + 1);
              positions.push_back(length(b) - T);
            }
            // [sequences, cache_rows, ..], or paged [pages, page, ..].
            const std::int64_t units = page > 0 ? B * cache_rows / page : B,
                               unit_rows = page > 0 ? page : cache_rows;
            DecodeArgs a{.q = TensorView::contiguous(q, DType::kBFloat16, {B, T, Hq, D}, dev),
                         .k_cache = TensorView::contiguous(k, DType::kBFloat16,
                                                           {units, unit_rows, Hkv, D}, dev),
                         .v_cache = TensorView::contiguous(v, DType::kBFloat16,
                                                           {units, unit_rows, Hkv, Dv}, dev),
                         .page_table = table,
                         .page_table_device = static_cast<const std::int32_t*>(table_device),
                         .segments = segs,
                         .query_position = L - T,
                         .o = TensorView::contiguous(out, DType::kBFloat16, {B, T, Hq, Dv}, dev),
                         .workspace = ws};
            if (o.ragged) {
              a.segment_offsets = offsets;
              a.query_positions = positions;
            }
            // --cuda-graph on: the same layout in device memory, [B, 1, 3] and [B].
            void *seg_device = nullptr, *pos_device = nullptr;
            if (graph) {
              std::vector<std::int64_t> seg_rows, pos_rows;
              for (std::int64_t b = 0; b < B; ++b) {
                const CacheSegment& sg = segs[static_cast<std::size_t>(o.ragged ? b : 0)];
                seg_rows.insert(seg_rows.end(), {sg.row, sg.rows, sg.position});
                pos_rows.push_back(o.ragged ? positions[static_cast<std::size_t>(b)] : L - T);
              }
              BENCH_CUDA(cudaMalloc(&seg_device, seg_rows.size() * 8));
              BENCH_CUDA(cudaMalloc(&pos_device, pos_rows.size() * 8));
              BENCH_CUDA(cudaMemcpy(seg_device, seg_rows.data(), seg_rows.size() * 8,
                                    cudaMemcpyHostToDevice));
              BENCH_CUDA(cudaMemcpy(pos_device, pos_rows.data(), pos_rows.size() * 8,
                                    cudaMemcpyHostToDevice));
              a.segments = {};
              a.segment_offsets = {};
              a.query_positions = {};
              a.query_position = 0;
              a.page_table = {};
              a.segments_device = static_cast<const std::int64_t*>(seg_device);
              a.query_positions_device = static_cast<const std::int64_t*>(pos_device);
              if (Status s = (*plan)->check_device_layout(a, st); !s.is_ok()) die(s);
            }
            for (int i = 0; i < 3; ++i) {
              if (Status s = (*plan)->forward(a, st); !s.is_ok()) die(s);
            }
            BENCH_CUDA(cudaStreamSynchronize(st));
            cudaGraphExec_t exec = nullptr;
            if (graph) {
              cudaGraph_t g = nullptr;
              BENCH_CUDA(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
              const Status captured = (*plan)->forward(a, st);
              BENCH_CUDA(cudaStreamEndCapture(st, &g));
              if (!captured.is_ok()) die(captured);
              BENCH_CUDA(cudaGraphInstantiate(&exec, g, 0));
              BENCH_CUDA(cudaGraphDestroy(g));
              BENCH_CUDA(cudaGraphLaunch(exec, st));
              BENCH_CUDA(cudaStreamSynchronize(st));
            }
            // One step: forward(), or a replay of the captured one.
            auto step = [&] {
              if (exec != nullptr) {
                BENCH_CUDA(cudaGraphLaunch(exec, st));
              } else if (Status s = (*plan)->forward(a, st); !s.is_ok()) {
                die(s);
              }
            };
            cudaEvent_t e0, e1;
            BENCH_CUDA(cudaEventCreate(&e0));
            BENCH_CUDA(cudaEventCreate(&e1));
            std::vector<float> times;
            std::vector<double> host;
            for (int i = 0; i < o.iters; ++i) {
              BENCH_CUDA(cudaEventRecord(e0, st));
              const auto h0 = std::chrono::steady_clock::now();
              step();
              host.push_back(
                  std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - h0)
                      .count());
              BENCH_CUDA(cudaEventRecord(e1, st));
              BENCH_CUDA(cudaEventSynchronize(e1));
              float t = 0;
              BENCH_CUDA(cudaEventElapsedTime(&t, e0, e1));
              times.push_back(t);
            }
            std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
            ms[static_cast<std::size_t>(r)] = times[times.size() / 2];
            std::nth_element(host.begin(), host.begin() + host.size() / 2, host.end());
            host_ms[static_cast<std::size_t>(r)] = host[host.size() / 2];
            // The same steps queued behind a held stream: the GPU's own time per step, without
            // the gaps a slower host leaves (what a caller that queues ahead would see).
            BENCH_CUDA(cudaLaunchHostFunc(st, hold_stream, nullptr));
            BENCH_CUDA(cudaEventRecord(e0, st));
            for (int i = 0; i < o.iters; ++i) step();
            BENCH_CUDA(cudaEventRecord(e1, st));
            BENCH_CUDA(cudaEventSynchronize(e1));
            float queued = 0;
            BENCH_CUDA(cudaEventElapsedTime(&queued, e0, e1));
            gpu_ms[static_cast<std::size_t>(r)] = static_cast<double>(queued) / o.iters;
            if (r == 0) {
              std::vector<std::uint16_t> bits(act / 2);
              BENCH_CUDA(cudaMemcpy(bits.data(), out, act, cudaMemcpyDeviceToHost));
              o_rank0.resize(bits.size());
              for (std::size_t i = 0; i < bits.size(); ++i) {
                o_rank0[i] = static_cast<float>(detail::bf16_bits_to_double(bits[i]));
              }
            }
            cudaEventDestroy(e0);
            cudaEventDestroy(e1);
            if (exec != nullptr) cudaGraphExecDestroy(exec);
            cudaStreamDestroy(st);
            for (void* p : {k, v, q, out, ws, table_device, seg_device, pos_device}) cudaFree(p);
          });
        }
        for (auto& t : threads) t.join();
        if (first_o.empty()) first_o = o_rank0;
        double err = 0, scale = 0;
        bool finite = true;
        for (std::size_t i = 0; i < o_rank0.size(); ++i) {
          finite = finite && std::isfinite(o_rank0[i]);
          err = std::max(err, std::fabs(static_cast<double>(o_rank0[i]) - first_o[i]));
          scale = std::max(scale, std::fabs(static_cast<double>(first_o[i])));
        }
        // Each piece's partial O is rounded to bf16 before the merge; with nearly uniform
        // attention a piece's partial is about sqrt(pieces) times the merged O: a few bf16 ulps
        // of that.
        const bool pass =
            finite && err <= 4 * 0x1p-7 * scale * std::sqrt(static_cast<double>(cp * splits));
        all_pass = all_pass && pass;
        double bytes = 0;  // K and V of rank 0's share of every sequence
        for (std::int64_t b = 0; b < B; ++b) {
          bytes += static_cast<double>(length(b) / cp) * Hkv * (D + Dv) * 2;
        }
        const Row row{L,           cp,        splits, min_rows,
                      kernel_name, page,      graph,  ms[0],
                      host_ms[0],  gpu_ms[0], bytes,  bytes / (bandwidth[0] * 1e9) * 1e3,
                      err,         pass};
        rows.push_back(row);
        std::printf(
            "%9lld %3d %6d %8lld %9s %5lld %5s %10.4f %10.4f %10.4f %12.1f %9.0f %10.4f %6.2f "
            "%10.2e %5s\n",
            static_cast<long long>(L), cp, splits, static_cast<long long>(min_rows),
            kernel_name.c_str(), static_cast<long long>(page), graph ? "on" : "off", row.ms,
            row.host_ms, row.gpu_ms, bytes / (1 << 20), bytes / (row.ms * 1e-3) / 1e9, row.floor_ms,
            row.ms / row.floor_ms, err, pass ? "PASS" : "FAIL");
        std::fflush(stdout);
      }
    }
  }
  std::printf("%s\n", all_pass ? "ALL PASS" : "SOME ROWS FAILED");
  if (!o.json.empty()) {
    std::ofstream js(o.json);
    js << "{\"mode\": \"decode\", \"ragged\": " << (o.ragged ? "true" : "false")
       << ", \"copy_bandwidth_gbs\": " << bandwidth[0] << ", \"rows\": [";
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      js << (i ? ", " : "") << "{\"cache\": " << r.cache << ", \"cp\": " << r.cp
         << ", \"max_splits\": " << r.splits << ", \"min_split_rows\": " << r.min_rows
         << ", \"split_kernel\": \"" << r.kernel << "\", \"page_size\": " << r.page
         << ", \"cuda_graph\": " << (r.graph ? "true" : "false") << ", \"ms\": " << r.ms
         << ", \"host_ms\": " << r.host_ms << ", \"queued_ms\": " << r.gpu_ms
         << ", \"kv_bytes_per_gpu\": " << r.bytes_per_gpu << ", \"floor_ms\": " << r.floor_ms
         << ", \"err_o\": " << r.err << ", \"pass\": " << (r.pass ? "true" : "false") << "}";
    }
    js << "]}\n";
  }
  return all_pass ? 0 : 1;
}

}  // namespace ulysses::bench
