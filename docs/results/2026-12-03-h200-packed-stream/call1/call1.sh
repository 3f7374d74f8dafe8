#!/usr/bin/env bash
# Call 1 (24th session): ring and hybrid with the packed stream sharded like one sequence
# (PackedSharding::kStream): the packed loopback cases (new PackedStream and the per-sequence ones),
# GPU sweep draws of only such plans, then bench rows per_sequence vs stream beside allgather.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 170 $B/test_gpu_ulysses --gtest_filter='*Packed*' > $R/ulysses_packed.log 2>&1; echo "packed rc $?" >> $R/rc.txt
ULYSSES_SWEEP_MATCH='sharding=stream' ULYSSES_SWEEP_CASES=40 timeout 100 $B/test_gpu_sweep > $R/gpu_sweep_stream.log 2>&1; echo "sweep rc $?" >> $R/rc.txt
for n in 8 64; do
  timeout 100 $B/ulysses-bench --cp 1,2,4 --transport loopback --seq 32768 --varlen $n --seed 7 --strategy ring,allgather --packed-sharding per_sequence,stream --chunks 1 --iters 3 --json $R/stream_32k_$n.json > $R/stream_32k_$n.log 2>&1; echo "bench 32k $n rc $?" >> $R/rc.txt
done
timeout 60 $B/ulysses-bench --cp 2 --transport loopback --seq 32768 --varlen 64 --seed 7 --strategy ring --packed-sharding stream --chunks 1 --iters 3 --trace-calls > $R/trace_stream_64.log 2>&1; echo "trace rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
