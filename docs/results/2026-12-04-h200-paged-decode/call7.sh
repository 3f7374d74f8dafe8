#!/usr/bin/env bash
# Call 7 (41st session): the final tree's decode tests (the shared paged-cache helper) and the
# Python GPU tests (page_table size checks).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; }
timeout 200 $B/test_gpu_decode > $R/test_gpu_decode.log 2>&1; step test_gpu_decode $?
timeout 120 env -C tests/python PYTHONPATH=$PWD/python ULYSSES_LIBRARY=$PWD/$B/libulysses_c.so /opt/torch/.venv/bin/python3 -m unittest -v test_torch_gpu test_c_api test_decode > $R/python.log 2>&1; step python $?
