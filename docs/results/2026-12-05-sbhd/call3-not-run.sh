#!/usr/bin/env bash
# Sixty-first session: the Python package's CPU torch tests on the GPU machine's PyTorch (2.11),
# the sbhd test first (call 2 ran out of time after test_torch_gpu's 15 and 4 of these).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
cd tests/python
export PYTHONPATH=$PWD/../../python:. ULYSSES_LIBRARY=$PWD/../../.carry/bin/libulysses_c.so
/opt/torch/.venv/bin/python3 -c "import torch; print('torch', torch.__version__)" > $OUT/python.log 2>&1
timeout 100 /opt/torch/.venv/bin/python3 -m unittest -v \
  test_torch_cpu.TorchModuleOnLoopbackRanks.test_sequence_major_tensors_keep_their_layout_and_the_bits \
  >> $OUT/python.log 2>&1; echo "sbhd rc $?" >> $OUT/python.log
timeout 200 /opt/torch/.venv/bin/python3 -m unittest -v test_torch_cpu >> $OUT/python.log 2>&1
echo "cpu rc $?" >> $OUT/python.log
grep -E "^test_|rc |^Ran|^OK|FAILED|torch " $OUT/python.log
