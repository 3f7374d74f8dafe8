#!/usr/bin/env bash
# Call D (33rd session): the final backend (no staging for head_dim_v != head_dim; packed mixed
# backward refused before cuDNN 9.19 and for dims not multiples of 16). First a probe of which
# packed mixed dims cuDNN 9.19 gets right (probe/: the multiple-of-16 rule lifted, extra cases);
# then the packed mixed cases (9.19 and 9.14), the strategies' MLA cases and Ulysses' packed cases
# on the device loopback, the GPU sweep's packed draws with Dv, and where a packed MLA step's
# memory goes (cp 1, --trace-calls).
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
timeout 60 .carry/probe/test_gpu_cudnn --gtest_filter='Features/CudnnVsReference.*p_*:Features/CudnnVsReference.*v72*' > $R/probe.log 2>&1; step "probe (rule lifted)" $?
pack
MIXED='Features/CudnnVsReference.*mla*:Features/CudnnVsReference.*_v128*:Features/CudnnVsReference.*_v64*:Features/CudnnVsReference.*_v72*:Cudnn.PackedMixedDims*:Blocks/CudnnVarlenRows.*mla*'
timeout 60 $B/test_gpu_cudnn --gtest_filter="$MIXED" > $R/mixed_919.log 2>&1; step "mixed (9.19)" $?
LD_LIBRARY_PATH= timeout 60 $B/test_gpu_cudnn --gtest_filter="$MIXED" > $R/mixed_914.log 2>&1; step "mixed (9.14)" $?
pack
timeout 140 $B/test_gpu_ulysses --gtest_filter='Mla/DeviceLoopbackRing.*:Gpu/DeviceLoopbackUlysses.*mla*:Gpu/DeviceLoopbackUlysses.*wider_v*:Gpu/DeviceLoopbackUlysses.*varlen*' > $R/ulysses_mla.log 2>&1; step "strategies mla + ulysses packed" $?
pack
T="--cp 1 --seq 32768 --varlen 8 --transport loopback --heads 32 --kv-heads 32 --seed 7 --iters 3 --strategy ulysses --trace-calls --no-check"
timeout 40 stdbuf -oL $B/ulysses-bench $T --head-dim 192 --head-dim-v 128 > $R/trace_mla.log 2>&1; step "trace packed mla cp1" $?
pack
ULYSSES_SWEEP_MATCH="Dv= thd" ULYSSES_SWEEP_CASES=2000 timeout 50 $B/test_gpu_sweep > $R/sweep_dv_thd.log 2>&1; step "sweep Dv thd (124 by design)" $?
