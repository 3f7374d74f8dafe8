#!/usr/bin/env bash
# Call 3 (41st session): what paged steps pay for: pages in order vs shuffled in the pool (the
# table read the same way), larger pages; host time of the table check (vectorised).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; }
A="$B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --split-kernel built_in --page-size 0,1,16,64,256,1024 --seq 131072,1048576"
for k in 1 2; do
  for order in shuffled in_order; do
    timeout 90 $A --page-order $order --json $R/${order}_$k.json > $R/${order}_$k.log 2>&1; step ${order}_$k $?
  done
done
timeout 60 $B/test_gpu_decode --gtest_filter='*built_in*' > $R/test_gpu_decode_built_in.log 2>&1; step test_built_in $?
