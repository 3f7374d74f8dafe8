#!/usr/bin/env bash
# Call 2 (46th session, 1x H200): 24 random configurations through cuDNN on the device loopback
# (test_gpu_sweep: Ulysses plans now pack a rank's own rows in place there), the layout kernels,
# the ring / hybrid / all-gather device-loopback cases call 1 did not reach, and the one-GPU
# ring cases of test_multigpu.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
step tests_sweep 120 .carry/bin/test_gpu_sweep
step tests_layout 40 .carry/bin/test_gpu_layout
step tests_ring 300 .carry/bin/test_gpu_ulysses --gtest_filter='-*DeviceLoopbackUlysses*:GpuStreams*:GpuSingleRank*:Packed/DeviceLoopbackRing.*hybrid_2x2_gqa_causal:Fp8/DeviceLoopbackRing.*hybrid*'
step tests_multigpu_ring 80 .carry/bin/test_multigpu --gtest_filter='Gpus/PeerCopyRing*:AllGpus/NcclRingGraph*'
