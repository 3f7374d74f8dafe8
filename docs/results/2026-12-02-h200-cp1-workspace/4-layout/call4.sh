#!/usr/bin/env bash
# Call 4 (18th session, at the dSinks-layout refactor e831218 + test braces): Ulysses GPU cases
# whose workspace offsets moved (dSinks first): sinks at cp > 1 and the one-rank cases.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 100 $B/test_gpu_ulysses --gtest_filter='*p2*sinks*:GpuSingleRank.*:*p2_gqa_causal*' > $R/gpu_ulysses_sinks.log 2>&1; echo "ulysses sinks rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
