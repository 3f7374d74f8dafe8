#!/usr/bin/env bash
# Call 3 (45th session, 1x H200): emulate.cc with cp = 2's call alone beside the plans, and each
# plan's steps with the kernel calls timed where they run; 8k and 32k, twice each.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
for round in 1 2; do
  step emu8k_$round 60 .carry/probe/emulate_new 8192 335 30 8
  step emu32k_$round 100 .carry/probe/emulate_new 32768 335 30 6
done
