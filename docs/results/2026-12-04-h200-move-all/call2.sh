#!/usr/bin/env bash
# Call 2 (50th session, 1x H200): the rest of the GPU checks of move_heads without allocations:
# the packed, packed-stream, uneven-hybrid, fp8-ring and MLA device-loopback cases, test_multigpu in
# full on one GPU, and the 8k step with one rank of cp = 2 and its peer emulated, the probe linked
# against 1501945 (old) and the new library, alternated twice.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
B=.carry/bin P=.carry/probe
step emu8k_old_1 30 $P/emulate_old 8192 390 10 6 ce-own
step emu8k_new_1 30 $P/emulate_new 8192 390 10 6 ce-own
step emu8k_old_2 30 $P/emulate_old 8192 390 10 6 ce-own
step emu8k_new_2 30 $P/emulate_new 8192 390 10 6 ce-own
step tests_packed 250 $B/test_gpu_ulysses --gtest_filter='Packed/*:PackedStream/*:UnevenHybrid/*:Fp8/DeviceLoopbackRing.*:Mla/*'
step tests_multigpu 150 $B/test_multigpu
