// Built instead of gpu_bench.cc without CUDA: the GPU path is not available.
#include <cstdio>

#include "bench/bench_options.h"

namespace ulysses::bench {

int run_gpu_bench(Options, const std::set<std::string>&) {
  std::fprintf(stderr, "ulysses-bench: this build has no CUDA backends; use --device cpu\n");
  return 2;
}

int run_gpu_decode_bench(Options, const std::set<std::string>&) {
  std::fprintf(stderr, "ulysses-bench: this build has no CUDA backends (--decode needs a GPU)\n");
  return 2;
}

}  // namespace ulysses::bench
