#!/usr/bin/env bash
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
export PYTHONPATH="$PWD/python" ULYSSES_LIBRARY="$PWD/.carry/bin/libulysses_c.so"
git diff --stat > "$OUT/env.txt" 2>&1; nvidia-smi --query-gpu=name --format=csv,noheader >> "$OUT/env.txt"
(cd tests/python && timeout 300 /opt/torch/.venv/bin/python3 -m unittest -v test_torch_gpu) > "$OUT/python_torch.log" 2>&1
echo "rc $?" >> "$OUT/python_torch.log"
