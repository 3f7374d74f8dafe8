#!/usr/bin/env bash
# Call 2 (41st session): page lookups one tile ahead (and by multiply-high) in the split-KV kernel:
# decode tests, sanitizers, paged vs unpaged A/B against the previous kernel (bin_base).
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
timeout 120 $CS --tool memcheck $B/test_gpu_decode --gtest_filter='*one_token*built_in*:*ragged*built_in*:*short_pieces_built_in*' > $R/memcheck.log 2>&1; step memcheck $?
timeout 60 $CS --tool racecheck $B/test_gpu_decode --gtest_filter='*p1_one_token_gqa_built_in*' > $R/racecheck.log 2>&1; step racecheck $?
A="--decode --min-split-rows 1024 --splits 16 --split-kernel built_in --page-size 0,1,16,64,256 --seq 131072,1048576"
for k in 1 2; do
  for v in base new; do
    bin=$B/ulysses-bench; [ $v = base ] && bin=.carry/bin_base/ulysses-bench
    timeout 90 $bin $A --json $R/ab_${v}_$k.json > $R/ab_${v}_$k.log 2>&1; step ab_${v}_$k $?
  done
done
D="$B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --split-kernel built_in --page-size 0,16"
timeout 60 $D --seq 131072 --decode-tokens 4 > $R/t4.log 2>&1; step t4 $?
timeout 60 $D --seq 131072 --batch 8 --ragged > $R/b8_ragged.log 2>&1; step b8 $?
timeout 60 $D --seq 131072 --head-dim 192 --head-dim-v 128 > $R/mla.log 2>&1; step mla $?
timeout 60 $D --seq 8192,32768 > $R/short.log 2>&1; step short $?
