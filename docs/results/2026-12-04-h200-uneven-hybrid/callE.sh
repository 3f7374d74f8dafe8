#!/usr/bin/env bash
# Call E (36th session): the uneven LSE unpacks through plan_common's lse_as_rows (8d75837), on the
# Ulysses and hybrid uneven GPU cases.
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
timeout 200 $B/test_gpu_ulysses --gtest_filter='Uneven/*:UnevenHybrid/*:Mla/DeviceLoopbackRing.*uneven*' > $R/uneven_cases.log 2>&1; step "uneven Ulysses and hybrid GPU cases" $?
