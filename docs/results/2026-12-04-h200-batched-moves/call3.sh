#!/usr/bin/env bash
# Call 3 (49th session, 1x H200): emulate.cc's lse cases, old (HEAD before the batched moves) and
# new (755cfae), and the heads cases once more alternated at 8k; the ring, all-gather and packed
# all-gather device-loopback cases (ring's and all-gather's own K/V packs now one launch); random
# configurations of every strategy through cuDNN.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
B=.carry/bin
step emu8k_lse_old 40 .carry/probe/emulate_old 8192 390 10 6 ce-own lse
step emu8k_lse_new 40 .carry/probe/emulate_new 8192 390 10 6 ce-own lse
step emu8k_old_3 40 .carry/probe/emulate_old 8192 390 10 6 ce-own
step emu8k_new_3 40 .carry/probe/emulate_new 8192 390 10 6 ce-own
step tests_ring 260 $B/test_gpu_ulysses --gtest_filter='Gpu/DeviceLoopbackRing.*:AllGather/*:AllGatherPacked/*'
export ULYSSES_SWEEP_CASES=2000; step sweep 60 $B/test_gpu_sweep
