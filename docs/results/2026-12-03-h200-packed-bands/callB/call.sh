#!/usr/bin/env bash
# Call B (27th session): packed documents under window 128,128, old binary (926fa40: each
# document's backward whole) then the new (causal bands per document), every kernel call timed.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
common="--transport loopback --no-causal --window 128,128 --chunks 1 --varlen 8 --seed 7 --packed-sharding stream"
timeout 60 stdbuf -oL $B/ulysses-bench-old --cp 1,2,4 --seq 32768 $common --iters 5 --strategy ulysses,allgather,ring --trace-calls > $R/packed_32k_old.log 2>&1; echo "32k old rc $?" >> $R/rc.txt
timeout 60 stdbuf -oL $B/ulysses-bench --cp 1,2,4 --seq 32768 $common --iters 5 --strategy ulysses,allgather,ring --trace-calls --json $R/packed_32k.json > $R/packed_32k.log 2>&1; echo "32k new rc $?" >> $R/rc.txt
timeout 100 stdbuf -oL $B/ulysses-bench-old --cp 1,2 --seq 131072 $common --iters 3 --strategy ulysses > $R/packed_128k_old.log 2>&1; echo "128k old rc $?" >> $R/rc.txt
timeout 100 stdbuf -oL $B/ulysses-bench --cp 1,2 --seq 131072 $common --iters 3 --strategy ulysses,allgather --trace-calls --json $R/packed_128k.json > $R/packed_128k.log 2>&1; echo "128k new rc $?" >> $R/rc.txt
timeout 60 stdbuf -oL $B/ulysses-bench --cp 1 --seq 32768 --transport loopback --no-causal --window 128,128 --chunks 1 --iters 5 --strategy ulysses --trace-calls > $R/dense_32k.log 2>&1; echo "dense 32k rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
