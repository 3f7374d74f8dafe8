#!/usr/bin/env bash
# Sixty-first session, one GPU: sequence-major (sbhd) activations. The GPU tests' Sbhd cases, the
# GPU sweep (a third of its dense draws sbhd), the Python torch tests (torch.py now allocates O
# and the gradients in the inputs' order), and the probe timing sbhd against bshd.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
B=.carry/bin
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $OUT/rc.txt; }
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit,driver_version,clocks.max.memory --format=csv > $OUT/gpu.txt 2>&1
timeout 100 $B/test_gpu_ulysses --gtest_filter='Sbhd/*' > $OUT/ulysses.log 2>&1; step sbhd_tests $?
grep -E "^\[ +(OK|FAILED|PASSED) " $OUT/ulysses.log | tail -12
( cd tests/python && PYTHONPATH=$PWD/../../python:. ULYSSES_LIBRARY=$PWD/../../$B/libulysses_c.so \
  timeout 150 /opt/torch/.venv/bin/python3 -m unittest test_torch_gpu test_torch_cpu ) > $OUT/python.log 2>&1; step python $?
tail -3 $OUT/python.log
for a in "1 4 8192 4" "2 4 8192 4" "1 2 32768 3"; do
  timeout 60 $B/sbhd $a >> $OUT/probe.log 2>&1; step "probe_$a" $?
done
cat $OUT/probe.log
ULYSSES_SWEEP_CASES=12 timeout 80 $B/test_gpu_sweep > $OUT/sweep.log 2>&1; step sweep $?
grep -c "sbhd" $OUT/sweep.log; grep -E "^(ok|FAIL)" $OUT/sweep.log | tail -3; tail -3 $OUT/sweep.log
cat $OUT/rc.txt
