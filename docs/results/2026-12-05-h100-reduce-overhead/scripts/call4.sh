#!/usr/bin/env bash
# Eager / graph replay / torch.compile / reduce-overhead, one step profiled each (cp = 1, 8k).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
export PYTHONPATH="$PWD/python" ULYSSES_LIBRARY="$PWD/.carry/bin/libulysses_c.so"
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv > "$OUT/env.txt"
timeout 300 /opt/torch/.venv/bin/python3 .carry/adhoc/step_profile.py 8192 > "$OUT/profile_8192.log" 2>&1
echo "rc $?" >> "$OUT/profile_8192.log"; rm -f "$OUT"/trace_*
