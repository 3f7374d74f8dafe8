#!/usr/bin/env bash
# Call C (35th session): the uneven GPU cases after the CUDA-graph case moved to NCCL (the device
# loopback cannot be captured), NCCL's graph cases on this one GPU, and sweep draws of hybrid and of
# ulysses plans on the final library code.
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
timeout 90 $B/test_gpu_ulysses --gtest_filter='Uneven/*' > $R/uneven_cases.log 2>&1; step "uneven GPU cases" $?
timeout 90 $B/test_multigpu --gtest_filter='AllGpus/NcclUlyssesGraph.*' > $R/nccl_graph.log 2>&1; step "NCCL graph cases (one GPU)" $?
pack
ULYSSES_SWEEP_MATCH="hybrid" ULYSSES_SWEEP_CASES=2000 timeout 80 $B/test_gpu_sweep > $R/sweep_hybrid.log 2>&1; step "sweep hybrid (124 by design)" $?
pack
ULYSSES_SWEEP_MATCH="ulysses" ULYSSES_SWEEP_CASES=2000 timeout 100 $B/test_gpu_sweep > $R/sweep_ulysses.log 2>&1; step "sweep ulysses (124 by design)" $?
