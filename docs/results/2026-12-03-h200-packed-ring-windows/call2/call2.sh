#!/usr/bin/env bash
# Call 2 (23rd session): ring and hybrid with packed documents under sliding windows (each chunk
# pair as an unmasked call and one masked on the window's edge): the packed loopback cases, sweep
# draws of only such plans, then the bench rows that skipped ring before.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 150 $B/test_gpu_ulysses --gtest_filter='*Packed*' > $R/ulysses_packed.log 2>&1; echo "packed rc $?" >> $R/rc.txt
ULYSSES_SWEEP_MATCH='thd !window=(-1,-1) !ulysses !allgather' ULYSSES_SWEEP_CASES=40 timeout 150 $B/test_gpu_sweep > $R/gpu_sweep_packed_windows.log 2>&1; echo "sweep rc $?" >> $R/rc.txt
for n in 8 64; do
  timeout 120 $B/ulysses-bench --cp 1,2,4 --transport loopback --seq 32768,131072 --varlen $n --window 1024,-1 --seed 7 --strategy ulysses,ring,allgather --chunks 1 --iters 3 --json $R/packed_window_$n.json > $R/packed_window_$n.log 2>&1; echo "bench $n rc $?" >> $R/rc.txt
done
timeout 60 $B/ulysses-bench --cp 2 --transport loopback --seq 32768 --varlen 8 --window 1024,-1 --seed 7 --strategy ring --chunks 1 --iters 3 --trace-calls > $R/trace_ring_window.log 2>&1; echo "trace rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
