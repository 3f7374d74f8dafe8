#!/usr/bin/env bash
# Call B (38th session): all-gather's adjacent chunks as two calls (rank P-1). Memory by rank and
# each rank's kernel calls, before (ulysses-bench-old) and after, then every all-gather GPU case.
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
ARGS="--cp 1,2,4 --transport loopback --seq 8192,32768,131072 --strategy allgather --chunks 1 --iters 3 --seed 7 --trace-calls"
timeout 150 $B/ulysses-bench-old $ARGS --json $R/before.json > $R/before.log 2>&1; step "bench before" $?
pack
timeout 150 $B/ulysses-bench $ARGS --json $R/after.json > $R/after.log 2>&1; step "bench after" $?
pack
timeout 200 $B/test_gpu_ulysses --gtest_filter='*allgather*:AllGather*' > $R/allgather_cases.log 2>&1; step "allgather gpu cases" $?
pack
ULYSSES_SWEEP_MATCH="allgather" ULYSSES_SWEEP_CASES=2000 timeout 60 $B/test_gpu_sweep > $R/sweep_allgather.log 2>&1; step "sweep allgather (124 by design)" $?
