#!/usr/bin/env bash
# Call B (28th session): gradients added to running fp32 sums over the pieces' rows only (e2805cf).
# Tests: the element-wise kernels (new pieces case), cuDNN's packed / VarlenRows / accumulate
# cases, every packed loopback case. Bench: old binary (5d92dbd) then new, 8 documents under
# 128,128 without causal (the bands), and causal packed ring (its steps add to fp32 sums too).
# Logs go straight to $OUT/r, so that what ran comes back if the call is cut short.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 40 $B/test_gpu_layout --gtest_filter='*Elementwise*' > $R/layout.log 2>&1; echo "layout rc $?" >> $R/rc.txt
common="--transport loopback --no-causal --window 128,128 --chunks 1 --varlen 8 --seed 7 --packed-sharding stream"
timeout 45 stdbuf -oL $B/ulysses-bench-old --cp 1,2 --seq 32768 $common --iters 5 --strategy ulysses,allgather,ring --trace-calls > $R/packed_32k_old.log 2>&1; echo "32k old rc $?" >> $R/rc.txt
timeout 45 stdbuf -oL $B/ulysses-bench --cp 1,2 --seq 32768 $common --iters 5 --strategy ulysses,allgather,ring --trace-calls --json $R/packed_32k.json > $R/packed_32k.log 2>&1; echo "32k new rc $?" >> $R/rc.txt
timeout 110 $B/test_gpu_cudnn --gtest_filter='*varlen*:Blocks/*:Cudnn.Accumulated*:Cudnn.Packed*' > $R/cudnn.log 2>&1; echo "cudnn rc $?" >> $R/rc.txt
timeout 30 stdbuf -oL $B/ulysses-bench-old --cp 1 --seq 131072 $common --iters 3 --strategy ulysses > $R/packed_128k_old.log 2>&1; echo "128k old rc $?" >> $R/rc.txt
timeout 30 stdbuf -oL $B/ulysses-bench --cp 1 --seq 131072 $common --iters 3 --strategy ulysses --json $R/packed_128k.json > $R/packed_128k.log 2>&1; echo "128k new rc $?" >> $R/rc.txt
timeout 150 $B/test_gpu_ulysses --gtest_filter='*varlen*:*thd*:*packed*:Packed*:PackedStream*:AllGatherPacked*:*docs*' > $R/loopback_packed.log 2>&1; echo "loopback packed rc $?" >> $R/rc.txt
ring="--transport loopback --chunks 1 --varlen 64 --seed 7 --cp 2 --seq 131072 --strategy ring --iters 3"
timeout 30 stdbuf -oL $B/ulysses-bench-old $ring > $R/ring_64docs_old.log 2>&1; echo "ring old rc $?" >> $R/rc.txt
timeout 30 stdbuf -oL $B/ulysses-bench $ring --json $R/ring_64docs.json > $R/ring_64docs.log 2>&1; echo "ring new rc $?" >> $R/rc.txt
