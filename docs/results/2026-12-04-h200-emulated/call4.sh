#!/usr/bin/env bash
# Call 4 (45th session, 1x H200): emulate.cc at the link's best measured rate (390 GB/s, 10 us) at
# 8k and 32k; and 128k once more with the binaries of 9199aa6 (chunks 3 = 2, 1, 1) and the new
# one (1, 2, 1), in the other order than call 2.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
step emu8k_390 60 .carry/probe/emulate_new 8192 390 10 8
step emu32k_390 100 .carry/probe/emulate_new 32768 390 10 6
step emu128k_new 150 .carry/probe/emulate_new 131072 335 30 2
step emu128k_old 150 .carry/probe/emulate_old 131072 335 30 2
