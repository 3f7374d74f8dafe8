#!/usr/bin/env bash
# Call 3 (47th session, 2x H200): where a chunked step's time goes on two GPUs (--timeline,
# --trace-calls): 32k and 128k, ulysses over copy engines (the best rows of call 1), chunks 1-3.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
for s in 32768:130 131072:280; do
  step timeline_${s%%:*} ${s##*:} .carry/bin/ulysses-bench --seq ${s%%:*} --strategy ulysses --saved heads \
    --chunks 1,2,3 --transport peer --timeline --trace-calls --iters 9 \
    --timeline-trace $R/trace_${s%%:*}.json --json $R/timeline_${s%%:*}.json
done
cat $R/rc.txt
