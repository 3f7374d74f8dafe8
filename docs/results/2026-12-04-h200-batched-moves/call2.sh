#!/usr/bin/env bash
# Call 2 (49th session, 1x H200): batched packs/unpacks (kernels::move_heads). The layout tests
# (move_heads against one host call per move); emulate.cc (held traced steps, host issue times)
# linked against HEAD (old) and the batched moves (new), alternated at 8k twice and 32k once
# (ce-own, 390 GB/s + 10 us); then the Ulysses device-loopback cases and test_multigpu on one GPU.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
B=.carry/bin
step tests_layout 60 $B/test_gpu_layout
for round in 1 2; do
  step emu8k_old_$round 40 .carry/probe/emulate_old 8192 390 10 6 ce-own
  step emu8k_new_$round 40 .carry/probe/emulate_new 8192 390 10 6 ce-own
done
step emu32k_old 50 .carry/probe/emulate_old 32768 390 10 4 ce-own
step emu32k_new 50 .carry/probe/emulate_new 32768 390 10 4 ce-own
step tests_ulysses 200 $B/test_gpu_ulysses --gtest_filter='*DeviceLoopbackUlysses*:GpuStreams*:GpuSingleRank*'
step tests_multigpu 50 $B/test_multigpu
