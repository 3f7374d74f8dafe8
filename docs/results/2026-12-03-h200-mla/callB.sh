#!/usr/bin/env bash
# Call B (31st session): the GPU sweep again after its refusal fix (draws with Dv, and stream
# plans, which the GPU sweep now really runs), then the kernel alone with V padded to 192 (what
# a library without head_dim_v makes MLA users do) beside 192/128, at 8k and 32k.
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
ULYSSES_SWEEP_MATCH="Dv=" ULYSSES_SWEEP_CASES=2000 timeout 150 $B/test_gpu_sweep > $R/sweep_dv.log 2>&1; step "sweep Dv (124 by design)" $?
pack
ULYSSES_SWEEP_MATCH="sharding=stream" ULYSSES_SWEEP_CASES=2000 timeout 100 $B/test_gpu_sweep > $R/sweep_stream.log 2>&1; step "sweep stream (124 by design)" $?
pack
A="--cp 1 --seq 8192,32768 --heads 32 --kv-heads 32 --chunks 1 --seed 7 --iters 5 --strategy ulysses"
timeout 60 stdbuf -oL $B/ulysses-bench $A --head-dim 192 --json $R/padded.json > $R/padded.log 2>&1; step "bench padded 192/192" $?
timeout 60 stdbuf -oL $B/ulysses-bench $A --head-dim 192 --head-dim-v 128 --json $R/mla_cp1.json > $R/mla_cp1.log 2>&1; step "bench 192/128" $?
