#!/usr/bin/env bash
# Call E (37th session): GPU sweeps of ring and hybrid training draws at 8ecfd9d (the last dK/dV
# hop in the gradients' dtype), on cuDNN through the device loopback.
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
ULYSSES_SWEEP_MATCH="ring training" ULYSSES_SWEEP_CASES=2000 timeout 110 $B/test_gpu_sweep > $R/sweep_ring.log 2>&1; step "sweep ring training (124 by design)" $?
pack
ULYSSES_SWEEP_MATCH="hybrid training" ULYSSES_SWEEP_CASES=2000 timeout 80 $B/test_gpu_sweep > $R/sweep_hybrid.log 2>&1; step "sweep hybrid training (124 by design)" $?
