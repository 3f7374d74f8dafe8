#!/usr/bin/env bash
# Call B (36th session): FP8 K/V blocks with two head widths under ring, hybrid and all-gather
# (rows of gcd(D, Dv) values). The 4 new GPU cases, the FP8 ring suites again (the FP8 row
# geometry changed for every case), sweep draws with fp8, the bench at 32k with 192 / 128 on 2
# virtual ranks (native beside fp8), and the pack-rate line on an uneven split and with 192 / 128.
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
timeout 100 $B/test_gpu_ulysses --gtest_filter='Mla/*fp8*' > $R/fp8_mla_cases.log 2>&1; step "fp8 MLA ring/hybrid/allgather GPU cases" $?
pack
timeout 100 $B/test_gpu_ulysses --gtest_filter='Fp8/DeviceLoopbackRing.*:UnevenHybrid/*fp8*' > $R/fp8_ring_regression.log 2>&1; step "fp8 ring suites (regression)" $?
pack
timeout 120 stdbuf -oL $B/ulysses-bench --seq 32768 --cp 1,2 --transport loopback --heads 32 --kv-heads 32 --head-dim 192 --head-dim-v 128 --payload native,fp8 --strategy ring,allgather --seed 7 --iters 3 --json $R/bench_mla_fp8.json > $R/bench_mla_fp8.log 2>&1; step "bench 32k 192/128 ring,allgather native,fp8 cp 1,2" $?
pack
timeout 60 stdbuf -oL $B/ulysses-bench --seq 32768 --cp 1,8 --transport loopback --heads 12 --kv-heads 12 --head-dim 128 --strategy ulysses --chunks 1 --seed 7 --iters 3 > $R/bench_uneven_pack_line.log 2>&1; step "bench 12 heads cp 8 (pack line)" $?
pack
ULYSSES_SWEEP_MATCH="fp8" ULYSSES_SWEEP_CASES=2000 timeout 90 $B/test_gpu_sweep > $R/sweep_fp8.log 2>&1; step "sweep fp8 (124 by design)" $?
