#!/usr/bin/env bash
# Call 2 (20th session): the one-rank misaligned-views test releasing the plan's and the kernel's
# buffers together (call 1: the plan's alone gave the device nothing back in the packed case, its
# pool blocks shared with the kernel's staging).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
for i in 1 2 3; do
timeout 60 $B/test_gpu_ulysses --gtest_filter='GpuSingleRank.*' > $R/gpu_ulysses_single_$i.log 2>&1; echo "ulysses single $i rc $?" >> $R/rc.txt
done
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
