#!/usr/bin/env bash
# Call C (36th session): Ulysses head chunks of unequal sizes, also with heads split unevenly.
# The Uneven GPU cases (4 new with chunks), the Ulysses GPU suites again (every chunk's rows are now
# per chunk), the NCCL suites on one GPU, the bench with 40 / 8 heads on 3 virtual ranks at chunks
# 1, 2, 4 (KV heads 3, 3, 2: chunks of 2 and 1 at K = 2), and sweep draws of ulysses plans.
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
timeout 120 $B/test_gpu_ulysses --gtest_filter='Uneven/*' > $R/uneven_cases.log 2>&1; step "uneven GPU cases (chunks)" $?
pack
timeout 60 stdbuf -oL $B/ulysses-bench --seq 30720 --cp 1,3 --heads 40 --kv-heads 8 --sinks --saved heads,lse --chunks 1,2,4 --seed 7 --iters 3 --transport loopback --strategy ulysses --json $R/bench_40h_cp3_chunks.json > $R/bench_40h_cp3_chunks.log 2>&1; step "bench 40/8 heads cp 3 chunks 1,2,4" $?
pack
timeout 60 $B/test_multigpu > $R/multigpu.log 2>&1; step "test_multigpu on one GPU" $?
pack
ULYSSES_SWEEP_MATCH="ulysses" ULYSSES_SWEEP_CASES=2000 timeout 50 $B/test_gpu_sweep > $R/sweep_ulysses.log 2>&1; step "sweep ulysses (124 by design)" $?
pack
timeout 270 $B/test_gpu_ulysses --gtest_filter='Gpu/DeviceLoopbackUlysses.*:Fp8/DeviceLoopbackUlysses.*' > $R/ulysses_regression.log 2>&1; step "ulysses GPU suites (regression)" $?
