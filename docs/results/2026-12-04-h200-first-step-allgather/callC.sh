#!/usr/bin/env bash
# Call C (38th session): the final all-gather rule at a1cea40 (adjacent chunks in one call only
# while small): bench rows with each rank's calls and plan buffers, every all-gather GPU case, the
# graph statistics test, and all-gather sweep draws.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
nvidia-smi -L > $R/gpu.txt
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; }
timeout 60 $B/test_gpu_cudnn --gtest_filter='Cudnn.GraphsAreBuiltOncePerShape' > $R/cudnn_stats.log 2>&1; step "cudnn graph stats test" $?
timeout 150 $B/ulysses-bench --cp 1,2,4 --transport loopback --seq 8192,32768,131072 --strategy allgather --chunks 1 --iters 3 --seed 7 --trace-calls --json $R/final.json > $R/final.log 2>&1; step "bench final" $?
pack
timeout 200 $B/test_gpu_ulysses --gtest_filter='*allgather*:AllGather*' > $R/allgather_cases.log 2>&1; step "allgather gpu cases" $?
pack
ULYSSES_SWEEP_MATCH="allgather" ULYSSES_SWEEP_CASES=2000 timeout 45 $B/test_gpu_sweep > $R/sweep_allgather.log 2>&1; step "sweep allgather (124 by design)" $?
