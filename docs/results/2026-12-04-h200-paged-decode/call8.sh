#!/usr/bin/env bash
# Call 8 (41st session): where the paged kernel stalls: ncu source counters (SASS with warp stall
# samples) at 1M keys, unpaged and 16-row pages.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; }
NCU=/usr/local/cuda/bin/ncu
for p in 0 16; do
  timeout 50 $NCU -k regex:"split_kv" -c 1 --section SourceCounters --section WarpStateStats -o $R/prof_p$p $B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --seq 1048576 --split-kernel built_in --iters 1 --page-size $p > $R/ncu_p$p.log 2>&1; step ncu_p$p $?
  timeout 30 $NCU -i $R/prof_p$p.ncu-rep --page source --csv --print-source sass > $R/sass_p$p.csv 2>&1; step sass_p$p $?
  rm -f $R/prof_p$p.ncu-rep
done
