#!/usr/bin/env bash
# Call 6 (47th session, 2x H200): the later chunks' exchanges issued after the first chunk's
# kernel (this change) against 04adb98 (ulysses-bench.old), alternated twice at 8k, peer and
# nccl, chunks 1-3, 3 rounds; then the 2-GPU Ulysses tests (NCCL and peer copies).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
B=.carry/bin
ab() {  # tag binary
  step "$1_8192" 50 $B/$2 --seq 8192 --strategy ulysses --saved heads --chunks 1,2,3 \
    --transport peer,nccl --steps synced --iters 7 --rounds 3 --json $R/$1_8192.json
}
ab new ulysses-bench; ab old ulysses-bench.old; ab new2 ulysses-bench; ab old2 ulysses-bench.old
step multigpu_ulysses 70 $B/test_multigpu --gtest_filter='*Ulysses*'
cat $R/rc.txt
