#!/usr/bin/env bash
# Call 5 (45th session, 1x H200): emulate.cc with the exchanges traced too (each step's spans in
# order), 8k at both link models and 32k, to see where the rest of a step goes.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
which nsys ncu > $R/profilers.txt 2>&1
step emu8k_335 60 .carry/probe/emulate_new 8192 335 30 4
step emu8k_390 60 .carry/probe/emulate_new 8192 390 10 4
step emu32k_335 100 .carry/probe/emulate_new 32768 335 30 3
