#!/usr/bin/env bash
# Call A (27th session): packed windows without causal, backward as causal bands per document.
# The cuDNN cases against the FP64 reference (dense bands, packed cu_seqlens, VarlenRows), every
# loopback case with a window (ulysses, ring, hybrid, all-gather), a GPU sweep of packed
# non-causal draws.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 200 $B/test_gpu_cudnn --gtest_filter='*WithinTwiceThePlainError*' > $R/cudnn.log 2>&1; echo "cudnn rc $?" >> $R/rc.txt
timeout 220 $B/test_gpu_ulysses --gtest_filter='*window*:*two_sided*:*Window*:*right_only*' > $R/loopback_windows.log 2>&1; echo "loopback windows rc $?" >> $R/rc.txt
ULYSSES_SWEEP_MATCH="thd !causal training" ULYSSES_SWEEP_CASES=40 timeout 100 $B/test_gpu_sweep > $R/sweep.log 2>&1; echo "sweep rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
