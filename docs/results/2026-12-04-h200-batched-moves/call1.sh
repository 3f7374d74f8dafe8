#!/usr/bin/env bash
# Call 1 (49th session, 1x H200): emulate.cc with held traced steps and host issue times (ce-own,
# 390 GB/s + 10 us): 8k twice, 32k once.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv > $R/gpu.txt 2>&1
step emu8k_1 50 .carry/probe/emulate 8192 390 10 6 ce-own
step emu8k_2 50 .carry/probe/emulate 8192 390 10 6 ce-own
step emu32k 80 .carry/probe/emulate 32768 390 10 4 ce-own
