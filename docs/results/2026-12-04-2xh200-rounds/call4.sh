#!/usr/bin/env bash
# Call 4 (47th session, 2x H200): own rows packed and unpacked beside the exchange (this change)
# against the binary before it (ulysses-bench.old, 3640f8e), alternated in one call at 8k and 32k
# (peer, chunks 1-3, 3 rounds each); then the GPU tests of the changed paths.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
B=.carry/bin
ab() {  # tag seq limit
  step "$1_$2" $3 $B/$4 --seq $2 --strategy ulysses --saved heads --chunks 1,2,3 --transport peer \
    --steps synced --iters 7 --rounds 3 --json $R/$1_$2.json
}
ab new 8192 60 ulysses-bench; ab old 8192 60 ulysses-bench.old
ab new 32768 80 ulysses-bench; ab old 32768 80 ulysses-bench.old
step tests_ulysses 200 $B/test_gpu_ulysses
step multigpu_peer 100 $B/test_multigpu --gtest_filter='*PeerCopy*'
step sweep 80 env ULYSSES_SWEEP_CASES=24 $B/test_gpu_sweep
ab old2 32768 80 ulysses-bench.old; ab new2 32768 80 ulysses-bench
cat $R/rc.txt
