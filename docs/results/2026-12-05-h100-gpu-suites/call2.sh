#!/usr/bin/env bash
# Fifty-ninth session, one GPU: the 36 test_gpu_cudnn cases the fifty-eighth session's limit cut
# off (the 26 it passed excluded), then fresh test_gpu_sweep draws on main's final library.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit,driver_version --format=csv > $OUT/gpu.txt 2>&1
# The 26 names call 1 passed (its cudnn.log), excluded.
FILTER=Cudnn.AccumulatedGradientsAddToTheRunningSums:Cudnn.PackedGqaGradientsInWideRows:Cudnn.PackedMixedDimsFromStridedViews:Cudnn.PackedWorkspaceFollowsTheTokens:Cudnn.RaggedOffsetsPast2To31Elements:Cudnn.RaggedSinksPast2To31Elements:Cudnn.DenseViewsPast2To31Elements:Cudnn.DenseBatchPast2To31Elements:Cudnn.DenseHeadsPast2To31Elements:Cudnn.DenseSinksPast2To31Elements:Cudnn.UnsplittableBackwardRefusedAtPlanTime:Cudnn.UnsupportedRequestsNameTheFeature:Cudnn.GraphsAreBuiltOncePerShape:Features/CudnnVsReference.WithinTwiceThePlainError/bf16_d128_mha_causal:Features/CudnnVsReference.WithinTwiceThePlainError/fp16_d64_gqa_full:Features/CudnnVsReference.WithinTwiceThePlainError/bf16_d128_gqa_causal_window:Features/CudnnVsReference.WithinTwiceThePlainError/bf16_d64_mqa_window_both:Features/CudnnVsReference.WithinTwiceThePlainError/bf16_d128_gqa_two_sided_sinks_b2:Features/CudnnVsReference.WithinTwiceThePlainError/bf16_d64_window_right_of_one:Features/CudnnVsReference.WithinTwiceThePlainError/bf16_d64_window_right_past_the_sequence:Features/CudnnVsReference.WithinTwiceThePlainError/fp16_d64_window_right_only:Features/CudnnVsReference.WithinTwiceThePlainError/bf16_d128_gqa_causal_sinks:Features/CudnnVsReference.WithinTwiceThePlainError/fp16_d64_sinks_full:Features/CudnnVsReference.WithinTwiceThePlainError/bf16_d128_varlen_causal_gqa:Features/CudnnVsReference.WithinTwiceThePlainError/fp16_d64_varlen_window:Features/CudnnVsReference.WithinTwiceThePlainError/bf16_d128_varlen_gqa_two_sided_sinks
timeout 320 .carry/bin/test_gpu_cudnn --gtest_filter="-$FILTER" > $OUT/cudnn_rest.log 2>&1
echo "cudnn_rest rc $?" | tee $OUT/rc.txt
echo "OK $(grep -c '^\[       OK' $OUT/cudnn_rest.log) FAILED $(grep -c '^\[  FAILED' $OUT/cudnn_rest.log)"
grep -E "tests? from .* ran|^\[  FAILED" $OUT/cudnn_rest.log | tail -5
ULYSSES_SWEEP_CASES=100000 timeout 150 .carry/bin/test_gpu_sweep > $OUT/sweep.log 2>&1
echo "sweep rc $?" | tee -a $OUT/rc.txt
echo "draws ok $(grep -c "^ok " $OUT/sweep.log)"; grep -E "^FAIL|^\[  FAILED|mismatch" $OUT/sweep.log | head -5; tail -3 $OUT/sweep.log
