#!/usr/bin/env bash
# Call 1 (39th session): the built-in split-KV decode kernel: tests, then local (cuDNN) vs built_in.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
nvidia-smi -L > $R/gpu.txt
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; }
timeout 200 $B/test_gpu_decode > $R/test_gpu_decode.log 2>&1; step test_gpu_decode $?
timeout 120 $B/ulysses-bench --decode --seq 8192,32768,131072,1048576 --splits 16,32 --min-split-rows 1024 \
  --split-kernel local,built_in --json $R/decode.json > $R/decode.log 2>&1; step decode $?
timeout 60 $B/ulysses-bench --decode --seq 8192,32768,131072 --splits 16,32,64 --min-split-rows 256 \
  --split-kernel built_in --json $R/decode_256.json > $R/decode_256.log 2>&1; step decode_256 $?
timeout 90 $B/ulysses-bench --decode --batch 8 --seq 131072 --splits 4,16 --min-split-rows 1024 --ragged \
  --json $R/decode_b8.json > $R/decode_b8.log 2>&1; step decode_b8 $?
timeout 60 $B/ulysses-bench --decode --decode-tokens 4 --seq 131072 --splits 16 --min-split-rows 1024 \
  --json $R/decode_t4.json > $R/decode_t4.log 2>&1; step decode_t4 $?
timeout 60 $B/ulysses-bench --decode --seq 131072 --window 4096 --splits 16 --min-split-rows 1024 \
  --json $R/decode_window.json > $R/decode_window.log 2>&1; step decode_window $?
timeout 60 $B/ulysses-bench --decode --transport loopback --cp 1,2,4 --seq 131072 --splits 16 --min-split-rows 1024 \
  > $R/decode_loopback.log 2>&1; step decode_loopback $?
