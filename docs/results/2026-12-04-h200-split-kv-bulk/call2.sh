#!/usr/bin/env bash
# Call 2 (40th session): split_kv with fewer instructions per tile (c.f. call 1's bulk-copy numbers).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; }
timeout 100 $B/test_gpu_decode --gtest_filter='*built_in*:*Auto*:*Aligned*:*Large*' > $R/test_gpu_decode.log 2>&1; step test_gpu_decode $?
CS=/usr/local/cuda/bin/compute-sanitizer
timeout 60 $CS --tool synccheck --num-cuda-barriers 65536 $B/test_gpu_decode --gtest_filter='*p1_one_token_gqa_built_in*:*short_pieces_built_in*' > $R/synccheck.log 2>&1; step synccheck $?
timeout 60 $CS --tool racecheck $B/test_gpu_decode --gtest_filter='*p1_one_token_gqa_built_in*' > $R/racecheck.log 2>&1; step racecheck $?
D="$B/ulysses-bench --decode --min-split-rows 1024 --splits 16"
timeout 60 $D --seq 8192,32768,131072,1048576 --json $R/t1.json > $R/t1.log 2>&1; step t1 $?
timeout 40 $D --seq 8192,131072 --decode-tokens 4 --json $R/t4.json > $R/t4.log 2>&1; step t4 $?
timeout 40 $D --seq 131072 --batch 8 --ragged > $R/b8_ragged.log 2>&1; step b8 $?
timeout 60 /usr/local/cuda/bin/ncu -k regex:"split_kv" -c 1 --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,smsp__inst_executed.sum,sm__cycles_active.avg,gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed" $B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --seq 1048576 --split-kernel built_in --iters 1 > $R/ncu_stalls.txt 2>&1; step ncu $?
