#!/usr/bin/env bash
# Call 8 (44th session, 1x H200): --trace-calls and --timeline after a fresh warm-up: calls alone
# at the timed steps' clocks (their sum against the step), 32k cp = 1 and loopback cp = 2.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
B=.carry/bin
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
step trace 120 $B/ulysses-bench --transport loopback --cp 2 --seq 8192,32768 --strategy ulysses --saved heads --chunks 1,2 --iters 5 --trace-calls --timeline --json $R/trace.json
