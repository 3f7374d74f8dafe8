// ulysses-copy-bench: what a copy engine makes of rows.
//
// A Ulysses pack gathers, token by token, the heads of one chunk (hq·D of a token's Hq·D values)
// into dense rows, and the unpack scatters them back; both are SM kernels, and a same-GPU copy
// waits for a cuDNN call that holds every SM (docs/PERF.md, "Same-device copies wait for the SMs").
// A 2D copy between GPUs (cudaMemcpy2DAsync) runs on a copy engine and could gather on the way over
// NVLink, if a copy engine moves rows of that width near its rate for whole blocks. For every route
// this machine has (a GPU to itself, to pinned host memory, to each GPU it has peer access to) and
// each row width, this times 2D copies that take one row of `width` bytes out of every `spread`
// widths of the source into dense rows, beside 1D copies of the same bytes, and checks the bytes
// that arrived. Then, once per route, whether the copy needs SMs: issued beside a kernel that holds
// every SM of the GPUs involved, does it finish before that kernel does?
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_cuda.h"
#include "bench/copy_bench_spin.h"

namespace ulysses::bench {
namespace {

struct Route {
  int src = 0, dst = 0;  // devices; dst -1: pinned host memory
  int exec = 0;          // the device whose stream issues the copies (peer: the receiver's, a pull)
  std::string name() const {
    return "gpu" + std::to_string(src) + "->" + (dst < 0 ? "host" : "gpu" + std::to_string(dst));
  }
};

struct Row {
  std::string route;
  std::size_t width = 0;
  double gbs_1d = 0, gbs_2d = 0;
  bool exact = false;
};

struct Beside {
  std::string route;
  std::size_t width = 0;
  double alone_ms = 0, beside_ms = 0, kernel_ms = 0;
  bool before_kernel_end = false;
};

// Milliseconds of `iters` copies issued by `copy` back to back on `stream`, after two untimed.
template <class Copy>
double time_copies(cudaStream_t stream, int iters, Copy copy) {
  cudaEvent_t e0, e1;
  BENCH_CUDA(cudaEventCreate(&e0));
  BENCH_CUDA(cudaEventCreate(&e1));
  for (int i = 0; i < 2; ++i) copy();
  BENCH_CUDA(cudaEventRecord(e0, stream));
  for (int i = 0; i < iters; ++i) copy();
  BENCH_CUDA(cudaEventRecord(e1, stream));
  BENCH_CUDA(cudaEventSynchronize(e1));
  const double ms = ms_last(e0, e1);
  BENCH_CUDA(cudaEventDestroy(e0));
  BENCH_CUDA(cudaEventDestroy(e1));
  return ms;
}

// The byte at `i` of every source: a pattern no two nearby rows share.
unsigned char pattern(std::size_t i) {
  return static_cast<unsigned char>((i * 131 + i / 4099) & 0xff);
}

int run(int argc, char** argv) {
  CLI::App app{
      "ulysses-copy-bench: 2D copies (rows of each width taken out of wider rows) against 1D "
      "copies of the same bytes, on every route this machine has, and whether each route's copies "
      "need SMs (docs/PERF.md, \"Copy engines and rows\")"};
  double mib = 64;
  std::vector<std::size_t> widths = {128, 256, 512, 1024, 2048, 4096, 8192, 32768};
  std::size_t spread = 4;
  int iters = 10;
  double hold_ms = 50;
  std::size_t beside_width = 2048;
  std::string json;
  app.add_option("--mib", mib, "MiB each copy moves (default 64)")->check(CLI::Range(1.0, 4096.0));
  app.add_option("--widths", widths,
                 "row widths in bytes (list; default 128 ... 32768; 2048 = 8 heads of 128 bf16 "
                 "values, one chunk's Q rows at cp 2 with 2 chunks)")
      ->delimiter(',')
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 26));
  app.add_option("--spread", spread,
                 "the source's row pitch in widths (default 4: a quarter of each source row, as "
                 "8 of 32 heads)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{64}));
  app.add_option("--iters", iters, "timed copies per case (default 10)")
      ->check(CLI::Range(1, 1000));
  app.add_option("--hold-ms", hold_ms,
                 "how long the kernel that holds every SM runs at the highest clock (default 50)")
      ->check(CLI::Range(1.0, 10000.0));
  app.add_option("--beside-width", beside_width,
                 "the row width of the copies timed beside that kernel (default 2048)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 26));
  app.add_option("--json", json, "also write the results as JSON to this file");
  CLI11_PARSE(app, argc, argv);

  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    std::fprintf(stderr, "ulysses-copy-bench: needs a GPU (found none)\n");
    return 2;
  }
  const std::size_t bytes = static_cast<std::size_t>(mib * (1 << 20));
  for (std::size_t w : widths) {
    if (bytes % w != 0) {
      std::fprintf(stderr, "ulysses-copy-bench: --widths %zu does not divide %zu bytes (--mib)\n",
                   w, bytes);
      return 2;
    }
  }
  if (bytes % beside_width != 0) {
    std::fprintf(stderr, "ulysses-copy-bench: --beside-width %zu does not divide %zu bytes\n",
                 beside_width, bytes);
    return 2;
  }
  std::vector<Route> routes;
  for (int d = 0; d < ndev; ++d) {
    routes.push_back({d, d, d});
    routes.push_back({d, -1, d});
  }
  for (int s = 0; s < ndev; ++s) {
    for (int d = 0; d < ndev; ++d) {
      int ok = 0;
      if (s == d || cudaDeviceCanAccessPeer(&ok, d, s) != cudaSuccess || !ok) continue;
      BENCH_CUDA(cudaSetDevice(d));
      const cudaError_t e = cudaDeviceEnablePeerAccess(s, 0);
      if (e != cudaSuccess && e != cudaErrorPeerAccessAlreadyEnabled) BENCH_CUDA(e);
      (void)cudaGetLastError();  // (clear "already enabled")
      routes.push_back({s, d, d});
    }
  }
  std::printf(
      "# ulysses-copy-bench: %d GPU(s); %.0f MiB per copy, rows taken one width in %zu, "
      "%d copies timed per case\n",
      ndev, mib, spread, iters);
  std::printf("%-14s %8s %10s %10s %7s %6s\n", "route", "width", "1D GB/s", "2D GB/s", "2D/1D",
              "check");

  // The source as the host sees it (every route's), and what a 2D copy of width w delivers.
  std::vector<unsigned char> host_src(bytes * spread);
  for (std::size_t i = 0; i < host_src.size(); ++i) host_src[i] = pattern(i);
  std::vector<unsigned char> got(bytes);
  std::vector<Row> rows;
  std::vector<Beside> besides;
  bool all_exact = true;
  for (const Route& r : routes) {
    BENCH_CUDA(cudaSetDevice(r.src));
    void* src = nullptr;
    BENCH_CUDA(cudaMalloc(&src, bytes * spread));
    BENCH_CUDA(cudaMemcpy(src, host_src.data(), host_src.size(), cudaMemcpyHostToDevice));
    void* dst = nullptr;
    if (r.dst < 0) {
      BENCH_CUDA(cudaMallocHost(&dst, bytes));
    } else {
      BENCH_CUDA(cudaSetDevice(r.dst));
      BENCH_CUDA(cudaMalloc(&dst, bytes));
    }
    BENCH_CUDA(cudaSetDevice(r.exec));
    cudaStream_t stream;
    BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    auto copy_2d = [&](std::size_t w) {
      BENCH_CUDA(
          cudaMemcpy2DAsync(dst, w, src, w * spread, w, bytes / w, cudaMemcpyDefault, stream));
    };
    const double ms_1d = time_copies(stream, iters, [&] {
      BENCH_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream));
    });
    for (std::size_t w : widths) {
      // Poisoned first, so that bytes the copy leaves alone show (but where the pattern is 0xA5).
      if (r.dst < 0) {
        BENCH_CUDA(cudaStreamSynchronize(stream));
        std::memset(dst, 0xA5, bytes);
      } else {
        BENCH_CUDA(cudaMemsetAsync(dst, 0xA5, bytes, stream));
      }
      const double ms_2d = time_copies(stream, iters, [&] { copy_2d(w); });
      BENCH_CUDA(cudaMemcpy(got.data(), dst, bytes, cudaMemcpyDefault));
      bool exact = true;
      for (std::size_t i = 0; i < bytes && exact; ++i) {
        exact = got[i] == host_src[(i / w) * w * spread + i % w];
      }
      all_exact = all_exact && exact;
      const double moved = static_cast<double>(bytes) * 1e-6 * iters;  // GB (per ms: GB/s)
      Row row{r.name(), w, moved / ms_1d, moved / ms_2d, exact};
      std::printf("%-14s %8zu %10.1f %10.1f %7.2f %6s\n", row.route.c_str(), w, row.gbs_1d,
                  row.gbs_2d, row.gbs_2d / row.gbs_1d, exact ? "exact" : "WRONG");
      rows.push_back(row);
    }
    // Beside a kernel that holds every SM of the GPUs involved: the copy issued once the kernels
    // run, timed on its own stream, and whether it ends before they do.
    Beside b{r.name(), beside_width};
    b.alone_ms = time_copies(stream, 1, [&] { copy_2d(beside_width); });
    std::vector<int> held = {r.src};
    if (r.dst >= 0 && r.dst != r.src) held.push_back(r.dst);
    std::vector<cudaStream_t> spin_streams;
    std::vector<cudaEvent_t> spin_start, spin_end;
    for (int d : held) {
      BENCH_CUDA(cudaSetDevice(d));
      cudaStream_t s;
      cudaEvent_t e0, e1;
      BENCH_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
      BENCH_CUDA(cudaEventCreate(&e0));
      BENCH_CUDA(cudaEventCreate(&e1));
      BENCH_CUDA(cudaEventRecord(e0, s));
      BENCH_CUDA(launch_spin(d, hold_ms, s));
      BENCH_CUDA(cudaEventRecord(e1, s));
      spin_streams.push_back(s);
      spin_start.push_back(e0);
      spin_end.push_back(e1);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // the kernels are running
    BENCH_CUDA(cudaSetDevice(r.exec));
    cudaEvent_t c0, c1;
    BENCH_CUDA(cudaEventCreate(&c0));
    BENCH_CUDA(cudaEventCreate(&c1));
    BENCH_CUDA(cudaEventRecord(c0, stream));
    copy_2d(beside_width);
    BENCH_CUDA(cudaEventRecord(c1, stream));
    BENCH_CUDA(cudaEventSynchronize(c1));
    for (std::size_t k = 0; k < held.size(); ++k) {
      BENCH_CUDA(cudaSetDevice(held[k]));
      BENCH_CUDA(cudaEventSynchronize(spin_end[k]));
      b.kernel_ms = std::max(b.kernel_ms, ms_last(spin_start[k], spin_end[k]));
      // (The copies' stream is on a held device: events of one device only can be compared.)
      if (held[k] == r.exec) b.before_kernel_end = ms_last(c1, spin_end[k]) > 0;
      BENCH_CUDA(cudaEventDestroy(spin_start[k]));
      BENCH_CUDA(cudaEventDestroy(spin_end[k]));
      BENCH_CUDA(cudaStreamDestroy(spin_streams[k]));
    }
    b.beside_ms = ms_last(c0, c1);
    std::printf(
        "#   %s, width %zu: a copy alone %.3f ms; beside a kernel holding every SM "
        "(%.1f ms) %.3f ms, %s\n",
        b.route.c_str(), beside_width, b.alone_ms, b.kernel_ms, b.beside_ms,
        b.before_kernel_end ? "done before the kernel: a copy engine's"
                            : "not before the kernel ended: it waits for SMs");
    besides.push_back(b);
    BENCH_CUDA(cudaEventDestroy(c0));
    BENCH_CUDA(cudaEventDestroy(c1));
    BENCH_CUDA(cudaStreamDestroy(stream));
    BENCH_CUDA(cudaSetDevice(r.src));
    BENCH_CUDA(cudaFree(src));
    if (r.dst < 0) {
      BENCH_CUDA(cudaFreeHost(dst));
    } else {
      BENCH_CUDA(cudaSetDevice(r.dst));
      BENCH_CUDA(cudaFree(dst));
    }
  }
  if (!json.empty()) {
    std::ofstream f(json);
    f << "{\n  \"tool\": \"ulysses-copy-bench\",\n  \"gpus\": " << ndev
      << ",\n  \"bytes\": " << bytes << ",\n  \"spread\": " << spread << ",\n  \"iters\": " << iters
      << ",\n  \"rows\": [\n";
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const Row& x = rows[i];
      f << "    {\"route\": \"" << x.route << "\", \"width\": " << x.width
        << ", \"gbs_1d\": " << x.gbs_1d << ", \"gbs_2d\": " << x.gbs_2d
        << ", \"exact\": " << (x.exact ? "true" : "false") << "}"
        << (i + 1 < rows.size() ? "," : "") << "\n";
    }
    f << "  ],\n  \"beside_a_kernel\": [\n";
    for (std::size_t i = 0; i < besides.size(); ++i) {
      const Beside& x = besides[i];
      f << "    {\"route\": \"" << x.route << "\", \"width\": " << x.width
        << ", \"alone_ms\": " << x.alone_ms << ", \"beside_ms\": " << x.beside_ms
        << ", \"kernel_ms\": " << x.kernel_ms
        << ", \"before_kernel_end\": " << (x.before_kernel_end ? "true" : "false") << "}"
        << (i + 1 < besides.size() ? "," : "") << "\n";
    }
    f << "  ]\n}\n";
  }
  std::printf("%s\n", all_exact ? "ALL EXACT" : "SOME COPIES DELIVERED WRONG BYTES");
  return all_exact ? 0 : 1;
}

}  // namespace
}  // namespace ulysses::bench

int main(int argc, char** argv) { return ulysses::bench::run(argc, argv); }
