#!/usr/bin/env bash
# Fifty-ninth session, one GPU: the Python package's decode on the GPU, the device-layout step
# captured with torch.cuda.graph (and the two-rank SDPA case beside it).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
export PYTHONPATH=$PWD/python ULYSSES_LIBRARY=$PWD/.carry/bin/libulysses_c.so
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit,driver_version --format=csv > $OUT/gpu.txt 2>&1
cd tests/python
timeout 150 /opt/torch/.venv/bin/python3 -m unittest -v test_torch_gpu.DecodeOnDeviceLoopback > $OUT/python_decode.log 2>&1
echo "python decode rc $?" | tee $OUT/rc.txt
tail -25 $OUT/python_decode.log
