#!/usr/bin/env bash
# Call 6 (49th session, 1x H200): the final code (comments only since f28949b). test_multigpu on one
# GPU (peer-copy and NCCL one-rank cases), the dense ring and all-gather device-loopback cases, and
# random Ulysses configurations with head chunks through cuDNN.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
B=.carry/bin
step tests_multigpu 70 $B/test_multigpu
step tests_ring 130 $B/test_gpu_ulysses --gtest_filter='Gpu/DeviceLoopbackRing.*:AllGather/*'
export ULYSSES_SWEEP_CASES=2000 ULYSSES_SWEEP_MATCH="ulysses training !chunks=1"; step sweep_chunks 50 $B/test_gpu_sweep
