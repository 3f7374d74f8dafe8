#!/usr/bin/env bash
# Call A (36th session): hybrid groups that split the heads unevenly. The new GPU cases, every
# ring/hybrid GPU suite again (the in-group exchange's pack, unpack and segment code changed for
# every hybrid and ring case), sweep draws of hybrid plans, and the bench at 32k on 4 virtual ranks
# in groups of 2: 3 KV heads (2 and 1) beside 4 (2 and 2).
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
timeout 100 $B/test_gpu_ulysses --gtest_filter='UnevenHybrid/*:Mla/DeviceLoopbackRing.*uneven*' > $R/uneven_hybrid_cases.log 2>&1; step "uneven hybrid GPU cases" $?
pack
A="--seq 32768 --head-dim 128 --seed 7 --iters 3 --transport loopback --strategy hybrid,allgather --ulysses-degree 2 --cp 1,4"
timeout 60 stdbuf -oL $B/ulysses-bench $A --heads 24 --kv-heads 3 --json $R/bench_3kv.json > $R/bench_3kv.log 2>&1; step "bench 24/3 heads hybrid 2x2" $?
timeout 60 stdbuf -oL $B/ulysses-bench $A --heads 32 --kv-heads 4 --json $R/bench_4kv.json > $R/bench_4kv.log 2>&1; step "bench 32/4 heads hybrid 2x2" $?
pack
ULYSSES_SWEEP_MATCH="hybrid" ULYSSES_SWEEP_CASES=2000 timeout 60 $B/test_gpu_sweep > $R/sweep_hybrid.log 2>&1; step "sweep hybrid (124 by design)" $?
pack
timeout 280 $B/test_gpu_ulysses --gtest_filter='Gpu/DeviceLoopbackRing.*:Fp8/DeviceLoopbackRing.*:Packed/DeviceLoopbackRing.*:PackedStream/DeviceLoopbackRing.*:Mla/DeviceLoopbackRing.*hybrid*:Mla/DeviceLoopbackRing.*ring_*' > $R/ring_regression.log 2>&1; step "ring/hybrid GPU suites (regression)" $?
