#!/usr/bin/env bash
# Call 7 (44th session, 1x H200): --warmup-ms 0 (two warm-up steps, as before) against the new
# default 500, cp = 1 and the device loopback at 8k/32k, twice each in alternation; 128k cp = 1.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
B=.carry/bin
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active --format=csv -lms 100 > $R/smi.csv 2>&1 &
smi=$!
for i in 1 2; do
  for w in 0 500; do
    step "w${w}_$i" 90 $B/ulysses-bench --transport loopback --cp 2 --seq 8192,32768 --strategy ulysses --saved heads --chunks 1,2 --iters 5 --warmup-ms $w --json $R/w${w}_$i.json
  done
done
step w0_128k 60 $B/ulysses-bench --cp 1 --seq 131072 --strategy ulysses --iters 3 --warmup-ms 0
step w500_128k 60 $B/ulysses-bench --cp 1 --seq 131072 --strategy ulysses --iters 3
kill $smi
