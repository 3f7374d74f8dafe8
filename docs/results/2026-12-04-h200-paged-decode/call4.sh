#!/usr/bin/env bash
# Call 4 (41st session): ncu of the split-KV kernel at 1M keys, unpaged and paged (16, 1024 rows,
# pages in order): instructions, stalls, table loads' hit rates.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; }
M="regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,smsp__inst_executed.sum,sm__cycles_active.avg,gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum,l1tex__t_sector_pipe_lsu_mem_global_op_ld_hit_rate.pct,smsp__inst_executed_op_global_ld.sum,launch__registers_per_thread"
for p in 0 16 1024; do
  timeout 60 /usr/local/cuda/bin/ncu -k regex:"split_kv" -c 1 --metrics "$M" $B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --seq 1048576 --split-kernel built_in --iters 1 --page-size $p --page-order in_order > $R/ncu_p$p.txt 2>&1; step ncu_p$p $?
done
