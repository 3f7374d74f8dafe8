#!/usr/bin/env bash
# Call 7 (45th session, 1x H200): d2dbeside.cc -- a copy beside a cuDNN forward that fills the GPU:
# device to device (before / after the call, halves, high-priority stream, cudaMemcpyDefault) and
# device to host, and cudaMemcpyBatchAsync preferring overlap with compute; 32k 48 MiB, 8k 12 MiB.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
step d2d_32k 60 .carry/probe/d2dbeside 32768 48
step d2d_8k 60 .carry/probe/d2dbeside 8192 12
