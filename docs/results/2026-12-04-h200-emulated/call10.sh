#!/usr/bin/env bash
# Call 10 (45th session, 1x H200): the plan packs a rank's own rows where they arrive when the
# communicator copies_own_rows() (device loopback, peer copies): the device-loopback Ulysses and
# hybrid cases and the one-GPU multi-GPU cases; then emulate.cc at 8k, 390 GB/s + 10 us, "ce"
# (the own rows through the exchange) against "ce-own" (packed in place), alternated twice.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
for round in 1 2; do
  step ce8k_$round 15 .carry/probe/emulate_new 8192 390 10 6 ce
  step own8k_$round 15 .carry/probe/emulate_new 8192 390 10 6 ce-own
done
step tests_ulysses 170 .carry/bin/test_gpu_ulysses --gtest_filter='*DeviceLoopbackUlysses*:GpuStreams*:GpuSingleRank*:*Hybrid*:*hybrid*'
step tests_multigpu 40 .carry/bin/test_multigpu
