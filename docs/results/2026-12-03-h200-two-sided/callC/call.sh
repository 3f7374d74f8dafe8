#!/usr/bin/env bash
# Call C (26th session): 128k dense under window 128,128 at cp 1 and 2 (ulysses), new binary then
# the old one (2b90c8d), line-buffered (call B's 128k row timed out with nothing written).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
common="--seq 131072 --transport loopback --no-causal --window 128,128 --chunks 1 --iters 3 --strategy ulysses"
timeout 120 stdbuf -oL $B/ulysses-bench --cp 1,2 $common --trace-calls > $R/dense_128k_new.log 2>&1; echo "new rc $?" >> $R/rc.txt
timeout 100 stdbuf -oL $B/ulysses-bench-old --cp 1 $common > $R/dense_128k_old.log 2>&1; echo "old rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
