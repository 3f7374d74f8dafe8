#!/usr/bin/env bash
# Call 7 (20th session): the workspace test with its bound on training problems only (call 6:
# forward-only packed problems keep staging and metadata, 88 MB against dense's 3).
set -uo pipefail
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
R=$OUT/r; mkdir -p $R
timeout 40 .carry/bin/test_gpu_cudnn --gtest_filter='*PackedWorkspace*' > $R/gpu_cudnn.log 2>&1; echo "cudnn rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
