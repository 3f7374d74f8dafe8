#!/usr/bin/env bash
# Call C (30th session): the dense ring path after reach() took over its pair cut (same blocks
# expected): every dense and fp8 ring/hybrid loopback case, the ring memory-growth case, old vs
# new bench on dense 32k under window 1024 (ring, hybrid), then sweep draws of dense ring/hybrid
# plans under windows.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
nvidia-smi -L > $R/gpu.txt
timeout 150 $B/test_gpu_ulysses --gtest_filter='Gpu/DeviceLoopbackRing.*:Fp8/DeviceLoopbackRing.*:GpuStreams.*Ring' > $R/ring_dense.log 2>&1; echo "ring dense rc $?" >> $R/rc.txt
pack
A="--cp 2,4 --seq 32768 --transport loopback --window 1024,-1 --chunks 1 --seed 7 --iters 3 --strategy ring,hybrid --ulysses-degree 2"
timeout 90 stdbuf -oL $B/ulysses-bench-old $A > $R/dense_window_old.log 2>&1; echo "old rc $?" >> $R/rc.txt
timeout 90 stdbuf -oL $B/ulysses-bench $A --json $R/dense_window.json > $R/dense_window.log 2>&1; echo "new rc $?" >> $R/rc.txt
pack
ULYSSES_SWEEP_MATCH="bshd !window=(-1,-1) !ulysses !allgather" ULYSSES_SWEEP_CASES=2000 timeout 100 $B/test_gpu_sweep > $R/sweep.log 2>&1; echo "sweep rc $? (124 by design)" >> $R/rc.txt
