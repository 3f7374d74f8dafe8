#!/usr/bin/env bash
# Call 1 (44th session, 1x H200): ulysses-bench --timeline on the device loopback -- spans of a
# step per rank (kernel calls, exchanges) with chunks 1/2/4, ring too; beside --trace-calls.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
B=.carry/bin
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
nvidia-smi > $R/gpu.txt 2>&1
step heads 150 $B/ulysses-bench --transport loopback --cp 2 --seq 8192,32768 --strategy ulysses --saved heads --chunks 1,2,4 --iters 5 --timeline --json $R/heads.json
step lse 60 $B/ulysses-bench --transport loopback --cp 2 --seq 8192 --strategy ulysses --saved lse --chunks 2 --in-flight 2 --iters 5 --timeline --trace-calls --json $R/lse.json
step ring 60 $B/ulysses-bench --transport loopback --cp 2 --seq 8192 --strategy ring --iters 5 --timeline --json $R/ring.json
step graph 60 $B/ulysses-bench --transport loopback --cp 2 --seq 8192 --strategy ulysses --chunks 2 --cuda-graph on --iters 5 --timeline
step queued 60 $B/ulysses-bench --transport loopback --cp 4 --seq 8192 --strategy ulysses --chunks 2 --steps queued --iters 5 --timeline
