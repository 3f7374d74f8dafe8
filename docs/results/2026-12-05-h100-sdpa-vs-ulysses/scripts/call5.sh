#!/usr/bin/env bash
# After 3257d6a (cp = 1 saves as lse) and 4cdb808 (saved_bytes op argument): the 8k step's GPU
# operations against SDPA, the memory held, then the package's PyTorch tests on the GPU.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
export PYTHONPATH=$PWD/python ULYSSES_LIBRARY=$PWD/.carry/bin/libulysses_c.so
py=/opt/torch/.venv/bin/python3
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv > $OUT/gpu.txt 2>&1
timeout 50 $py .carry/adhoc/sdpa_vs_ulysses.py 8192 > $OUT/sdpa_vs_ulysses.log 2>&1
echo "rc $?" >> $OUT/sdpa_vs_ulysses.log
grep -v "Warn\|warn\|^ \{6,\}" $OUT/sdpa_vs_ulysses.log
timeout 40 $py .carry/adhoc/held.py 32768 > $OUT/held.log 2>&1; echo "rc $?" >> $OUT/held.log
grep -v "Warn\|warn" $OUT/held.log | tail -3
(cd tests/python && timeout 170 $py -m unittest test_torch_gpu test_torch_cpu test_c_api > $OUT/python_tests.log 2>&1; echo "rc $?" >> $OUT/python_tests.log)
tail -4 $OUT/python_tests.log; grep -E "^(FAIL|ERROR)" $OUT/python_tests.log | head
