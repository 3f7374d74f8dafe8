#!/usr/bin/env bash
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
export PYTHONPATH="$PWD/python" ULYSSES_LIBRARY="$PWD/.carry/bin/libulysses_c.so"
nvidia-smi --query-gpu=name,clocks.sm,power.draw --format=csv > "$OUT/env.txt"
for seq in 8192 32768; do
  timeout 120 /opt/torch/.venv/bin/python3 .carry/adhoc/host_timeline.py $seq > "$OUT/host_$seq.log" 2>&1
  echo "rc $?" >> "$OUT/host_$seq.log"
done
