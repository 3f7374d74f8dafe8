#!/usr/bin/env bash
# Call 6 (43rd session, 1x H200): the bench's run_steps() refactor (3d: warm-up, capture, synced
# or queued timed steps): loopback rows synced/queued, and one-rank NCCL plan rows as graph
# replays, synced and queued.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
B=.carry/bin
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
step loopback 90 $B/ulysses-bench --seq 8192 --cp 2 --transport loopback --strategy ulysses --chunks 1,2 --steps synced,queued --iters 3
step graph 90 $B/ulysses-bench --seq 8192 --cp 1 --transport nccl --strategy ulysses --cuda-graph off,on --steps synced,queued --iters 3
