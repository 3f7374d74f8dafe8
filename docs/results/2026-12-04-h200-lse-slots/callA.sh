#!/usr/bin/env bash
# Call A (37th session): each LSE-only slot sized for the widest chunk it takes (176b2d4). The
# Uneven GPU cases (two new: slots of different widths, MLA and fp8), every LSE-only Ulysses GPU
# case, the bench's memory per rank with lse at chunks 1, 2 (3) and 1 or 2 in flight, and a GPU
# sweep of Ulysses lse draws.
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
timeout 120 $B/test_gpu_ulysses --gtest_filter='Uneven/*' > $R/uneven_cases.log 2>&1; step "uneven GPU cases" $?
pack
timeout 90 stdbuf -oL $B/ulysses-bench --seq 30720 --cp 1,3 --heads 40 --kv-heads 8 --sinks --saved lse --chunks 1,2 --in-flight 1,2 --seed 7 --iters 3 --transport loopback --strategy ulysses --json $R/bench_40h_cp3_lse.json > $R/bench_40h_cp3_lse.log 2>&1; step "bench 40/8 heads cp 3 lse chunks 1,2 in flight 1,2" $?
timeout 90 stdbuf -oL $B/ulysses-bench --seq 32768 --cp 1,2 --heads 48 --kv-heads 6 --saved lse --chunks 1,2,3 --in-flight 1,2 --seed 7 --iters 3 --transport loopback --strategy ulysses --json $R/bench_48h_cp2_lse.json > $R/bench_48h_cp2_lse.log 2>&1; step "bench 48/6 heads cp 2 lse chunks 1,2,3 in flight 1,2" $?
pack
timeout 150 $B/test_gpu_ulysses --gtest_filter='Gpu/DeviceLoopbackUlysses.*lse*:Fp8/DeviceLoopbackUlysses.*lse*' > $R/lse_regression.log 2>&1; step "LSE-only ulysses GPU cases (regression)" $?
pack
ULYSSES_SWEEP_MATCH="ulysses lse" ULYSSES_SWEEP_CASES=2000 timeout 90 $B/test_gpu_sweep > $R/sweep_ulysses_lse.log 2>&1; step "sweep ulysses lse (124 by design)" $?
