#!/usr/bin/env bash
# Call C (29th session): the dSinks check's flake rate with the old test (plain dSinks exact) and
# the new one (plain dSinks from its own rounded O), then 128k packed under 128,128 old vs new.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
nvidia-smi -L > $R/gpu.txt
F='Features/CudnnVsReference.WithinTwiceThePlainError/bf16_d128_varlen_sinks'
timeout 100 $B/test_gpu_cudnn_old --gtest_filter="$F" --gtest_repeat=40 > $R/flake_old.log 2>&1; echo "old rc $?" >> $R/rc.txt
timeout 100 $B/test_gpu_cudnn --gtest_filter="$F" --gtest_repeat=40 > $R/flake_new.log 2>&1; echo "new rc $?" >> $R/rc.txt
timeout 60 $B/test_gpu_cudnn --gtest_filter='*sinks*' > $R/sinks_new.log 2>&1; echo "sinks rc $?" >> $R/rc.txt
pack
A="--cp 2 --seq 131072 --transport loopback --no-causal --window 128,128 --chunks 1 --varlen 8 --seed 7 --iters 3 --strategy ulysses --trace-calls"
timeout 70 stdbuf -oL $B/ulysses-bench-old $A > $R/packed_128k_old.log 2>&1; echo "bench old rc $?" >> $R/rc.txt
timeout 70 stdbuf -oL $B/ulysses-bench $A --json $R/packed_128k.json > $R/packed_128k.log 2>&1; echo "bench new rc $?" >> $R/rc.txt
pack
# Hybrid on packed documents: ring calls on Ulysses' layout, the VarlenRows calls whose Q is staged.
ULYSSES_SWEEP_MATCH="hybrid thd" ULYSSES_SWEEP_CASES=2000 timeout 110 $B/test_gpu_sweep > $R/sweep_hybrid_thd.log 2>&1; echo "sweep rc $?" >> $R/rc.txt
