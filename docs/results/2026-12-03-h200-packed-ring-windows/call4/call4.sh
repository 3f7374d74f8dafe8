#!/usr/bin/env bash
# Call 4 (23rd session): more GPU sweep draws of only ring/hybrid plans on packed documents under a
# window, through cuDNN on the device loopback (the last of the session's device time).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
ULYSSES_SWEEP_MATCH='thd !window=(-1,-1) !ulysses !allgather' ULYSSES_SWEEP_CASES=60 timeout 170 $B/test_gpu_sweep > $R/gpu_sweep_packed_windows.log 2>&1; echo "sweep rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
