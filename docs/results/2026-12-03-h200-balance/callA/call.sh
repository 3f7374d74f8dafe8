#!/usr/bin/env bash
# Call A (25th session): what the 24th session left unrun on a GPU (all-gather's fp8 loopback
# cases, every ring/hybrid/all-gather loopback case after c9c5aa2 and 8f7a7f5, cuDNN's VarlenRows
# cases), then 8 packed documents of 128k as given and reordered by balance_packed_sequences
# (--doc-order given,balanced) under all-gather at cp 2, 4, 8, and 64 at cp 4, 8, every kernel
# call timed.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 50 $B/test_gpu_ulysses --gtest_filter='Fp8/*allgather*' > $R/fp8_allgather.log 2>&1; echo "fp8 allgather rc $?" >> $R/rc.txt
timeout 160 $B/test_gpu_ulysses --gtest_filter='*DeviceLoopbackRing*:-Fp8/*allgather*' > $R/ring_family.log 2>&1; echo "ring family rc $?" >> $R/rc.txt
timeout 40 $B/test_gpu_cudnn --gtest_filter='Blocks/CudnnVarlenRows*' > $R/varlen_rows.log 2>&1; echo "varlen rows rc $?" >> $R/rc.txt
timeout 180 $B/ulysses-bench --cp 2,4,8 --transport loopback --seq 131072 --varlen 8 --seed 8 --strategy allgather --doc-order given,balanced --chunks 1 --iters 3 --trace-calls --json $R/ag_128k_8.json > $R/ag_128k_8.log 2>&1; echo "ag 128k 8 rc $?" >> $R/rc.txt
timeout 120 $B/ulysses-bench --cp 4,8 --transport loopback --seq 131072 --varlen 64 --seed 7 --strategy allgather --doc-order given,balanced --chunks 1 --iters 3 --trace-calls --json $R/ag_128k_64.json > $R/ag_128k_64.log 2>&1; echo "ag 128k 64 rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
