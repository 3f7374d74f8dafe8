#!/usr/bin/env bash
# Call 6 (41st session): the final kernel (templated on paging, page rows looked up where copied):
# decode tests, memcheck, Python GPU tests (C API version 6), paged vs unpaged rows.
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
timeout 100 $CS --tool memcheck $B/test_gpu_decode --gtest_filter='*one_token*built_in*:*ragged*built_in*' > $R/memcheck.log 2>&1; step memcheck $?
timeout 120 env -C tests/python PYTHONPATH=$PWD/python ULYSSES_LIBRARY=$PWD/$B/libulysses_c.so /opt/torch/.venv/bin/python3 -m unittest -v test_torch_gpu test_c_api test_decode > $R/python.log 2>&1; step python $?
A="$B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --split-kernel built_in --page-size 0,1,16,64,256 --seq 131072,1048576"
for k in 1 2; do timeout 90 $A --json $R/pages_$k.json > $R/pages_$k.log 2>&1; step pages_$k $?; done
D="$B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --split-kernel built_in --page-size 0,16"
timeout 60 $D --seq 131072 --decode-tokens 4 > $R/t4.log 2>&1; step t4 $?
timeout 60 $D --seq 131072 --batch 8 --ragged > $R/b8_ragged.log 2>&1; step b8 $?
timeout 60 $D --seq 131072 --head-dim 192 --head-dim-v 128 > $R/mla.log 2>&1; step mla $?
timeout 60 $B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --seq 8192,131072 --page-size 0,16 > $R/default_kernels.log 2>&1; step default $?
