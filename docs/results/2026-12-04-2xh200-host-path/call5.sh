#!/usr/bin/env bash
# Call 5 (43rd session, 1x H200: the 2-GPU machine was no longer lent): the device-loopback tests
# call 3 did not reach (ring, hybrid, all-gather, MLA on the new transport host path), then the
# bench's --steps queued through the loopback (checks only).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
B=.carry/bin
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
nvidia-smi -L > $R/gpu.txt 2>&1
step queued 90 $B/ulysses-bench --seq 8192 --cp 2 --transport loopback --strategy ulysses,ring --chunks 1,2 --steps synced,queued --iters 3 --json $R/queued.json
step ring_loopback 420 $B/test_gpu_ulysses --gtest_filter='PackedStream/DeviceLoopbackRing.*:Gpu/DeviceLoopbackRing.*:AllGather/DeviceLoopbackRing.*:UnevenHybrid/DeviceLoopbackRing.*:Mla/DeviceLoopbackRing.*:AllGatherPacked/DeviceLoopbackRing.*'
