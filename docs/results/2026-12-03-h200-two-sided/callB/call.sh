#!/usr/bin/env bash
# Call B (26th session): cuDNN's backward under windows without causal as causal bands. The cuDNN
# cases against the FP64 reference, every loopback case with a window (ulysses, ring, hybrid,
# all-gather), then the dense 32k and 128k rows under window 128,128 (the old binary's 32k row is
# in callA: 84 ms at cp = 1), every kernel call timed.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 200 $B/test_gpu_cudnn --gtest_filter='*WithinTwiceThePlainError*' > $R/cudnn.log 2>&1; echo "cudnn rc $?" >> $R/rc.txt
timeout 150 $B/test_gpu_ulysses --gtest_filter='*window*:*two_sided*:*Window*' > $R/loopback_windows.log 2>&1; echo "loopback windows rc $?" >> $R/rc.txt
common="--transport loopback --no-causal --window 128,128 --chunks 1"
timeout 90 $B/ulysses-bench --cp 1,2,4 --seq 32768 $common --iters 5 --strategy ulysses,allgather,ring --trace-calls --json $R/dense_32k.json > $R/dense_32k.log 2>&1; echo "dense 32k rc $?" >> $R/rc.txt
timeout 90 $B/ulysses-bench --cp 1,2 --seq 131072 $common --iters 3 --strategy ulysses,allgather,ring --json $R/dense_128k.json > $R/dense_128k.log 2>&1; echo "dense 128k rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
