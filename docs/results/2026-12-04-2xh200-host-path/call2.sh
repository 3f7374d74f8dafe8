#!/usr/bin/env bash
# Call 2 (43rd session, 2x H200): why head chunks did not pay in call 1 -- the host time to issue
# one step beside its GPU time, and NCCL rows as CUDA graph replays (no host in the step).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
B=.carry/bin
t0=$(date +%s)
timeout 240 $B/ulysses-bench --seq 8192,32768 --strategy ulysses --saved heads --chunks 1,2,4 --transport nccl --cuda-graph off,on --iters 5 --json $R/graph.json > $R/graph.log 2>&1
echo "graph rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt
pack
timeout 150 $B/ulysses-bench --seq 8192,32768 --strategy ulysses --saved heads --chunks 1,2,4 --transport peer --iters 5 --json $R/peer.json > $R/peer.log 2>&1
echo "peer rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt
