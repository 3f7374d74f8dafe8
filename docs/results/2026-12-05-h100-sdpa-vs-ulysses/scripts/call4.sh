#!/usr/bin/env bash
# SDPA against ulysses at cp = 1 on one GPU, where the 8k gap lies (host or GPU).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
export PYTHONPATH=$PWD/python ULYSSES_LIBRARY=$PWD/.carry/bin/libulysses_c.so
py=/opt/torch/.venv/bin/python3
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv > $OUT/gpu.txt 2>&1
timeout 200 $py .carry/adhoc/sdpa_vs_ulysses.py 8192,32768 > $OUT/sdpa_vs_ulysses.log 2>&1
echo "rc $?" >> $OUT/sdpa_vs_ulysses.log
grep -v "Warning\|warn" $OUT/sdpa_vs_ulysses.log | head -150
echo "== held memory, this tree's package, then main's before the change"
timeout 60 $py .carry/adhoc/held.py 32768 2>&1 | grep -v "Warn\|warn" | tail -4
PYTHONPATH=$PWD/.carry/adhoc/oldpkg/python timeout 60 $py .carry/adhoc/held.py 32768 2>&1 | grep -v "Warn\|warn" | tail -4
echo "== the package's PyTorch tests on the GPU (this tree)"
(cd tests/python && timeout 240 $py -m unittest test_torch_gpu test_torch_cpu test_c_api > $OUT/python_tests.log 2>&1; echo "rc $?" >> $OUT/python_tests.log)
tail -5 $OUT/python_tests.log; grep -E "^(FAIL|ERROR)" $OUT/python_tests.log | head
