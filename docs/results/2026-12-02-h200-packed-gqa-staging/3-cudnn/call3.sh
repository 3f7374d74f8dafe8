#!/usr/bin/env bash
# Call 3 (19th session): the canonical packed probe back at padded = S (call 2's power of two ran
# RaggedOffsetsPast2To31Elements out of memory): test_gpu_cudnn in full, then the packed Ulysses tests.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 300 $B/test_gpu_cudnn > $R/gpu_cudnn.log 2>&1; echo "cudnn rc $?" >> $R/rc.txt
timeout 80 $B/test_gpu_ulysses --gtest_filter='*varlen*:*thd*:*Packed*:*packed*' > $R/gpu_ulysses_packed.log 2>&1; echo "ulysses packed rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
