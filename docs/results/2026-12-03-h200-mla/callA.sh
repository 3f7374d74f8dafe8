#!/usr/bin/env bash
# Call A (31st session): head_dim_v != head_dim (MLA). GPU tests first (layout kernels on heads
# spanning channels, cuDNN vs FP64 with MLA shapes and every earlier feature case, Ulysses on the
# device loopback vs one GPU incl. 7 MLA cases), sweep draws with Dv and with the packed stream
# (which the GPU sweep now really runs), then the bench: MLA (192/128) beside 128/128 at 8k/32k.
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
timeout 60 $B/test_gpu_layout > $R/layout.log 2>&1; step layout $?
timeout 120 $B/test_gpu_cudnn --gtest_filter='Features/*' > $R/cudnn.log 2>&1; step cudnn $?
pack
timeout 150 $B/test_gpu_ulysses --gtest_filter='Gpu/DeviceLoopbackUlysses.*' > $R/ulysses.log 2>&1; step ulysses $?
pack
ULYSSES_SWEEP_MATCH="Dv=" ULYSSES_SWEEP_CASES=2000 timeout 50 $B/test_gpu_sweep > $R/sweep_dv.log 2>&1; step "sweep Dv (124 by design)" $?
ULYSSES_SWEEP_MATCH="sharding=stream" ULYSSES_SWEEP_CASES=2000 timeout 40 $B/test_gpu_sweep > $R/sweep_stream.log 2>&1; step "sweep stream (124 by design)" $?
pack
A="--cp 1,2,4 --seq 8192,32768 --transport loopback --heads 32 --kv-heads 32 --chunks 1 --seed 7 --iters 3 --strategy ulysses"
timeout 100 stdbuf -oL $B/ulysses-bench $A --head-dim 192 --head-dim-v 128 --json $R/mla.json > $R/mla.log 2>&1; step "bench mla" $?
pack
timeout 80 stdbuf -oL $B/ulysses-bench $A --head-dim 128 --json $R/d128.json > $R/d128.log 2>&1; step "bench d128" $?
