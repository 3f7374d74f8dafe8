#!/usr/bin/env bash
# Call 5 (41st session): the split-KV kernel templated on paging (unpaged: the code before pages;
# paged: page rows looked up a tile ahead, divided by multiply-high): decode tests, memcheck, A/B
# against call 1-3's kernel (bin_base: one runtime-branched kernel), ncu at page 16.
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
CS=/usr/local/cuda/bin/compute-sanitizer
timeout 100 $CS --tool memcheck $B/test_gpu_decode --gtest_filter='*one_token*built_in*:*ragged*built_in*' > $R/memcheck.log 2>&1; step memcheck $?
A="--decode --min-split-rows 1024 --splits 16 --split-kernel built_in --page-size 0,1,16,64,256 --seq 131072,1048576"
for k in 1 2; do
  for v in base new; do
    bin=$B/ulysses-bench; [ $v = base ] && bin=.carry/bin_base/ulysses-bench
    timeout 90 $bin $A --json $R/ab_${v}_$k.json > $R/ab_${v}_$k.log 2>&1; step ab_${v}_$k $?
  done
done
M="regex:smsp__average_warps_issue_stalled_(long_scoreboard|wait|short_scoreboard)_per_issue_active\.ratio,smsp__inst_executed.sum,gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,l1tex__t_sector_pipe_lsu_mem_global_op_ld_hit_rate.pct"
timeout 60 /usr/local/cuda/bin/ncu -k regex:"split_kv" -c 1 --metrics "$M" $B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --seq 1048576 --split-kernel built_in --iters 1 --page-size 16 > $R/ncu_p16.txt 2>&1; step ncu_p16 $?
D="$B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --split-kernel built_in --page-size 0,16"
timeout 60 $D --seq 131072 --decode-tokens 4 > $R/t4.log 2>&1; step t4 $?
timeout 60 $D --seq 131072 --batch 8 --ragged > $R/b8_ragged.log 2>&1; step b8 $?
timeout 60 $D --seq 131072 --head-dim 192 --head-dim-v 128 > $R/mla.log 2>&1; step mla $?
timeout 60 $B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --seq 8192,131072 --page-size 0,16 > $R/default_kernels.log 2>&1; step default $?
