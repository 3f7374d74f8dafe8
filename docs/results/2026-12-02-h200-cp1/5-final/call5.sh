#!/usr/bin/env bash
# Call 5 (17th session): the final tree (684b0e0). test_gpu_ulysses in full, then the README's main
# job on one GPU: ulysses-bench with no arguments (now with cp = 1 plan rows beside the kernel).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 20 $B/test_gpu_layout > $R/gpu_layout.log 2>&1; echo "layout rc $?" >> $R/rc.txt
timeout 240 $B/test_gpu_ulysses > $R/gpu_ulysses.log 2>&1; echo "ulysses rc $?" >> $R/rc.txt
timeout 75 stdbuf -oL $B/ulysses-bench --json $R/default.json > $R/default.log 2>&1; echo "default bench rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
