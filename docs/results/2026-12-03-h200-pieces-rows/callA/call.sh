#!/usr/bin/env bash
# Call A (28th session): 5d92dbd (one causal_bands(problem, seqs) overload) on a GPU, then a broad
# random-configuration sweep through cuDNN on the device loopback, hunting bugs.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 150 $B/test_gpu_cudnn --gtest_filter='*WithinTwiceThePlainError*' > $R/cudnn.log 2>&1; echo "cudnn rc $?" >> $R/rc.txt
timeout 60 $B/test_gpu_ulysses --gtest_filter='*varlen*two_sided*:*varlen*right_only*' > $R/loopback_packed_windows.log 2>&1; echo "loopback packed windows rc $?" >> $R/rc.txt
ULYSSES_SWEEP_CASES=2000 timeout 330 $B/test_gpu_sweep > $R/sweep.log 2>&1; echo "sweep rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
