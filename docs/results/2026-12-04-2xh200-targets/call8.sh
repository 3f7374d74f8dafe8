#!/usr/bin/env bash
# Call 8 (42nd session): 2x H200 again, what call 7 could not show: saved heads with one chunk,
# where the bench measures the all-to-all (GB/s against NCCL's raw ncclAlltoAll of the same bytes)
# and splits the step into kernel and rest.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
t0=$(date +%s)
timeout 200 $B/ulysses-bench --seq 8192,32768,131072 --strategy ulysses --saved heads --chunks 1 --transport nccl,peer --iters 5 --json $R/heads.json > $R/heads.log 2>&1
echo "heads rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt
