#!/usr/bin/env bash
# Call 8 (39th session): final: auto falls back to the built-in kernel; merge_stacked prefetches.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; }
D="$B/ulysses-bench --decode --min-split-rows 1024"
timeout 130 $B/test_gpu_decode > $R/test_gpu_decode.log 2>&1; step test_gpu_decode $?
timeout 50 $D --seq 8192,32768,131072,1048576 --splits 16 --json $R/decode.json > $R/decode.log 2>&1; step decode $?
timeout 25 $D --seq 131072 --splits 16 --head-dim 192 --head-dim-v 128 > $R/decode_mla.log 2>&1; step decode_mla $?
timeout 30 /usr/local/cuda/bin/ncu -k regex:"merge_stacked" --metrics gpu__time_duration.sum --csv $D --seq 8192,131072 --splits 16 --split-kernel local --iters 1 > $R/ncu_merge.csv 2>&1; step ncu_merge $?
