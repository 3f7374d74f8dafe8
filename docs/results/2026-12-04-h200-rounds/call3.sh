#!/usr/bin/env bash
# Call 3 (46th session, 1x H200): the GPU sweep with half its draws sending a rank's own rows
# through the exchange (40 draws), the MLA ring / hybrid / all-gather cases call 2 did not reach,
# and the final bench binary with --rounds 2 (8k, cp = 1 and loopback cp = 2).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
step bench_rounds 60 .carry/bin/ulysses-bench --seq 8192 --cp 1,2 --transport loopback --strategy ulysses --chunks 1 --rounds 2 --iters 3 --json $R/bench_rounds.json
step tests_mla 100 .carry/bin/test_gpu_ulysses --gtest_filter='Mla/DeviceLoopbackRing.*hybrid_2x2_packed*:Mla/DeviceLoopbackRing.*stream_mqa*:Mla/DeviceLoopbackRing.*allgather_p2_packed*:Mla/DeviceLoopbackRing.*fp8_*'
step tests_sweep 240 env ULYSSES_SWEEP_CASES=40 .carry/bin/test_gpu_sweep
