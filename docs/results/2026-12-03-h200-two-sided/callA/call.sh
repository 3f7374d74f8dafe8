#!/usr/bin/env bash
# Call A (26th session): all-gather with windows without causal. The loopback cases (dense and
# packed, old and new), a GPU sweep of non-causal windowed all-gather draws, then bench rows:
# dense 32k window 128,128 with the old binary (2b90c8d) and the new (backward's square plus the
# keys before and after), packed 8 documents of 32k window 128,128 (refused before) beside ulysses
# and ring with the stream, every kernel call timed.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 150 $B/test_gpu_ulysses --gtest_filter='AllGather*/DeviceLoopbackRing*' > $R/allgather_cases.log 2>&1; echo "allgather cases rc $?" >> $R/rc.txt
ULYSSES_SWEEP_MATCH="allgather window !causal" ULYSSES_SWEEP_CASES=60 timeout 100 $B/test_gpu_sweep > $R/sweep.log 2>&1; echo "sweep rc $?" >> $R/rc.txt
common="--transport loopback --no-causal --window 128,128 --chunks 1 --iters 5"
timeout 60 $B/ulysses-bench-old --cp 1,2,4 --seq 32768 $common --strategy allgather --trace-calls > $R/dense_old.log 2>&1; echo "dense old rc $?" >> $R/rc.txt
timeout 60 $B/ulysses-bench --cp 1,2,4 --seq 32768 $common --strategy ulysses,allgather --trace-calls --json $R/dense_new.json > $R/dense_new.log 2>&1; echo "dense new rc $?" >> $R/rc.txt
timeout 90 $B/ulysses-bench --cp 1,2,4 --seq 32768 --varlen 8 --seed 7 $common --strategy ulysses,allgather,ring --packed-sharding stream --trace-calls --json $R/packed_32k.json > $R/packed_32k.log 2>&1; echo "packed 32k rc $?" >> $R/rc.txt
timeout 120 $B/ulysses-bench --cp 2,4 --seq 131072 --varlen 8 --seed 7 --transport loopback --no-causal --window 1024,1024 --chunks 1 --iters 3 --strategy ulysses,allgather,ring --packed-sharding stream --json $R/packed_128k.json > $R/packed_128k.log 2>&1; echo "packed 128k rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
