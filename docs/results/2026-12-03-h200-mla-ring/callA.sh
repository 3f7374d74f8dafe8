#!/usr/bin/env bash
# Call A (32nd session): head_dim_v under ring, hybrid and all-gather. The new Mla cases on the
# device loopback first, then every other ring / hybrid / all-gather device-loopback case (their
# group buffers changed shape), Ulysses' MLA cases, and the GPU sweep's draws with Dv (which now
# run ring, hybrid and all-gather plans too).
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
timeout 120 $B/test_gpu_ulysses --gtest_filter='Mla/DeviceLoopbackRing.*' > $R/mla_ring.log 2>&1; step "mla ring/hybrid/allgather" $?
pack
timeout 300 $B/test_gpu_ulysses --gtest_filter='*DeviceLoopbackRing.*:-Mla/*' > $R/ring_all.log 2>&1; step "ring/hybrid/allgather, all other cases" $?
pack
timeout 40 $B/test_gpu_ulysses --gtest_filter='Gpu/DeviceLoopbackUlysses.*mla*' > $R/ulysses_mla.log 2>&1; step "ulysses mla" $?
pack
ULYSSES_SWEEP_MATCH="Dv= !ulysses" ULYSSES_SWEEP_CASES=2000 timeout 80 $B/test_gpu_sweep > $R/sweep_dv.log 2>&1; step "sweep Dv, not ulysses (124 by design)" $?
