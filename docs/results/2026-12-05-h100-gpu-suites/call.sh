#!/usr/bin/env bash
# Fifty-eighth session, one GPU: the C++ GPU suites on main's final library (binaries of 3432370,
# the library unchanged since 54b697b): layout, decode and cuDNN in full, then the Ulysses
# device-loopback cases with head chunks and the stream-safety cases.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit,driver_version --format=csv > $OUT/gpu.txt 2>&1
cat $OUT/gpu.txt
run() {  # name limit command...
  local n=$1 l=$2; shift 2
  timeout $l "$@" > $OUT/$n.log 2>&1; echo "$n rc $?"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) \]|tests? from .* ran" $OUT/$n.log | tail -4
}
run layout 60 .carry/bin/test_gpu_layout
run decode 120 .carry/bin/test_gpu_decode
run cudnn 240 .carry/bin/test_gpu_cudnn
run ulysses_chunks 150 .carry/bin/test_gpu_ulysses --gtest_filter='*Chunk*:*chunk*:GpuStreams.*'
