#!/usr/bin/env bash
# Call 8 (40th session): split_kv transposed for blocks of <= 8 query rows: checks and the decode shapes.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; }
timeout 160 $B/test_gpu_decode > $R/test_gpu_decode.log 2>&1; step test_gpu_decode $?
CS=/usr/local/cuda/bin/compute-sanitizer
timeout 90 $CS --tool memcheck $B/test_gpu_decode --gtest_filter='*built_in*:*Auto*' > $R/memcheck.log 2>&1; step memcheck $?
timeout 40 $CS --tool racecheck $B/test_gpu_decode --gtest_filter='*p1_one_token_gqa_built_in*' > $R/racecheck.log 2>&1; step racecheck $?
D="$B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --split-kernel auto,local,built_in"
timeout 70 $D --seq 8192,32768,131072,1048576 --json $R/t1.json > $R/t1.log 2>&1; step t1 $?
D="$B/ulysses-bench --decode --min-split-rows 1024 --splits 16"
timeout 30 $D --seq 131072 --decode-tokens 4 > $R/t4.log 2>&1; step t4 $?
timeout 30 $D --seq 131072 --head-dim 192 --head-dim-v 128 > $R/mla.log 2>&1; step mla $?
timeout 30 $D --seq 131072 --heads 64 --kv-heads 8 > $R/gqa8.log 2>&1; step gqa8 $?
timeout 30 $D --seq 131072 --head-dim 64 > $R/d64.log 2>&1; step d64 $?
timeout 30 $D --seq 131072 --head-dim 256 > $R/d256.log 2>&1; step d256 $?
timeout 30 $D --seq 131072 --batch 8 --ragged > $R/b8_ragged.log 2>&1; step b8 $?
