#!/usr/bin/env bash
# Call 4 (44th session, 1x H200): each kernel call of a chunked step timed alone on ulysses' own
# buffers (--trace-calls through the device loopback), chunks 1/2/4 at 32k and 128k: do the
# chunked calls on the plan's layout keep the probe's 2% gain at 32k, or lose it?
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
B=.carry/bin
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
step trace 240 $B/ulysses-bench --transport loopback --cp 2 --seq 32768,131072 --strategy ulysses --saved heads --chunks 1,2,4 --iters 3 --trace-calls --json $R/trace.json
