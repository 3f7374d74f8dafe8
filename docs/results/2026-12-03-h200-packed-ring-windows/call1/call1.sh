#!/usr/bin/env bash
# Call 1 (23rd session): 73b0f1c (shared dtype_access.cuh for merge and the one-key backward) on a
# GPU: the one-key cases, every ring/hybrid/all-gather loopback case (merge kernels), the cuDNN
# suite, then sweep draws.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 90 $B/test_gpu_cudnn --gtest_filter='*one_token*:Cudnn.AccumulatedGradients*' > $R/cudnn_one_key.log 2>&1; echo "cudnn one key rc $?" >> $R/rc.txt
timeout 200 $B/test_gpu_ulysses --gtest_filter='*DeviceLoopbackRing*:*edge_one_key*:*one_token_chunks*' > $R/ulysses_ring_family.log 2>&1; echo "ring family rc $?" >> $R/rc.txt
timeout 90 $B/test_gpu_layout > $R/gpu_layout.log 2>&1; echo "layout rc $?" >> $R/rc.txt
ULYSSES_SWEEP_CASES=30 timeout 120 $B/test_gpu_sweep > $R/gpu_sweep.log 2>&1; echo "sweep rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
