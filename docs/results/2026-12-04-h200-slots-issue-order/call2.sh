#!/usr/bin/env bash
# Call 2 (48th session, 1x H200): emulate.cc's lse cases (binary of 75e2fce = old, of the slots'
# issue order = new) at 8k, 32k (alternated twice) and 128k (once each); then the device-loopback
# ring cases of test_gpu_ulysses that the 47th session's limit cut.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
B=.carry/bin
for round in 1 2; do
  step emu8k_old_$round 40 .carry/probe/emulate_old 8192 390 10 6 ce-own lse
  step emu8k_new_$round 40 .carry/probe/emulate_new 8192 390 10 6 ce-own lse
done
for round in 1 2; do
  step emu32k_old_$round 60 .carry/probe/emulate_old 32768 390 10 4 ce-own lse
  step emu32k_new_$round 60 .carry/probe/emulate_new 32768 390 10 4 ce-own lse
done
step emu128k_old 90 .carry/probe/emulate_old 131072 390 10 2 ce-own lse
step emu128k_new 90 .carry/probe/emulate_new 131072 390 10 2 ce-own lse
step tests_ring 230 $B/test_gpu_ulysses --gtest_filter='*DeviceLoopbackRing*'
