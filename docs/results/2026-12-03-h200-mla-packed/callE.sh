#!/usr/bin/env bash
# Call E (33rd session): the final backend (Q, O, dO, dQ staged in rows of one stride with
# head_dim_v != head_dim; packed mixed backward refused before cuDNN 9.19 and past head_dim 192):
# the packed mixed cuDNN cases, Ulysses' packed MLA cases, the same cuDNN cases under 9.14, the
# strategies' MLA cases, then the GPU sweep's packed draws with Dv. Short on device time: most
# telling first, packed after each step. (The strategies' MLA suite and the sweep: no device time left.)
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
MIXED='Features/CudnnVsReference.*mla*:Features/CudnnVsReference.*_v128*:Features/CudnnVsReference.*_v64*:Features/CudnnVsReference.*_v72*:Cudnn.PackedMixedDims*:Blocks/CudnnVarlenRows.*mla*'
timeout 60 $B/test_gpu_cudnn --gtest_filter="$MIXED" > $R/mixed_919.log 2>&1; step "mixed (9.19)" $?
pack
timeout 30 $B/test_gpu_ulysses --gtest_filter='Gpu/DeviceLoopbackUlysses.*mla_varlen*:Gpu/DeviceLoopbackUlysses.*wider_v_varlen*' > $R/ulysses_packed_mla.log 2>&1; step "ulysses packed mla" $?
pack
LD_LIBRARY_PATH= timeout 30 $B/test_gpu_cudnn --gtest_filter="$MIXED" > $R/mixed_914.log 2>&1; step "mixed (9.14)" $?
pack
#timeout 90 $B/test_gpu_ulysses --gtest_filter='Mla/DeviceLoopbackRing.*' > $R/mla_ring.log 2>&1; step "mla ring/hybrid/allgather" $?
pack
#ULYSSES_SWEEP_MATCH="Dv= thd" ULYSSES_SWEEP_CASES=2000 timeout 40 $B/test_gpu_sweep > $R/sweep_dv_thd.log 2>&1; step "sweep Dv thd (124 by design)" $?
