#!/usr/bin/env bash
# Call 2 (47th session, 2x H200): copy engines on every route (GPU -> GPU too), then the 2-GPU
# tests on the current tree (NCCL and peer copies, own rows in place, chunks 3), then the
# distributed Ulysses tests.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
nvidia-smi topo -m > $R/topo.txt 2>&1
step copies 120 .carry/bin/ulysses-copy-bench --json $R/copies.json
step copies_half 90 .carry/bin/ulysses-copy-bench --spread 2 --widths 2048,4096 --json $R/copies_half.json
step multigpu 240 .carry/bin/test_multigpu
cat $R/rc.txt
