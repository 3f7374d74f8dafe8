#!/usr/bin/env bash
# Fifty-eighth session, one GPU: the Python package's suites in full on main's final code
# (54b697b), the wrapped-communicator C++ cases, and the torchrun example's one-rank runs.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
export PYTHONPATH=$PWD/python ULYSSES_LIBRARY=$PWD/.carry/bin/libulysses_c.so
py=/opt/torch/.venv/bin/python3
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit,driver_version --format=csv > $OUT/gpu.txt 2>&1
cat $OUT/gpu.txt
(cd tests/python && timeout 300 $py -m unittest -v test_torch_gpu test_torch_cpu test_c_api > $OUT/python_tests.log 2>&1; echo "rc $?" >> $OUT/python_tests.log)
tail -4 $OUT/python_tests.log; grep -E "^(FAIL|ERROR)" $OUT/python_tests.log | head
timeout 60 .carry/bin/test_multigpu --gtest_filter='Nccl.Wrapped*:Nccl.Uniform*' > $OUT/multigpu_wrapped.log 2>&1
echo "rc $?"; grep -E "PASSED|FAILED|SKIPPED" $OUT/multigpu_wrapped.log | tail -5
for args in "--seq 8192" "--seq 8192 --comm ulysses" "--seq 32768 --compile" "--seq 8192 --cuda-graph"; do
  n=torchrun${args//[- ]/_}
  timeout 60 $py -m torch.distributed.run --standalone --nproc_per_node=1 python/examples/torchrun_attention.py $args > $OUT/$n.log 2>&1
  echo "$args rc $?"; grep -E "max \||PASS|FAIL" $OUT/$n.log
done > $OUT/torchrun.log 2>&1
cat $OUT/torchrun.log
