#!/usr/bin/env bash
# Call 7 (43rd session, 1x H200): decode's auto threshold at 256k keys -- the auto test (bits of
# built_in at 4k and 256k, of local at 320k), the decode suite, and what auto picks on the bench.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
B=.carry/bin
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
step auto 60 $B/test_gpu_decode --gtest_filter='DeviceLoopbackDecodeAuto.*'
step bench 60 $B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --split-kernel auto,local,built_in --seq 196608,262144,327680
step decode 120 $B/test_gpu_decode
