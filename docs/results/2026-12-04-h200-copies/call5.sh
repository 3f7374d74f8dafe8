#!/usr/bin/env bash
# Call 5 (46th session, 1x H200): ulysses-copy-bench on one GPU (routes gpu0->gpu0 and gpu0->host),
# as scripts/gpu_session.sh copies runs it.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
step copies 150 .carry/bin/ulysses-copy-bench --json $R/copies.json
step copies_half 100 .carry/bin/ulysses-copy-bench --spread 2 --widths 2048,4096 --json $R/copies_half.json
step copies_small 60 .carry/bin/ulysses-copy-bench --mib 4 --iters 1 --hold-ms 5
