#!/usr/bin/env bash
# Call B (35th session): Ulysses with heads split unevenly, second layout (each rank's own rows
# dense, exactly each peer's bytes travel): the GPU cases, sweep draws that split unevenly, the
# bench at 32k on 8 virtual ranks (12 heads beside 16) and 40/8 heads on 3, then the Ulysses GPU
# suites again (the plan's exchange and pack/unpack code changed for every case).
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
timeout 90 $B/test_gpu_ulysses --gtest_filter='Uneven/*' > $R/uneven_cases.log 2>&1; step "uneven GPU cases" $?
pack
ULYSSES_SWEEP_MATCH="ulysses cp=3 Hkv=4 chunks=1" ULYSSES_SWEEP_CASES=2000 timeout 45 $B/test_gpu_sweep > $R/sweep_uneven.log 2>&1; step "sweep ulysses cp=3 Hkv=4 (124 by design)" $?
pack
A="--seq 32768 --head-dim 128 --seed 7 --iters 3 --transport loopback --strategy ulysses,allgather --chunks 1"
timeout 45 stdbuf -oL $B/ulysses-bench $A --cp 1,8 --heads 12 --kv-heads 12 --json $R/bench_12h.json > $R/bench_12h.log 2>&1; step "bench 12 heads cp 1,8" $?
timeout 45 stdbuf -oL $B/ulysses-bench $A --cp 1,8 --heads 16 --kv-heads 16 --json $R/bench_16h.json > $R/bench_16h.log 2>&1; step "bench 16 heads cp 1,8" $?
timeout 30 stdbuf -oL $B/ulysses-bench --seq 30720 --cp 3 --heads 40 --kv-heads 8 --sinks --saved heads,lse --seed 7 --iters 3 --transport loopback --strategy ulysses --chunks 1 --json $R/bench_40h_cp3.json > $R/bench_40h_cp3.log 2>&1; step "bench 40/8 heads cp 3" $?
pack
timeout 250 $B/test_gpu_ulysses --gtest_filter='Gpu/DeviceLoopbackUlysses.*:Fp8/DeviceLoopbackUlysses.*:GpuSingleRank.*' > $R/ulysses_regression.log 2>&1; step "ulysses GPU suites (regression)" $?
