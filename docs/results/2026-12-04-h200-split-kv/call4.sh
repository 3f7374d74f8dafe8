#!/usr/bin/env bash
# Call 4 (39th session): where a decode step's GPU time goes, kernel by kernel (ncu), local vs built_in.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; }
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: $NCU" > $R/which.txt
for k in local built_in; do for L in 8192 131072; do
  timeout 60 $NCU --metrics gpu__time_duration.sum,dram__bytes_read.sum,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum,sm__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active --csv \
    $B/ulysses-bench --decode --seq $L --splits 16 --min-split-rows 1024 --split-kernel $k --iters 2 > $R/ncu_${k}_$L.csv 2> $R/ncu_${k}_$L.err; step "ncu $k $L" $?
done; done
