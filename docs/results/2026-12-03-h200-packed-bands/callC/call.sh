#!/usr/bin/env bash
# Call C (27th session): workspace_bytes() builds no probe for a backward that runs as bands. The
# cuDNN cases (dense and packed bands, every call within workspace_bytes()), the loopback cases with
# windows, then the dense and packed 32k rows under 128,128 with their memory lines.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 150 $B/test_gpu_cudnn --gtest_filter='*WithinTwiceThePlainError*' > $R/cudnn.log 2>&1; echo "cudnn rc $?" >> $R/rc.txt
timeout 200 $B/test_gpu_ulysses --gtest_filter='*window*:*two_sided*:*Window*:*right_only*' > $R/loopback_windows.log 2>&1; echo "loopback windows rc $?" >> $R/rc.txt
common="--transport loopback --no-causal --window 128,128 --chunks 1 --iters 5 --strategy ulysses,allgather"
timeout 60 stdbuf -oL $B/ulysses-bench --cp 1,2 --seq 32768 $common --trace-calls > $R/dense_32k.log 2>&1; echo "dense 32k rc $?" >> $R/rc.txt
timeout 60 stdbuf -oL $B/ulysses-bench --cp 1,2 --seq 32768 --varlen 8 --seed 7 --packed-sharding stream $common > $R/packed_32k.log 2>&1; echo "packed 32k rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
