#!/usr/bin/env bash
# Call 2 (42nd session): tiles aligned to each sequence's own rows (seq_pitch), so paged and
# unpaged steps and far-apart caches give the same bits; where unpaged tensor copies lose to
# paged ones (page placement: shuffled vs in order), D = 128 and MLA 192 / 128.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; }
timeout 200 $B/test_gpu_decode > $R/test_gpu_decode.log 2>&1; step test_gpu_decode $?
CS=/usr/local/cuda/bin/compute-sanitizer
timeout 100 $CS --tool memcheck $B/test_gpu_decode --gtest_filter='*batch2_built_in*:*ragged_batch4*built_in*:*mla_one_token*built_in*' > $R/memcheck.log 2>&1; step memcheck $?
for k in 1 2; do
  for o in shuffled in_order; do
    timeout 60 $B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --split-kernel built_in --page-size 0,16 --page-order $o --seq 131072,1048576 --json $R/order_${o}_$k.json > $R/order_${o}_$k.log 2>&1; step order_${o}_$k $?
    timeout 60 $B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --split-kernel built_in --page-size 0,16 --page-order $o --seq 131072,1048576 --head-dim 192 --head-dim-v 128 > $R/order_mla_${o}_$k.log 2>&1; step order_mla_${o}_$k $?
  done
done
NCU=/usr/local/cuda/bin/ncu
for p in 0 16; do
  timeout 90 $NCU -k regex:split_kv -c 1 --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats $B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --split-kernel built_in --seq 1048576 --page-size $p > $R/ncu_p$p.log 2>&1; step ncu_p$p $?
done
