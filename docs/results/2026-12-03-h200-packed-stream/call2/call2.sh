#!/usr/bin/env bash
# Call 2 (24th session): packed stream sharding for ring (PackedSharding::kStream) under a
# window and at 128k tokens, per_sequence vs stream beside allgather; more GPU sweep draws.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
for n in 8 64; do
  timeout 70 $B/ulysses-bench --cp 1,2,4 --transport loopback --seq 32768 --varlen $n --window 1024,-1 --seed 7 --strategy ring,allgather --packed-sharding per_sequence,stream --chunks 1 --iters 3 --json $R/stream_window_32k_$n.json > $R/stream_window_32k_$n.log 2>&1; echo "window 32k $n rc $?" >> $R/rc.txt
done
for n in 64 8; do
  timeout 160 $B/ulysses-bench --cp 1,2 --transport loopback --seq 131072 --varlen $n --seed 7 --strategy ring,allgather --packed-sharding per_sequence,stream --chunks 1 --iters 3 --json $R/stream_128k_$n.json > $R/stream_128k_$n.log 2>&1; echo "128k $n rc $?" >> $R/rc.txt
done
ULYSSES_SWEEP_MATCH='sharding=stream' ULYSSES_SWEEP_CASES=60 timeout 80 $B/test_gpu_sweep > $R/gpu_sweep_stream.log 2>&1; echo "sweep rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
