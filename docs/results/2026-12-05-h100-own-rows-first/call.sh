#!/usr/bin/env bash
# Fifty-eighth session, one GPU: what splitting cp = 2's kernel call by a rank's own rows costs in
# cuDNN (docs/results/2026-12-05-h100-own-rows-first/ownfirst.cc), 8k / 32k / 128k, twice at 8k
# and 32k (the order of the lengths reversed in the second pass).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit,driver_version --format=csv > $OUT/gpu.txt 2>&1
cat $OUT/gpu.txt
{
  for a in "8192 10" "32768 6" "131072 2" "32768 6" "8192 10"; do
    timeout 120 .carry/adhoc/ownfirst $a; echo "rc $?"
  done
} 2>&1 | tee $OUT/ownfirst.log
