#!/usr/bin/env bash
# Call 1 (45th session, 1x H200): tapered head chunks. The chunk tests on the device loopback, then
# the emulated cp = 2 rank (emulate.cc) at 8k and 32k, the binary of 9199aa6 (chunks 3 = 2, 1, 1)
# and the new one (1, 2, 1) alternated twice; nvidia-smi beside it.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
nvidia-smi > $R/gpu.txt 2>&1
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active --format=csv -lms 200 > $R/smi.csv 2>&1 &
smi=$!
step tests 150 .carry/bin/test_gpu_ulysses --gtest_filter='*chunk*:*Chunk*'
for round in 1 2; do
  step emu8k_old_$round 60 .carry/probe/emulate_old 8192
  step emu8k_new_$round 60 .carry/probe/emulate_new 8192
done
for round in 1 2; do
  step emu32k_old_$round 90 .carry/probe/emulate_old 32768
  step emu32k_new_$round 90 .carry/probe/emulate_new 32768
done
kill $smi
