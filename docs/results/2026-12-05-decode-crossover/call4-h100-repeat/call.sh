#!/usr/bin/env bash
# Sixtieth session, one H200: where cuDNN and the built-in kernel cross since the split-KV grid runs
# in slot order (call 1 had it on one H100: the built-in kernel ahead at every length), and whether
# 32 pieces instead of 16 move the long one-sequence rows; the auto tests on the bandwidth rule.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
B=.carry/bin
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $OUT/rc.txt; }
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit,driver_version,clocks.max.memory --format=csv > $OUT/gpu.txt 2>&1
timeout 120 $B/test_gpu_decode --gtest_filter='*Auto*:*BuiltInOnly*:*Aligned*' > $OUT/tests.log 2>&1; step tests $?
grep -E "^\[  (PASSED|FAILED) \]|tests? from .* ran|auto runs" $OUT/tests.log | tail -4
timeout 60 $B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --split-kernel auto,built_in,local --seq 262144,524288,1048576 > $OUT/auto.log 2>&1; step auto $?
for order in local,built_in built_in,local; do
  C="$B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --split-kernel $order"
  echo "== order $order" >> $OUT/cross.log
  timeout 90 $C --seq 131072,262144,393216,524288,1048576 >> $OUT/cross.log 2>&1; step t1_$order $?
  timeout 90 $C --seq 131072,262144,393216,524288 --decode-tokens 4 >> $OUT/cross.log 2>&1; step t4_$order $?
  timeout 90 $C --seq 16384,32768,49152,65536 --batch 8 >> $OUT/cross.log 2>&1; step b8_$order $?
  timeout 90 $C --seq 32768,65536,131072 --batch 8 --ragged >> $OUT/cross.log 2>&1; step b8r_$order $?
  timeout 90 $C --seq 131072,262144,524288,1048576 --head-dim 192 --head-dim-v 128 >> $OUT/cross.log 2>&1; step mla_$order $?
done
for order in local,built_in built_in,local; do
  echo "== splits 16,32 order $order" >> $OUT/splits.log
  timeout 90 $B/ulysses-bench --decode --min-split-rows 1024 --splits 16,32 --split-kernel $order \
    --seq 262144,524288,1048576 >> $OUT/splits.log 2>&1; step splits_$order $?
done
cat $OUT/rc.txt
