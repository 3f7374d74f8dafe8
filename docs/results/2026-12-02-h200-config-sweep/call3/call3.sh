#!/usr/bin/env bash
# Call 3 (21st session): the GPU suites the three fixes touch, in full (ulysses incl. ring, hybrid,
# all-gather and packed cases; layout), then the GPU sweep at the committed tree (mistakes are
# host-only) with as many draws as fit.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 40 $B/test_gpu_layout > $R/gpu_layout.log 2>&1; echo "layout rc $?" >> $R/rc.txt
timeout 240 $B/test_gpu_ulysses > $R/gpu_ulysses.log 2>&1; echo "ulysses rc $?" >> $R/rc.txt
ULYSSES_SWEEP_CASES=200 timeout 250 $B/test_gpu_sweep > $R/gpu_sweep.log 2>&1; echo "sweep rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
