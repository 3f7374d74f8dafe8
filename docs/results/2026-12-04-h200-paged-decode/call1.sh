#!/usr/bin/env bash
# Call 1 (41st session): paged KV caches in the built-in split-KV kernel: decode tests (paged runs
# against unpaged bits), sanitizer, and paged vs unpaged decode steps.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > $R/gpu.txt 2>&1
timeout 200 $B/test_gpu_decode > $R/test_gpu_decode.log 2>&1; step test_gpu_decode $?
CS=/usr/local/cuda/bin/compute-sanitizer
timeout 120 $CS --tool memcheck $B/test_gpu_decode --gtest_filter='*one_token*built_in*:*ragged*built_in*' > $R/memcheck.log 2>&1; step memcheck $?
D="$B/ulysses-bench --decode --min-split-rows 1024 --splits 16"
timeout 120 $D --split-kernel built_in --page-size 0,1,16,64,256 --seq 8192,131072,1048576 --json $R/t1.json > $R/t1.log 2>&1; step t1 $?
timeout 60 $D --split-kernel built_in --page-size 0,16 --seq 131072 --decode-tokens 4 > $R/t4.log 2>&1; step t4 $?
timeout 60 $D --split-kernel built_in --page-size 0,16 --seq 131072 --batch 8 --ragged > $R/b8_ragged.log 2>&1; step b8 $?
timeout 60 $D --split-kernel built_in --page-size 0,16 --seq 131072 --head-dim 192 --head-dim-v 128 > $R/mla.log 2>&1; step mla $?
timeout 60 $D --seq 8192,131072 --page-size 0,16 > $R/default_kernels.log 2>&1; step default $?
