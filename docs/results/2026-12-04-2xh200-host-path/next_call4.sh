#!/usr/bin/env bash
# Call 4 (43rd session, 2x H200): issue 3's table after the peer-copy host path: ulysses at
# 8k/32k/128k, chunks 1/2/4, over copy engines, blocking (wrapped) NCCL and ulysses' non-blocking
# NCCL, each step waited for (synced) and the steps issued back to back (queued); then the rest of
# the device-loopback ring tests on the new transport.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
B=.carry/bin
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
{ nvidia-smi -L; nvidia-smi topo -m | head -4; } > $R/gpu.txt 2>&1
step targets 420 $B/ulysses-bench --seq 8192,32768,131072 --strategy ulysses --saved heads --chunks 1,2,4 --transport peer,nccl-blocking,nccl --steps synced,queued --iters 5 --json $R/targets.json
step ring_loopback 150 $B/test_gpu_ulysses --gtest_filter='Gpu/DeviceLoopbackRing.*:AllGather/DeviceLoopbackRing.*:UnevenHybrid/DeviceLoopbackRing.*:Mla/DeviceLoopbackRing.*'
