#!/usr/bin/env bash
# Call 3 (24th session): ring merges and sums over the rows a call's documents span, and the cuDNN
# backend's forward stages fp32 O only over them: cuDNN's VarlenRows cases, every ring/hybrid/
# all-gather loopback case, then the 32k packed rows again (per_sequence vs stream, with and without
# a window) and a trace of the stream row.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 60 $B/test_gpu_cudnn --gtest_filter='Blocks/CudnnVarlenRows*' > $R/cudnn_rows.log 2>&1; echo "cudnn rows rc $?" >> $R/rc.txt
timeout 200 $B/test_gpu_ulysses --gtest_filter='*DeviceLoopbackRing*' > $R/ring_family.log 2>&1; echo "ring family rc $?" >> $R/rc.txt
for n in 8 64; do
  for w in -1 1024; do
    timeout 60 $B/ulysses-bench --cp 2,4 --transport loopback --seq 32768 --varlen $n --window $w,-1 --seed 7 --strategy ring,allgather --packed-sharding per_sequence,stream --chunks 1 --iters 3 --json $R/spans_32k_${n}_w$w.json > $R/spans_32k_${n}_w$w.log 2>&1; echo "bench $n $w rc $?" >> $R/rc.txt
  done
done
timeout 45 $B/ulysses-bench --cp 2 --transport loopback --seq 32768 --varlen 64 --seed 7 --strategy ring --packed-sharding stream --chunks 1 --iters 3 --trace-calls > $R/trace_stream_64.log 2>&1; echo "trace rc $?" >> $R/rc.txt
ULYSSES_SWEEP_MATCH='sharding=stream' ULYSSES_SWEEP_CASES=60 timeout 60 $B/test_gpu_sweep > $R/gpu_sweep_stream.log 2>&1; echo "sweep rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
