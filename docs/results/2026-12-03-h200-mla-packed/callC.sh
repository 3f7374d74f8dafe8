#!/usr/bin/env bash
# Call C (33rd session): the GPU sweep's one failure of call A (ring cp 8, packed stream, D 256,
# Dv 72, window (12,-1): NaN in dK) replayed with the backend as built (Q, O, dO, dQ in padded
# rows), without the padded staging (raw/) and with the staging buffers zeroed first (zero/), with
# cudnn-frontend's log; then the packed mixed-dims cuDNN cases (as built and raw; the system cuDNN
# 9.14 too), the rest of test_gpu_cudnn (but the three ~60 s dense 2^31 tests), the corrected
# Ulysses case, and the GPU sweep's packed draws with Dv again.
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
SEED=14728424571756415689
for v in bin raw zero; do
  CUDNN_FRONTEND_LOG_INFO=1 CUDNN_FRONTEND_LOG_FILE=$R/replay_${v}_fe.log ULYSSES_SWEEP_SEED=$SEED timeout 60 .carry/$v/test_gpu_sweep > $R/replay_$v.log 2>&1; step "replay $v" $?
done
pack
MIXED='Features/CudnnVsReference.*mla_varlen*:Features/CudnnVsReference.*_v128_varlen*:Features/CudnnVsReference.*_v64_varlen*:Features/CudnnVsReference.*_v72_varlen*:Cudnn.PackedMixedDims*:Blocks/CudnnVarlenRows.*mla*'
timeout 60 $B/test_gpu_cudnn --gtest_filter="$MIXED" > $R/mixed_bin.log 2>&1; step "mixed packed (as built)" $?
timeout 60 .carry/raw/test_gpu_cudnn --gtest_filter="$MIXED" > $R/mixed_raw.log 2>&1; step "mixed packed (raw)" $?
LD_LIBRARY_PATH= timeout 60 $B/test_gpu_cudnn --gtest_filter="$MIXED" > $R/mixed_914.log 2>&1; step "mixed packed (as built, cuDNN 9.14)" $?
pack
timeout 40 $B/test_gpu_ulysses --gtest_filter='Gpu/DeviceLoopbackUlysses.*mla_varlen*:Gpu/DeviceLoopbackUlysses.*wider_v_varlen*' > $R/ulysses_mla_varlen.log 2>&1; step "ulysses packed mla" $?
pack
timeout 150 $B/test_gpu_cudnn --gtest_filter="-Cudnn.Dense*Past2To31Elements:$MIXED" > $R/cudnn_rest.log 2>&1; step "test_gpu_cudnn rest" $?
pack
ULYSSES_SWEEP_MATCH="Dv= thd" ULYSSES_SWEEP_CASES=2000 timeout 90 $B/test_gpu_sweep > $R/sweep_dv_thd.log 2>&1; step "sweep Dv thd (124 by design)" $?
