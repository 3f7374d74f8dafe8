#!/usr/bin/env bash
# Call 1 (48th session, 1x H200): GPU correctness of what no GPU ran yet, then the emulated lse rows.
# Tests: test_gpu_ulysses (Ulysses device-loopback, streams, single rank: own rows apart since
# 04adb98, shared pack/unpack helpers of 75e2fce, slots' issue order of this session), the
# one-GPU test_multigpu cases, sweep draws of Ulysses with chunks and of saved=lse.
# Then emulate.cc lse cases (old = 75e2fce, new = slots issue order) at 8k and 32k, alternated.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
nvidia-smi > $R/gpu.txt 2>&1
B=.carry/bin
for round in 1 2; do
  step emu8k_old_$round 40 .carry/probe/emulate_old 8192 390 10 6 ce-own lse
  step emu8k_new_$round 40 .carry/probe/emulate_new 8192 390 10 6 ce-own lse
done
for round in 1 2; do
  step emu32k_old_$round 60 .carry/probe/emulate_old 32768 390 10 4 ce-own lse
  step emu32k_new_$round 60 .carry/probe/emulate_new 32768 390 10 4 ce-own lse
done
step tests_ulysses 200 $B/test_gpu_ulysses --gtest_filter='*DeviceLoopbackUlysses*:GpuStreams*:GpuSingleRank*'
step tests_multigpu 50 $B/test_multigpu
export ULYSSES_SWEEP_CASES=2000
export ULYSSES_SWEEP_MATCH="ulysses saved=lse"; step sweep_lse 30 $B/test_gpu_sweep
export ULYSSES_SWEEP_MATCH="ulysses training !chunks=1"; step sweep_chunks 30 $B/test_gpu_sweep
