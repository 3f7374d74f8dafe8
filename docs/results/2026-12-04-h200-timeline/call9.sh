#!/usr/bin/env bash
# Call 9 (44th session, 1x H200): cuDNN on the whole sequence with the heads one rank holds at
# cp = 32/H, at the power cap (the default warm-up): does the 16-head call still lose 7% at 8k?
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
B=.carry/bin
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
for i in 1 2; do
  for h in 32 16 8; do
    step "heads${h}_$i" 120 $B/ulysses-bench --cp 1 --strategy ulysses --seq 8192,32768,131072 --heads $h --kv-heads $((h / 4)) --iters 9 --no-check --json $R/heads${h}_$i.json
  done
done
