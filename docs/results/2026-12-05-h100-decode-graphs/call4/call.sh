#!/usr/bin/env bash
# Fifty-ninth session, one GPU: the split-KV kernel's blocks in slot order (b) against the
# previous grid (a), alternated, eager vs CUDA graph replays; the decode suite on b; ncu's
# kernel durations on a.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit,driver_version --format=csv > $OUT/gpu.txt 2>&1
timeout 200 .carry/bin/test_gpu_decode > $OUT/decode_tests.log 2>&1
echo "decode tests rc $?" | tee -a $OUT/rc.txt
grep -E "^\[  (PASSED|FAILED) \]|tests? from .* ran" $OUT/decode_tests.log | tail -4
for round in 1 2; do
  for bin in a b; do
    for args in "--seq 1048576 --splits 4,16,32" "--decode-tokens 4 --seq 131072 --splits 16,32" \
                "--batch 8 --ragged --seq 131072 --splits 16"; do
      echo "## round $round bench $bin: $args" >> $OUT/ab.log
      timeout 60 .carry/bin/ulysses-bench-$bin --decode --split-kernel built_in --cuda-graph off,on \
        --seed 7 $args 2>&1 | grep -v "^#" >> $OUT/ab.log
      echo "bench $bin round $round rc $?" >> $OUT/rc.txt
    done
  done
done
grep -c PASS $OUT/ab.log; grep -c FAIL $OUT/ab.log
for mode in off on; do
  echo "## ncu, bench a, --cuda-graph $mode" >> $OUT/ncu.log
  timeout 90 ncu --clock-control none --metrics gpu__time_duration.sum \
    -k regex:"split_kv|decode_slot|write_table" --launch-skip 6 --launch-count 6 \
    .carry/bin/ulysses-bench-a --decode --split-kernel built_in --cuda-graph $mode --seed 7 \
    --seq 1048576 --splits 16 --iters 3 >> $OUT/ncu.log 2>&1
  echo "ncu $mode rc $?" >> $OUT/rc.txt
done
grep -E "split_kv|decode_slot|write_table|gpu__time_duration" $OUT/ncu.log | head -40
