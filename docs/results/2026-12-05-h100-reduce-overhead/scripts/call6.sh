#!/usr/bin/env bash
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
export PYTHONPATH="$PWD/python" ULYSSES_LIBRARY="$PWD/.carry/bin/libulysses_c.so"
{ lscpu | grep -E "Model name|MHz|^CPU\(s\)"; nvidia-smi --query-gpu=name --format=csv,noheader; } > "$OUT/env.txt"
timeout 200 /opt/torch/.venv/bin/python3 .carry/adhoc/host_micro.py > "$OUT/host_micro.log" 2>&1
echo "rc $?" >> "$OUT/host_micro.log"
