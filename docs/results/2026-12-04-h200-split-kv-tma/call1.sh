#!/usr/bin/env bash
# Call 1 (42nd session): the split-KV kernel's tiles as TMA tensor copies (one lane, 16 x 64
# swizzled boxes) instead of 32 per-row bulk copies: decode tests (new widths 80 and 32),
# sanitizers, A/B against the previous kernel (bin_base), ncu on both at 1M keys.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > $R/gpu.txt 2>&1
timeout 200 $B/test_gpu_decode > $R/test_gpu_decode.log 2>&1; step test_gpu_decode $?
CS=/usr/local/cuda/bin/compute-sanitizer
timeout 110 $CS --tool memcheck $B/test_gpu_decode --gtest_filter='*one_token_gqa_built_in*:*ragged_batch4*built_in*:*short_pieces_built_in*:*d80*built_in*:*d32*built_in*:*d256_gqa*built_in*' > $R/memcheck.log 2>&1; step memcheck $?
timeout 60 $CS --tool racecheck $B/test_gpu_decode --gtest_filter='*p1_one_token_gqa_built_in*' > $R/racecheck.log 2>&1; step racecheck $?
A="--decode --min-split-rows 1024 --splits 16 --split-kernel local,built_in --page-size 0,1,16,64 --seq 8192,131072,1048576"
for k in 1 2; do
  for v in base new; do
    bin=$B/ulysses-bench; [ $v = base ] && bin=.carry/bin_base/ulysses-bench
    timeout 90 $bin $A --json $R/ab_${v}_$k.json > $R/ab_${v}_$k.log 2>&1; step ab_${v}_$k $?
  done
done
for v in base new; do
  bin=$B/ulysses-bench; [ $v = base ] && bin=.carry/bin_base/ulysses-bench
  D="$bin --decode --min-split-rows 1024 --splits 16 --split-kernel built_in --page-size 0,16"
  timeout 60 $D --seq 131072 --decode-tokens 4 > $R/t4_$v.log 2>&1; step t4_$v $?
  timeout 60 $D --seq 131072 --batch 8 --ragged > $R/b8_ragged_$v.log 2>&1; step b8_$v $?
  timeout 60 $D --seq 131072,1048576 --head-dim 192 --head-dim-v 128 > $R/mla_$v.log 2>&1; step mla_$v $?
done
NCU=/usr/local/cuda/bin/ncu
for v in base new; do
  bin=$B/ulysses-bench; [ $v = base ] && bin=.carry/bin_base/ulysses-bench
  timeout 90 $NCU -k regex:split_kv -c 1 --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats $bin --decode --min-split-rows 1024 --splits 16 --split-kernel built_in --seq 1048576 --page-size 0 > $R/ncu_$v.log 2>&1; step ncu_$v $?
done
