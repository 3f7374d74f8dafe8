#!/usr/bin/env bash
# Call 10 (44th session, 1x H200): --timeline-trace through the device loopback (cp 2 and 4,
# chunks 1 and 2, and ring); the file must load as JSON with an event per span.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
B=.carry/bin
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
step trace 120 $B/ulysses-bench --transport loopback --cp 2,4 --seq 8192 --strategy ulysses,ring --chunks 1,2 --iters 3 --timeline-trace $R/trace.json
step check 30 python3 -c "
import json, sys
t = json.load(open('$R/trace.json'))
ev = t['traceEvents']
x = [e for e in ev if e['ph'] == 'X']
names = [e['args']['name'] for e in ev if e['ph'] == 'M' and e['name'] == 'process_name']
print(len(ev), 'events,', len(x), 'spans,', len(names), 'processes')
for n in names: print(' ', n)
print('kernels', sum(e['cat'] == 'kernel' for e in x), 'exchanges', sum(e['cat'] == 'exchange' for e in x))
print('max end us', max(e['ts'] + e['dur'] for e in x))
"
