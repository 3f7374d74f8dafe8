#!/usr/bin/env bash
# Call 4 (21st session): after the 1 x 1 rule: the all-gather GPU cases, then the GPU sweep.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 60 $B/test_gpu_ulysses --gtest_filter='AllGather/*' > $R/gpu_ulysses_allgather.log 2>&1; echo "ulysses allgather rc $?" >> $R/rc.txt
ULYSSES_SWEEP_SEED=7744930206088670500 timeout 40 $B/test_gpu_sweep > $R/gpu_sweep_replay.log 2>&1; echo "replay rc $?" >> $R/rc.txt
ULYSSES_SWEEP_CASES=200 timeout 330 $B/test_gpu_sweep > $R/gpu_sweep.log 2>&1; echo "sweep rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
