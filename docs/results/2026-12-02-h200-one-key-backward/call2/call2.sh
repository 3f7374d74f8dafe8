#!/usr/bin/env bash
# Call 2 (22nd session): the cuDNN suite in full, the rest of test_gpu_ulysses, more sweep draws.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 300 $B/test_gpu_cudnn > $R/gpu_cudnn.log 2>&1; echo "cudnn rc $?" >> $R/rc.txt
timeout 150 $B/test_gpu_ulysses --gtest_filter='-*DeviceLoopbackRing*' > $R/gpu_ulysses_rest.log 2>&1; echo "ulysses rest rc $?" >> $R/rc.txt
ULYSSES_SWEEP_CASES=40 timeout 115 $B/test_gpu_sweep > $R/gpu_sweep.log 2>&1; echo "sweep rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
