#!/usr/bin/env bash
# Call 8 (46th session, 1x H200): after the review mend (region_of(), ms_last()): the
# device-loopback Ulysses cases and the copy bench's small case.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
step copies_small 40 .carry/bin/ulysses-copy-bench --mib 4 --iters 1 --hold-ms 5
step tests_ulysses 200 .carry/bin/test_gpu_ulysses --gtest_filter='*DeviceLoopbackUlysses*'
