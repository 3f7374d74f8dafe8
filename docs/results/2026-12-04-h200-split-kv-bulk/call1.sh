#!/usr/bin/env bash
# Call 1 (40th session): decode merges folded (03c6ba1), split_kv bulk copies (7af0879); A/B vs 9fd8b5a.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.total --format=csv > $R/gpu.txt 2>&1
timeout 150 $B/test_gpu_decode > $R/test_gpu_decode.log 2>&1; step test_gpu_decode $?
CS=/usr/local/cuda/bin/compute-sanitizer
timeout 120 $CS --tool memcheck $B/test_gpu_decode --gtest_filter='*built_in*:*Auto*:*Aligned*' > $R/memcheck.log 2>&1; step memcheck $?
timeout 90 $CS --tool synccheck $B/test_gpu_decode --gtest_filter='*p1_one_token_gqa_built_in*:*d256*built_in*:*short_pieces_built_in*' > $R/synccheck.log 2>&1; step synccheck $?
for v in new base; do
  BB=$B/ulysses-bench; [[ $v == base ]] && BB=.carry/base/ulysses-bench
  D="$BB --decode --min-split-rows 1024 --splits 16"
  timeout 60 $D --seq 8192,32768,131072,1048576 --json $R/${v}_t1.json > $R/${v}_t1.log 2>&1; step ${v}_t1 $?
  timeout 40 $D --seq 8192,131072 --decode-tokens 4 --json $R/${v}_t4.json > $R/${v}_t4.log 2>&1; step ${v}_t4 $?
done
timeout 40 $B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --seq 131072 --batch 8 --ragged > $R/new_b8_ragged.log 2>&1; step new_b8 $?
timeout 60 /usr/local/cuda/bin/ncu -k regex:"split_kv" -c 2 --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats $B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --seq 1048576 --split-kernel built_in --iters 1 > $R/ncu_splitkv.txt 2>&1; step ncu $?
