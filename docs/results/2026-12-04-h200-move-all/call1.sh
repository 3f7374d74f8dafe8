#!/usr/bin/env bash
# Call 1 (50th session, 1x H200): move_heads without allocations (HEAD after 1501945). The layout
# suite (incl. the new interleaved-widths batch), every Ulysses, ring and all-gather device-loopback
# case that packs through move_heads, the one-GPU multi-GPU cases, random chunked Ulysses draws.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
B=.carry/bin
nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.max.sm --format=csv > $R/gpu.txt 2>&1
step tests_layout 60 $B/test_gpu_layout
step tests_ulysses 150 $B/test_gpu_ulysses --gtest_filter='*DeviceLoopbackUlysses*:GpuStreams*:GpuSingleRank*'
step tests_ring 150 $B/test_gpu_ulysses --gtest_filter='Gpu/DeviceLoopbackRing.*:AllGather/*:AllGatherPacked/*'
step tests_multigpu 70 $B/test_multigpu
export ULYSSES_SWEEP_CASES=2000 ULYSSES_SWEEP_MATCH="ulysses training !chunks=1"; step sweep_chunks 50 $B/test_gpu_sweep
