#!/usr/bin/env bash
# Call 6 (39th session): why the tensor-core split-KV kernel is slow (ncu sections), merge_stacked's time.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; }
D="$B/ulysses-bench --decode --min-split-rows 1024"
NCU=/usr/local/cuda/bin/ncu
timeout 90 $NCU -k regex:split_kv -c 1 --import-source yes --section SchedulerStats --section WarpStateStats --section SourceCounters \
  --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis --section SpeedOfLight \
  $D --seq 8192 --splits 16 --split-kernel built_in --iters 1 > $R/ncu_split.txt 2>&1; step ncu_split $?
timeout 40 $NCU -k regex:merge_stacked --metrics gpu__time_duration.sum --csv $D --seq 8192,131072 --splits 16 --split-kernel local --iters 1 > $R/ncu_merge.csv 2>&1; step ncu_merge $?
timeout 40 $D --seq 8192,32768,131072 --splits 16 > $R/decode.log 2>&1; step decode $?
