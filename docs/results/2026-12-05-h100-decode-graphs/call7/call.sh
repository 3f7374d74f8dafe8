#!/usr/bin/env bash
# Fifty-ninth session, one GPU: the planning kernel as a warp per sequence: the graph-replay
# tests, its ncu duration, and eager against replay rows.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit,driver_version --format=csv > $OUT/gpu.txt 2>&1
timeout 60 .carry/bin/test_gpu_decode --gtest_filter='*Graphs*:*Auto*' > $OUT/tests.log 2>&1
echo "tests rc $?" | tee $OUT/rc.txt
grep -E "^\[  (PASSED|FAILED) \]|tests? from .* ran" $OUT/tests.log | tail -3
timeout 60 ncu --clock-control none --metrics gpu__time_duration.sum -k regex:"decode_slot|write_table" \
  --launch-skip 4 --launch-count 4 .carry/bin/ulysses-bench --decode --split-kernel built_in \
  --cuda-graph on --seed 7 --seq 1048576 --splits 16 --iters 3 > $OUT/ncu.log 2>&1
echo "ncu rc $?" | tee -a $OUT/rc.txt
grep -E "decode_slot|gpu__time" $OUT/ncu.log | head -8
for order in off,on on,off; do
  timeout 60 .carry/bin/ulysses-bench --decode --split-kernel built_in --cuda-graph $order --seed 7 \
    --seq 8192,131072 --splits 16 2>&1 | grep -v "^#" >> $OUT/bench.log
  timeout 60 .carry/bin/ulysses-bench --decode --split-kernel built_in --cuda-graph $order --seed 7 \
    --decode-tokens 4 --seq 131072 --splits 16 2>&1 | grep -v "^#" >> $OUT/bench.log
done
echo "bench done" >> $OUT/rc.txt
grep -v cache $OUT/bench.log
