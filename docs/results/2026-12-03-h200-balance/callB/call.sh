#!/usr/bin/env bash
# Call B (25th session): 8 packed documents of 128k under ring with the stream (cp 4), as given
# and balanced, every call timed; then all-gather native vs fp8
# K/V chunks through the device loopback.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 150 $B/ulysses-bench --cp 4 --transport loopback --seq 131072 --varlen 8 --seed 8 --strategy ring --packed-sharding stream --doc-order given,balanced --chunks 1 --iters 3 --trace-calls --json $R/ring_128k_8.json > $R/ring_128k_8.log 2>&1; echo "ring 128k 8 rc $?" >> $R/rc.txt
timeout 150 $B/ulysses-bench --cp 2,4 --transport loopback --seq 32768,131072 --strategy allgather --payload native,fp8 --chunks 1 --iters 3 --json $R/allgather_fp8.json > $R/allgather_fp8.log 2>&1; echo "bench fp8 rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
