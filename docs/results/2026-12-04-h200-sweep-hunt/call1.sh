#!/usr/bin/env bash
# Call 1 (51st session, 1x H200): a bug hunt at HEAD 72eeec0 -- random configurations through
# cuDNN on the device loopback, Ulysses-only draws (no FP64 truth needed: fast) and every strategy.
# Each sweep stops at its limit by design (rc 124); a failing draw prints FAIL and its seed.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
B=.carry/gbin
nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.max.sm --format=csv > $R/gpu.txt 2>&1
export ULYSSES_SWEEP_CASES=100000
ULYSSES_SWEEP_MATCH="ulysses" step sweep_ulysses 280 $B/test_gpu_sweep
step sweep_all 270 $B/test_gpu_sweep
