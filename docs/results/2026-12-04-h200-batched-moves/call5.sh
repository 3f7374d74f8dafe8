#!/usr/bin/env bash
# Call 5 (49th session, 1x H200): chunk 0's own rows and every later chunk's packed in one batch
# (pack_chunks), and move_heads' groups. emulate.cc linked against 7471dd1 (old), 755cfae (mid) and
# the new code (new2), rotated three times at 8k (ce-own, 390 GB/s + 10 us); then the layout
# tests and the Ulysses device-loopback cases on the new code.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
B=.carry/bin
step tests_layout 40 $B/test_gpu_layout
for round in 1 2 3; do
  for v in old mid new2; do step emu8k_${v}_$round 30 .carry/probe/emulate_$v 8192 390 10 6 ce-own; done
done
step emu8k_lse_mid 30 .carry/probe/emulate_mid 8192 390 10 6 ce-own lse
step emu8k_lse_new2 30 .carry/probe/emulate_new2 8192 390 10 6 ce-own lse
step tests_ulysses 180 $B/test_gpu_ulysses --gtest_filter='*DeviceLoopbackUlysses*:GpuStreams*:GpuSingleRank*'
