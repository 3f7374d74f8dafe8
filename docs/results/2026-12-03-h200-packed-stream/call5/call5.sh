#!/usr/bin/env bash
# Call 5 (24th session), trial: the stream's causal steps as per-pair calls of c query rows (as with
# a window) instead of the dense steps' calls over 2c rows: time and memory against call3/call4.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
for n in 8 64; do
  timeout 45 $B/ulysses-bench --cp 2,4 --transport loopback --seq 32768 --varlen $n --seed 7 --strategy ring,allgather --packed-sharding stream --chunks 1 --iters 3 > $R/pairs_32k_$n.log 2>&1; echo "32k $n rc $?" >> $R/rc.txt
done
timeout 120 $B/ulysses-bench --cp 2 --transport loopback --seq 131072 --varlen 64 --seed 7 --strategy ring,allgather --packed-sharding stream --chunks 1 --iters 3 > $R/pairs_128k_64.log 2>&1; echo "128k 64 rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
