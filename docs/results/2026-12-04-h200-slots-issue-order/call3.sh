#!/usr/bin/env bash
# Call 3 (48th session, 1x H200): the device-loopback ring cases call 2's limit cut (all-gather,
# packed all-gather, MLA), then more random Ulysses draws (saved=lse; chunked training).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
B=.carry/bin
step tests_ring_rest 330 $B/test_gpu_ulysses --gtest_filter='AllGather*:Mla*'
export ULYSSES_SWEEP_CASES=2000
export ULYSSES_SWEEP_MATCH="ulysses saved=lse"; step sweep_lse 70 $B/test_gpu_sweep
export ULYSSES_SWEEP_MATCH="ulysses training !chunks=1"; step sweep_chunks 70 $B/test_gpu_sweep
