#!/usr/bin/env bash
# Call D (35th session): FP8 payloads with two head widths (rows of gcd(head_dim, head_dim_v)
# values, a head spanning several): the device FP8 pack against the host's bytes, the Ulysses FP8
# cases (2 with 192/128), sweep draws of ulysses with fp8 and head_dim_v, and the bench at 32k,
# 192/128, native beside fp8 on 2 virtual ranks.
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
timeout 60 $B/test_gpu_layout --gtest_filter='Rows/GpuFp8Rows.*' > $R/fp8_rows.log 2>&1; step "GpuFp8Rows" $?
timeout 90 $B/test_gpu_ulysses --gtest_filter='Fp8/*:Uneven/*' > $R/fp8_uneven_cases.log 2>&1; step "Fp8 and Uneven Ulysses cases" $?
pack
ULYSSES_SWEEP_MATCH="ulysses payload=fp8 Dv=" ULYSSES_SWEEP_CASES=2000 timeout 60 $B/test_gpu_sweep > $R/sweep_fp8_dv.log 2>&1; step "sweep ulysses fp8 Dv (124 by design)" $?
pack
timeout 90 stdbuf -oL $B/ulysses-bench --seq 32768 --cp 1,2 --transport loopback --heads 32 --kv-heads 32 --head-dim 192 --head-dim-v 128 --payload native,fp8 --strategy ulysses --chunks 1 --seed 7 --iters 3 --json $R/bench_mla_fp8.json > $R/bench_mla_fp8.log 2>&1; step "bench 32k 192/128 native,fp8 cp 1,2" $?
