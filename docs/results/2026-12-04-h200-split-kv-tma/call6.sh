#!/usr/bin/env bash
# Call 6 (42nd session): the final kernel (paged steps keep two-tile rings): decode tests,
# memcheck, Python GPU tests, paged vs unpaged against 1607534 (bin_base), and where cuDNN and
# the built-in kernel cross now (auto's threshold).
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
timeout 80 $CS --tool memcheck $B/test_gpu_decode --gtest_filter='*one_token_gqa_built_in*:*mla_one_token*built_in*:*ragged_batch4*built_in*' > $R/memcheck.log 2>&1; step memcheck $?
timeout 120 env -C tests/python PYTHONPATH=$PWD/python ULYSSES_LIBRARY=$PWD/$B/libulysses_c.so /opt/torch/.venv/bin/python3 -m unittest -v test_torch_gpu test_c_api test_decode > $R/python.log 2>&1; step python $?
A="--decode --min-split-rows 1024 --splits 16 --split-kernel built_in --page-size 0,16"
for k in 1 2; do
  for v in base new; do
    bin=$B/ulysses-bench; [ $v = base ] && bin=.carry/bin_base/ulysses-bench
    timeout 60 $bin $A --seq 131072,1048576 --json $R/ab_${v}_$k.json > $R/ab_${v}_$k.log 2>&1; step ab_${v}_$k $?
    timeout 60 $bin $A --seq 131072,1048576 --head-dim 192 --head-dim-v 128 > $R/mla_${v}_$k.log 2>&1; step mla_${v}_$k $?
  done
done
C="$B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --split-kernel local,built_in"
timeout 90 $C --seq 131072,196608,262144,524288,1048576 --json $R/cross_t1.json > $R/cross_t1.log 2>&1; step cross_t1 $?
timeout 90 $C --seq 131072,262144,524288 --decode-tokens 4 > $R/cross_t4.log 2>&1; step cross_t4 $?
timeout 90 $C --seq 16384,32768,65536 --batch 8 > $R/cross_b8.log 2>&1; step cross_b8 $?
timeout 90 $C --seq 131072,262144,524288,1048576 --head-dim 192 --head-dim-v 128 > $R/cross_mla.log 2>&1; step cross_mla $?
