#!/usr/bin/env bash
# Call 4 (50th session, 1x H200): the bench's device-loopback rows on the final code (every row
# checks O, dQ, dK, dV against cp = 1): ulysses heads/lse with 1 and 3 chunks, ring and all-gather
# at cp = 2, and ulysses, hybrid (2 x 2) and ring at cp = 4.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
B=.carry/bin
step bench_ulysses 90 $B/ulysses-bench --transport loopback --cp 2 --seq 8192,32768 --strategy ulysses --saved heads,lse --chunks 1,3 --iters 3 --warmup-ms 0
step bench_ring 60 $B/ulysses-bench --transport loopback --cp 2 --seq 8192,32768 --strategy ring,allgather --iters 3 --warmup-ms 0
step bench_cp4 90 $B/ulysses-bench --transport loopback --cp 4 --seq 8192,32768 --strategy ulysses,hybrid,ring --ulysses-degree 2 --chunks 1,2 --iters 3 --warmup-ms 0
