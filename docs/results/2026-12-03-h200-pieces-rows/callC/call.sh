#!/usr/bin/env bash
# Call C (28th session): call B's logs past the 8-file limit came back empty; the 32k old/new and
# ring rows again, tarred.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
common="--transport loopback --no-causal --window 128,128 --chunks 1 --varlen 8 --seed 7 --packed-sharding stream"
timeout 45 stdbuf -oL $B/ulysses-bench-old --cp 1,2 --seq 32768 $common --iters 5 --strategy ulysses,allgather,ring --trace-calls > $R/packed_32k_old.log 2>&1; echo "32k old rc $?" >> $R/rc.txt
timeout 45 stdbuf -oL $B/ulysses-bench --cp 1,2 --seq 32768 $common --iters 5 --strategy ulysses,allgather,ring --trace-calls --json $R/packed_32k.json > $R/packed_32k.log 2>&1; echo "32k new rc $?" >> $R/rc.txt
ring="--transport loopback --chunks 1 --varlen 64 --seed 7 --cp 2 --seq 131072 --strategy ring --iters 3"
timeout 30 stdbuf -oL $B/ulysses-bench-old $ring > $R/ring_64docs_old.log 2>&1; echo "ring old rc $?" >> $R/rc.txt
timeout 30 stdbuf -oL $B/ulysses-bench $ring --json $R/ring_64docs.json > $R/ring_64docs.log 2>&1; echo "ring new rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
