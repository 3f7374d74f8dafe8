#!/usr/bin/env bash
# Call 5 (40th session): A/B of the Hopper ring budget per warp, alternated: bin/ = 28 KiB (3 stages at D=128), r2/ = 21 KiB (2 stages).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; }
for rep in 1 2 3; do
  for v in bin r2; do
    D=".carry/$v/ulysses-bench --decode --min-split-rows 1024 --splits 16 --split-kernel built_in"
    timeout 40 $D --seq 32768,131072,1048576 > $R/${v}_${rep}.log 2>&1; step ${v}_$rep $?
    timeout 30 $D --seq 131072 --head-dim 192 --head-dim-v 128 > $R/${v}_mla_${rep}.log 2>&1; step ${v}_mla_$rep $?
  done
done
