#!/usr/bin/env bash
# Fifty-ninth session, one GPU: decode steps as CUDA graph replays (DecodeConfig::device_layout),
# then the whole decode GPU suite on the same binary (the host planner now shared with the device).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit,driver_version --format=csv > $OUT/gpu.txt 2>&1
timeout 120 .carry/bin/test_gpu_decode --gtest_filter='*Graphs*' > $OUT/graphs.log 2>&1
echo "graphs rc $?" | tee $OUT/rc.txt
grep -E "^\[  (PASSED|FAILED|SKIPPED) \]|tests? from .* ran|Failure" -A3 $OUT/graphs.log | head -40
timeout 240 .carry/bin/test_gpu_decode --gtest_filter='-*Graphs*' > $OUT/decode.log 2>&1
echo "decode rc $?" | tee -a $OUT/rc.txt
grep -E "^\[  (PASSED|FAILED|SKIPPED) \]|tests? from .* ran" $OUT/decode.log | tail -5
