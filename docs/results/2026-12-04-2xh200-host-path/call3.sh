#!/usr/bin/env bash
# Call 3 (43rd session, 2x H200): the peer-copy group's host path (spinning rendezvous, copies
# outside the hub's lock, pooled events, self copies without the hub) A/B against call 2's bench
# (bin_base), NCCL blocking (wrapped) vs non-blocking, CUDA graph replays; then the multi-GPU and
# device-loopback tests on the new transport.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
B=.carry/bin
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
Q="--strategy ulysses --saved heads --chunks 1,2,4 --iters 5"; P="--seq 8192,32768 $Q"
step peer_base 120 .carry/bin_base/ulysses-bench $P --transport peer --json $R/peer_base.json
step peer_new 120 $B/ulysses-bench $P --transport peer --json $R/peer_new.json
step nccl_new 240 $B/ulysses-bench $P --transport nccl,nccl-blocking --cuda-graph off,on --json $R/nccl_new.json
step peer_base2 90 .carry/bin_base/ulysses-bench --seq 8192 $Q --transport peer --json $R/peer_base2.json
step peer_new2 90 $B/ulysses-bench --seq 8192 $Q --transport peer --json $R/peer_new2.json
step multigpu 200 $B/test_multigpu
step loopback 200 $B/test_gpu_ulysses --gtest_filter='*DeviceLoopback*:GpuStreams.*'
