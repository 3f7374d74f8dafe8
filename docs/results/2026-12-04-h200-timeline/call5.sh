#!/usr/bin/env bash
# Call 5 (44th session, 1x H200): backtoback -- cuDNN forward and backward on the whole sequence
# back to back, synced, with idle gaps; nvidia-smi samples clocks and power meanwhile.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,power.limit,temperature.gpu,clocks_throttle_reasons.active --format=csv -lms 50 > $R/smi.csv 2>&1 &
smi=$!
step b2b_32k 120 .carry/probe/backtoback 32768
step b2b_8k 60 .carry/probe/backtoback 8192
kill $smi
