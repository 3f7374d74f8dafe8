#!/usr/bin/env bash
# Call 4 (24th session): the 128k packed rows at the final library code (stream sharding and the
# span-limited merges): ring per_sequence vs stream beside allgather, cp 1 and 2.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
for n in 64 8; do
  timeout 165 $B/ulysses-bench --cp 1,2 --transport loopback --seq 131072 --varlen $n --seed 7 --strategy ring,allgather --packed-sharding per_sequence,stream --chunks 1 --iters 3 --json $R/spans_128k_$n.json > $R/spans_128k_$n.log 2>&1; echo "128k $n rc $?" >> $R/rc.txt
done
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
