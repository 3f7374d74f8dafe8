#!/usr/bin/env bash
# Call 5 (47th session, 2x H200): the timeline of this change's steps (own rows packed and
# unpacked beside the exchange): 8k and 32k, peer, chunks 1-3, against call 3's (the binary before).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
for s in 8192:40 32768:60; do
  step timeline_${s%%:*} ${s##*:} .carry/bin/ulysses-bench --seq ${s%%:*} --strategy ulysses --saved heads \
    --chunks 1,2,3 --transport peer --timeline --iters 9 \
    --timeline-trace $R/trace_${s%%:*}.json --json $R/timeline_${s%%:*}.json
done
cat $R/rc.txt
