#!/usr/bin/env bash
# Call 3 (50th session, 1x H200): the four MLA fp8 ring/hybrid/all-gather cases call 2's limit cut
# off, then random configurations of every strategy through cuDNN (move_heads without allocations).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
B=.carry/bin
step tests_mla_fp8 90 $B/test_gpu_ulysses --gtest_filter='Mla/*fp8_ring_*:Mla/*fp8_hybrid_*:Mla/*fp8_allgather_*'
export ULYSSES_SWEEP_CASES=2000; step sweep_all 100 $B/test_gpu_sweep
