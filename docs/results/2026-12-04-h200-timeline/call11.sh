#!/usr/bin/env bash
# Call 11 (44th session, 1x H200): ForwardingCommunicator -- test_multigpu on one GPU (the new
# wrapper case with a one-rank NCCL communicator, the peer-copy cases), and the bench's timeline
# through the refactored TimedComm.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
B=.carry/bin
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
step multigpu 200 $B/test_multigpu
step timeline 90 $B/ulysses-bench --transport loopback --cp 2 --seq 8192 --strategy ulysses,ring --chunks 2 --iters 3 --timeline --timeline-trace $R/trace.json
