#!/usr/bin/env bash
# Call A (33rd session): cuDNN's packed backward with head_dim_v != head_dim. First the backend
# without its padded staging (test_gpu_cudnn_raw: the refusal lifted, views as given) to see what
# cuDNN does with Q and O of different token strides; then the backend with Q, O, dO, dQ staged
# in rows of one stride (test_gpu_cudnn, whole), its packed cases under the system cuDNN 9.14,
# the strategies' packed MLA cases on the device loopback, the other packed cases, and the GPU
# sweep's packed draws with Dv.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
CUDNN919=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
export LD_LIBRARY_PATH=$CUDNN919
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
nvidia-smi -L > $R/gpu.txt
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; }
MIXED='Features/CudnnVsReference.*mla_varlen*:Features/CudnnVsReference.*_v128_varlen*:Features/CudnnVsReference.*_v64_varlen*:Cudnn.PackedMixedDims*:Blocks/CudnnVarlenRows.*mla*'
timeout 60 $B/test_gpu_cudnn_raw --gtest_filter="$MIXED" > $R/raw_mixed.log 2>&1; step "raw (no padded staging) mixed packed" $?
pack
timeout 200 $B/test_gpu_cudnn > $R/cudnn_all.log 2>&1; step "test_gpu_cudnn all (9.19)" $?
pack
LD_LIBRARY_PATH= timeout 60 $B/test_gpu_cudnn --gtest_filter='Features/*:Blocks/*' > $R/cudnn_914.log 2>&1; step "test_gpu_cudnn features+rows (9.14)" $?
pack
timeout 120 $B/test_gpu_ulysses --gtest_filter='Mla/DeviceLoopbackRing.*:Gpu/DeviceLoopbackUlysses.*mla*:Gpu/DeviceLoopbackUlysses.*wider_v*' > $R/mla_all.log 2>&1; step "mla ring/hybrid/allgather/ulysses" $?
pack
timeout 200 $B/test_gpu_ulysses --gtest_filter='Packed/*:PackedStream/*:AllGatherPacked/*:Gpu/DeviceLoopbackUlysses.*varlen*:GpuSingleRank.*' > $R/packed_other.log 2>&1; step "other packed cases" $?
pack
ULYSSES_SWEEP_MATCH="Dv= thd" ULYSSES_SWEEP_CASES=2000 timeout 70 $B/test_gpu_sweep > $R/sweep_dv_thd.log 2>&1; step "sweep Dv thd (124 by design)" $?
