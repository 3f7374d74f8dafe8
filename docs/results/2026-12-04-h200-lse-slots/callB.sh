#!/usr/bin/env bash
# Call B (37th session): kernel workspaces sized per chunk parity (c239c6a) on top of the per-slot
# exchange buffers (176b2d4). The Uneven cases, every Ulysses GPU case of the Gpu and Fp8 suites,
# the bench at 4k where chunk calls overlap (48 / 6 heads, cp 2, chunks 1, 2, 3), and a GPU sweep
# of draws whose heads split unevenly.
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
timeout 100 $B/test_gpu_ulysses --gtest_filter='Uneven/*' > $R/uneven_cases.log 2>&1; step "uneven GPU cases" $?
pack
timeout 60 stdbuf -oL $B/ulysses-bench --seq 4096 --cp 1,2 --heads 48 --kv-heads 6 --chunks 1,2,3 --seed 7 --iters 5 --transport loopback --strategy ulysses --json $R/bench_48h_4k_chunks.json > $R/bench_48h_4k_chunks.log 2>&1; step "bench 48/6 heads 4k cp 2 chunks 1,2,3" $?
pack
timeout 280 $B/test_gpu_ulysses --gtest_filter='Gpu/DeviceLoopbackUlysses.*:Fp8/DeviceLoopbackUlysses.*' > $R/ulysses_regression.log 2>&1; step "ulysses GPU suites (regression)" $?
pack
ULYSSES_SWEEP_MATCH="heads=uneven" ULYSSES_SWEEP_CASES=2000 timeout 80 $B/test_gpu_sweep > $R/sweep_uneven.log 2>&1; step "sweep heads=uneven (124 by design)" $?
