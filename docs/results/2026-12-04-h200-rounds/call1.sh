#!/usr/bin/env bash
# Call 1 (46th session, 1x H200): the device-loopback Ulysses cases on the current tree (own rows
# in place since 07cc6f7), ulysses-bench --rounds 3 (8k, 32k: cp = 1 and loopback cp = 2 in turn;
# 128k: cp = 1 and the one-rank plan), and the one-GPU multi-GPU cases.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
nvidia-smi --query-gpu=name,clocks.sm,power.draw,power.limit,temperature.gpu --format=csv > $R/env.txt 2>&1
B=.carry/bin/ulysses-bench
step rounds_8k_32k 170 $B --seq 8192,32768 --cp 1,2 --transport loopback --strategy ulysses --chunks 1,2 --rounds 3 --iters 5 --json $R/rounds_8k_32k.json
step rounds_128k 110 $B --seq 131072 --cp 1 --strategy ulysses --chunks 1 --rounds 3 --iters 3 --json $R/rounds_128k.json
step tests_ulysses 170 .carry/bin/test_gpu_ulysses --gtest_filter='*DeviceLoopbackUlysses*:GpuStreams*:GpuSingleRank*:*Hybrid*:*hybrid*'
step tests_multigpu 45 .carry/bin/test_multigpu
