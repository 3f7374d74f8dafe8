#!/usr/bin/env bash
# Call 5 (42nd session): one-stage rings for tensor copies into CTAs of 8 query rows (12 KiB per
# warp; call 4's experiment measured 4-8% faster), committed form: decode tests, sanitizers, A/B
# against 1607534 (bin_base: two stages everywhere), other shapes, ncu at 1M.
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
timeout 100 $CS --tool memcheck $B/test_gpu_decode --gtest_filter='*one_token_gqa_built_in*:*mla_one_token*built_in*:*d80*built_in*:*short_pieces_built_in*' > $R/memcheck.log 2>&1; step memcheck $?
timeout 60 $CS --tool racecheck $B/test_gpu_decode --gtest_filter='*p1_one_token_gqa_built_in*' > $R/racecheck.log 2>&1; step racecheck $?
A="--decode --min-split-rows 1024 --splits 16 --split-kernel built_in"
for k in 1 2; do
  for v in base new; do
    bin=$B/ulysses-bench; [ $v = base ] && bin=.carry/bin_base/ulysses-bench
    timeout 60 $bin $A --page-size 0,1,16 --seq 8192,131072,1048576 --json $R/ab_${v}_$k.json > $R/ab_${v}_$k.log 2>&1; step ab_${v}_$k $?
    timeout 60 $bin $A --page-size 0,16 --seq 131072,1048576 --head-dim 192 --head-dim-v 128 > $R/mla_${v}_$k.log 2>&1; step mla_${v}_$k $?
    timeout 60 $bin $A --seq 131072,1048576 --head-dim 64 > $R/d64_${v}_$k.log 2>&1; step d64_${v}_$k $?
    timeout 60 $bin $A --seq 131072,1048576 --heads 64 > $R/gqa8_${v}_$k.log 2>&1; step gqa8_${v}_$k $?
    timeout 60 $bin $A --seq 131072 --batch 8 --ragged > $R/b8_${v}_$k.log 2>&1; step b8_${v}_$k $?
  done
done
timeout 60 $B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --split-kernel auto,local,built_in --seq 8192,131072,163840 > $R/auto.log 2>&1; step auto $?
timeout 90 /usr/local/cuda/bin/ncu -k regex:split_kv -c 1 --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy $B/ulysses-bench $A --seq 1048576 > $R/ncu_p0.log 2>&1; step ncu_p0 $?
