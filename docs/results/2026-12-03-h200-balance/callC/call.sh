#!/usr/bin/env bash
# Call C (25th session): cp 8 of call A's 8 documents again (one rank's backward calls ran at
# 222-318 TFLOP/s there, against ~430-500 for the same shapes elsewhere: the loopback's spread?).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
for i in 1 2; do
timeout 120 $B/ulysses-bench --cp 8 --transport loopback --seq 131072 --varlen 8 --seed 8 --strategy allgather --doc-order given,balanced --chunks 1 --iters 3 --trace-calls --json $R/ag_cp8_$i.json > $R/ag_cp8_$i.log 2>&1; echo "ag cp8 $i rc $?" >> $R/rc.txt
done
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
