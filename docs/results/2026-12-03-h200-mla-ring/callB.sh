#!/usr/bin/env bash
# Call B (32nd session): ring, hybrid and all-gather with MLA head dims (192 / 128) beside V
# padded to 192, at 8k and 32k, cp 2 and 4 on the device loopback (per-rank memory and the
# checks against cp = 1; the step time is every rank's work on one GPU).
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
A="--cp 2,4 --seq 8192,32768 --transport loopback --heads 32 --kv-heads 32 --chunks 1 --seed 7 --iters 3 --strategy ring,hybrid,allgather --ulysses-degree 2"
timeout 240 stdbuf -oL $B/ulysses-bench $A --head-dim 192 --head-dim-v 128 --json $R/mla.json > $R/mla.log 2>&1; step "bench mla 192/128" $?
pack
timeout 240 stdbuf -oL $B/ulysses-bench $A --head-dim 192 --json $R/padded.json > $R/padded.log 2>&1; step "bench padded 192/192" $?
