#!/usr/bin/env bash
# Call 1 (43rd session, 2x H200): issue 3's overlap rows -- head chunks pipelined with the kernel,
# saved heads (every chunk in flight) and saved lse with two in flight, over NCCL and copy engines.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
B=.carry/bin
t0=$(date +%s)
{ nvidia-smi -L; nvidia-smi topo -m | head -4; nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv; } > $R/gpu.txt 2>&1
timeout 330 $B/ulysses-bench --seq 8192,32768,131072 --strategy ulysses --saved heads --chunks 1,2,4 --transport nccl,peer --iters 5 --json $R/heads.json > $R/heads.log 2>&1
echo "heads rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt
pack
timeout 220 $B/ulysses-bench --seq 8192,32768,131072 --strategy ulysses --saved lse --chunks 2,4 --in-flight 2 --transport nccl,peer --iters 5 --json $R/lse2.json > $R/lse2.log 2>&1
echo "lse2 rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt
