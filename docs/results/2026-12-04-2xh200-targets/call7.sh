#!/usr/bin/env bash
# Call 7 (42nd session): nvidia-h200-x2 lent for the first time in many sessions; little device
# time left (~490 s), so issue 3's bench rows only: ulysses at 8k/32k/128k, cp = 1 beside cp = 2,
# saved lse, chunks 1 and 4, NCCL and copy-engine transports.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version --format=csv > $R/gpu.txt 2>&1
nvidia-smi topo -m > $R/topo.txt 2>&1
timeout 250 $B/ulysses-bench --seq 8192,32768,131072 --strategy ulysses --saved lse --chunks 1,4 --in-flight 1 --transport nccl,peer --iters 5 --json $R/targets.json > $R/targets.log 2>&1
echo "targets rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt
