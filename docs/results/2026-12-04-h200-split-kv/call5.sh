#!/usr/bin/env bash
# Call 5 (39th session): the split-KV kernel on tensor cores, and merge_stacked with lanes over parts.
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
timeout 150 $B/test_gpu_decode > $R/test_gpu_decode.log 2>&1; step test_gpu_decode $?
timeout 60 $D --seq 8192,32768,131072,1048576 --splits 16,32 --json $R/decode.json > $R/decode.log 2>&1; step decode $?
timeout 40 $D --seq 32768,131072 --splits 16 --heads 64 > $R/decode_g8.log 2>&1; step decode_g8 $?
timeout 40 $D --seq 32768,131072 --splits 16 --decode-tokens 4 > $R/decode_t4.log 2>&1; step decode_t4 $?
timeout 40 $D --seq 32768,131072 --splits 16 --heads 8 > $R/decode_mha.log 2>&1; step decode_mha $?
timeout 60 $D --batch 8 --seq 131072 --splits 4,16 --ragged > $R/decode_b8.log 2>&1; step decode_b8 $?
timeout 40 $D --seq 131072 --window 4096,0 --splits 16 > $R/decode_window.log 2>&1; step decode_window $?
timeout 40 $D --seq 32768,131072 --splits 16 --head-dim 192 --head-dim-v 128 > $R/decode_mla.log 2>&1; step decode_mla $?
timeout 40 /usr/local/cuda/bin/ncu --metrics gpu__time_duration.sum,dram__bytes_read.sum --csv \
  $D --seq 8192,131072 --splits 16 --iters 2 > $R/ncu.csv 2> $R/ncu.err; step ncu $?
