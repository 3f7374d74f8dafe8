#!/usr/bin/env bash
# Call C (32nd session): where ring's step goes with MLA head dims: every kernel call timed alone
# (--trace-calls) for ring at cp 2, 32k, 192/128 beside V padded to 192.
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
A="--cp 2 --seq 32768 --transport loopback --heads 32 --kv-heads 32 --chunks 1 --seed 7 --iters 3 --strategy ring --trace-calls --no-check"
timeout 120 stdbuf -oL $B/ulysses-bench $A --head-dim 192 --head-dim-v 128 > $R/trace_mla.log 2>&1; step "trace mla" $?
pack
timeout 120 stdbuf -oL $B/ulysses-bench $A --head-dim 192 > $R/trace_padded.log 2>&1; step "trace padded" $?
pack
timeout 120 stdbuf -oL $B/ulysses-bench $A --head-dim 128 > $R/trace_d128.log 2>&1; step "trace d128" $?
