#!/usr/bin/env bash
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
R=$OUT/r; mkdir -p $R
export PYTHONPATH="$PWD/python" ULYSSES_LIBRARY="$PWD/.carry/bin/libulysses_c.so"
(cd tests/python && timeout 200 /opt/torch/.venv/bin/python3 -m unittest -v test_torch_gpu test_torch_cpu test_c_api) > $R/python_torch.log 2>&1
echo "python_torch rc $?" | tee $R/rc.txt; tail -3 $R/python_torch.log
