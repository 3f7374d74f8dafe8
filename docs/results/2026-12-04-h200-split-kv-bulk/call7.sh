#!/usr/bin/env bash
# Call 7 (40th session): auto picks the built-in kernel for short steps (3c1e3b7): decode tests, Python GPU tests, bench with auto.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; }
timeout 160 $B/test_gpu_decode > $R/test_gpu_decode.log 2>&1; step test_gpu_decode $?
timeout 120 env -C tests/python PYTHONPATH=$PWD/python ULYSSES_LIBRARY=$PWD/$B/libulysses_c.so /opt/torch/.venv/bin/python3 -m unittest -v test_torch_gpu test_c_api > $R/python_gpu.log 2>&1; step python_gpu $?
D="$B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --split-kernel auto,local,built_in"
timeout 70 $D --seq 8192,32768,131072,1048576 --json $R/t1.json > $R/t1.log 2>&1; step t1 $?
timeout 40 $D --seq 8192,131072 --decode-tokens 4 --json $R/t4.json > $R/t4.log 2>&1; step t4 $?
