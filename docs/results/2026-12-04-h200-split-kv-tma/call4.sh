#!/usr/bin/env bash
# Call 4 (42nd session): the final tree (1607534): decode tests (auto up to 128k keys), auto's
# choice in the bench; experiment (bin_exp, not committed): 12 KiB rings per warp (one tile at
# D = 128: 69 KiB per CTA, so two CTAs fit an SM at <= 128 registers) with 16 and 32 pieces.
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
timeout 60 $B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --split-kernel auto,local,built_in --seq 8192,131072,163840 > $R/auto.log 2>&1; step auto $?
A="--decode --min-split-rows 1024 --splits 16,32 --split-kernel built_in --page-size 0,16 --seq 131072,1048576"
for k in 1 2; do
  for v in new exp; do
    bin=$B/ulysses-bench; [ $v = exp ] && bin=.carry/bin_exp/ulysses-bench
    timeout 90 $bin $A > $R/exp_${v}_$k.log 2>&1; step exp_${v}_$k $?
  done
done
for v in new exp; do
  bin=$B/ulysses-bench; [ $v = exp ] && bin=.carry/bin_exp/ulysses-bench
  timeout 60 $bin --decode --min-split-rows 1024 --splits 16,32 --split-kernel built_in --seq 131072 --decode-tokens 4 > $R/exp_t4_$v.log 2>&1; step exp_t4_$v $?
  timeout 60 $bin --decode --min-split-rows 1024 --splits 16,32 --split-kernel built_in --seq 131072,1048576 --head-dim 192 --head-dim-v 128 > $R/exp_mla_$v.log 2>&1; step exp_mla_$v $?
done
