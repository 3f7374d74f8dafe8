#!/usr/bin/env bash
# Call 5 (20th session): packed backward whose cuDNN workspace follows the graph's rows (head_dim
# not a multiple of 16). Before (the backend of 1875380 with the new tests): the workspace test and
# the head_dim 72 packed case; after: test_gpu_cudnn in full (every feature case now also asserts
# nothing grew beside workspace_bytes()), then the packed Ulysses cases.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 60 .carry/before/test_gpu_cudnn --gtest_filter='*PackedWorkspaceFollowsTheTokens*:*d72*' > $R/before.log 2>&1; echo "before rc $?" >> $R/rc.txt
timeout 300 $B/test_gpu_cudnn > $R/gpu_cudnn.log 2>&1; echo "cudnn rc $?" >> $R/rc.txt
timeout 70 $B/test_gpu_ulysses --gtest_filter='*varlen*:*thd*:*Packed*:*packed*' > $R/gpu_ulysses_packed.log 2>&1; echo "ulysses packed rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
