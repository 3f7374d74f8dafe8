#!/usr/bin/env bash
# Call A (35th session): Ulysses with heads split unevenly (cp < num_heads_kv not dividing it) on
# one H200, first layout (rows padded to the busiest rank's slots, commit 5058f74): the GPU cases,
# sweep draws that split unevenly, the bench at 32k on virtual ranks, and (call B) the Ulysses GPU
# suites again. (Rewritten here as it ran: the script itself was replaced by callB.sh before it
# was copied.)
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
timeout 120 $B/test_gpu_ulysses --gtest_filter='Uneven/*' > $R/uneven_cases.log 2>&1; step "uneven GPU cases" $?
pack
ULYSSES_SWEEP_MATCH="ulysses cp=3 Hkv=4 chunks=1" ULYSSES_SWEEP_CASES=2000 timeout 45 $B/test_gpu_sweep > $R/sweep_uneven.log 2>&1; step "sweep ulysses cp=3 Hkv=4 (124 by design)" $?
pack
# 32k tokens on 8 virtual ranks: 12 heads (uneven: 2 or 1 per rank) beside 16 (even: 2 each), the
# kernel alone at cp 1 in each run; ulysses and allgather rows checked against cp 1.
A="--seq 32768 --head-dim 128 --seed 7 --iters 3 --transport loopback --strategy ulysses,allgather --chunks 1"
timeout 110 stdbuf -oL $B/ulysses-bench $A --cp 1,8 --heads 12 --kv-heads 12 --json $R/bench_12h.json > $R/bench_12h.log 2>&1; step "bench 12 heads cp 1,8" $?
pack
timeout 110 stdbuf -oL $B/ulysses-bench $A --cp 1,8 --heads 16 --kv-heads 16 --json $R/bench_16h.json > $R/bench_16h.log 2>&1; step "bench 16 heads cp 1,8" $?
pack
# GQA 40 query / 8 KV heads on 3 virtual ranks (3, 3, 2 KV heads), sinks, lse slots.
timeout 80 stdbuf -oL $B/ulysses-bench --seq 30720 --cp 3 --heads 40 --kv-heads 8 --sinks --saved heads,lse --seed 7 --iters 3 --transport loopback --strategy ulysses --chunks 1 --json $R/bench_40h_cp3.json > $R/bench_40h_cp3.log 2>&1; step "bench 40/8 heads cp 3" $?
pack
