#!/usr/bin/env bash
# Call A (30th session): ring with the packed stream under a window runs each pair of different
# chunks over the band's rows only (reach(), w + 1 a side instead of c). Element-wise tests
# (8e5c986's with_vector, not yet run on a GPU), ring's packed loopback cases, old (8e5c986) vs
# new bench on 32k packed documents under window 1024, then sweep draws of stream + window.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
nvidia-smi -L > $R/gpu.txt
timeout 60 $B/test_gpu_layout --gtest_filter='GpuElementwise.*' > $R/layout.log 2>&1; echo "layout rc $?" >> $R/rc.txt
timeout 150 $B/test_gpu_ulysses --gtest_filter='PackedStream/*:Packed/*' > $R/ring_packed.log 2>&1; echo "ring packed rc $?" >> $R/rc.txt
pack
for n in 8 64; do
  A="--cp 2,4 --seq 32768 --transport loopback --window 1024,-1 --chunks 1 --varlen $n --seed 7 --packed-sharding stream --iters 3 --strategy ring,allgather"
  timeout 90 stdbuf -oL $B/ulysses-bench-old $A > $R/win_${n}_old.log 2>&1; echo "old $n rc $?" >> $R/rc.txt
  timeout 90 stdbuf -oL $B/ulysses-bench $A --json $R/win_${n}.json > $R/win_${n}.log 2>&1; echo "new $n rc $?" >> $R/rc.txt
  pack
done
T="--cp 2 --seq 32768 --transport loopback --window 1024,-1 --chunks 1 --varlen 8 --seed 7 --packed-sharding stream --iters 3 --strategy ring --trace-calls"
timeout 60 stdbuf -oL $B/ulysses-bench-old $T > $R/trace_8_old.log 2>&1; echo "trace old rc $?" >> $R/rc.txt
timeout 60 stdbuf -oL $B/ulysses-bench $T > $R/trace_8.log 2>&1; echo "trace new rc $?" >> $R/rc.txt
pack
ULYSSES_SWEEP_MATCH="sharding=stream !window=(-1,-1)" ULYSSES_SWEEP_CASES=2000 timeout 100 $B/test_gpu_sweep > $R/sweep.log 2>&1; echo "sweep rc $? (124 by design)" >> $R/rc.txt
