#!/usr/bin/env bash
# Call D (37th session): the 5 MLA ring/hybrid loopback cases call C's timeout cut, at 8ecfd9d.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
nvidia-smi -L > $R/gpu.txt
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; }
M=Mla/DeviceLoopbackRing.WithinTwiceTheSingleGpuError
timeout 200 $B/test_gpu_ulysses --gtest_filter="$M/hybrid_2x2_packed_gqa_causal:$M/ring_p4_stream_mqa_causal_wider_v:$M/fp8_ring_p2_gqa_causal_sinks:$M/fp8_hybrid_2x2_gqa_causal:$M/fp8_ring_p2_packed_gqa_causal" > $R/mla_ring_rest.log 2>&1; step "the 5 MLA ring/hybrid cases call C did not reach" $?
