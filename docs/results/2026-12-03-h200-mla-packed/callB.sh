#!/usr/bin/env bash
# Call B (33rd session): packed MLA training (192 / 128, 8 documents) beside V padded to 192, at
# 32k tokens, cp 2 on the device loopback, Ulysses, ring and all-gather (checks against cp = 1;
# per-rank memory; the step is every rank's work on one GPU), and where the packed call's time
# goes (--trace-calls, cp 1).
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
A="--cp 2 --seq 32768 --varlen 8 --transport loopback --heads 32 --kv-heads 32 --chunks 1 --seed 7 --iters 3 --strategy ulysses,ring,allgather"
timeout 200 stdbuf -oL $B/ulysses-bench $A --head-dim 192 --head-dim-v 128 --json $R/mla.json > $R/mla.log 2>&1; step "bench packed mla 192/128" $?
pack
timeout 200 stdbuf -oL $B/ulysses-bench $A --head-dim 192 --json $R/padded.json > $R/padded.log 2>&1; step "bench packed padded 192/192" $?
pack
T="--cp 1 --seq 32768 --varlen 8 --transport loopback --heads 32 --kv-heads 32 --seed 7 --iters 3 --strategy ulysses --trace-calls --no-check"
timeout 60 stdbuf -oL $B/ulysses-bench $T --head-dim 192 --head-dim-v 128 > $R/trace_mla.log 2>&1; step "trace packed mla cp1" $?
pack
timeout 60 stdbuf -oL $B/ulysses-bench $T --head-dim 192 > $R/trace_padded.log 2>&1; step "trace packed padded cp1" $?
