#!/usr/bin/env bash
# Call C (37th session): the ring's last dK/dV hop in the gradients' dtype (8ecfd9d) and the bench's
# memory breakdown per rank (the bench commit before it). Every ring and hybrid loopback suite, ring
# and all-gather at 8k / 32k (cp 1, 2), all-gather at 128k (each rank's plan buffers), and 40 / 8
# heads on 3 ranks (uneven: the breakdown's "other" no longer negative).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
nvidia-smi -L > $R/gpu.txt
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; }
timeout 50 stdbuf -oL $B/ulysses-bench --seq 8192,32768 --cp 1,2 --strategy ring,allgather --chunks 1 --seed 7 --iters 3 --transport loopback --json $R/bench_ring_dense.json > $R/bench_ring_dense.log 2>&1; step "bench ring, allgather 8k 32k cp 1,2" $?
pack
timeout 60 stdbuf -oL $B/ulysses-bench --seq 131072 --cp 1,2 --strategy allgather --chunks 1 --seed 7 --iters 2 --transport loopback --json $R/bench_allgather_128k.json > $R/bench_allgather_128k.log 2>&1; step "bench allgather 128k cp 1,2" $?
timeout 40 stdbuf -oL $B/ulysses-bench --seq 30720 --cp 3 --heads 40 --kv-heads 8 --sinks --chunks 1 --seed 7 --iters 3 --transport loopback --strategy ulysses --json $R/bench_40h_cp3.json > $R/bench_40h_cp3.log 2>&1; step "bench 40/8 heads cp 3" $?
pack
timeout 300 $B/test_gpu_ulysses --gtest_filter='Gpu/DeviceLoopbackRing.*:Fp8/DeviceLoopbackRing.*:Packed/DeviceLoopbackRing.*:PackedStream/DeviceLoopbackRing.*:UnevenHybrid/*:Mla/DeviceLoopbackRing.*hybrid*:Mla/DeviceLoopbackRing.*ring_*' > $R/ring_regression.log 2>&1; step "ring/hybrid GPU suites (regression)" $?
