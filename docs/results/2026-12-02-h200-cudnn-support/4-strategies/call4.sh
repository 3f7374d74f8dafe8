#!/usr/bin/env bash
# Call 4 (14th session): head_dim 256 through every strategy (ring, hybrid, all-gather: their
# block calls, LSE merges and fp32 sums at rows of 256), dense and packed, and decoding, each row
# checked against cp = 1 on the device loopback.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
H="--head-dim 256 --heads 16 --kv-heads 4"
timeout 100 stdbuf -oL $B/ulysses-bench --device gpu --cp 1,2 --transport loopback --seq 32768 $H \
  --strategy ring,allgather --chunks 1 --iters 2 --json $R/d256_strategies.json > $R/d256_strategies.log 2>&1; echo "strategies rc $?" >> $R/rc.txt
timeout 60 stdbuf -oL $B/ulysses-bench --device gpu --cp 1,4 --transport loopback --seq 16384 $H \
  --strategy hybrid --ulysses-degree 2 --chunks 1 --iters 2 --json $R/d256_hybrid.json > $R/d256_hybrid.log 2>&1; echo "hybrid rc $?" >> $R/rc.txt
timeout 100 stdbuf -oL $B/ulysses-bench --device gpu --cp 1,2 --transport loopback --seq 32768 --varlen 8 --seed 7 $H \
  --strategy ring,allgather --chunks 1 --iters 2 --json $R/d256_packed.json > $R/d256_packed.log 2>&1; echo "packed rc $?" >> $R/rc.txt
timeout 60 stdbuf -oL $B/ulysses-bench --device gpu --decode --cp 1,2 --transport loopback --seq 32768,131072 $H \
  --json $R/d256_decode.json > $R/d256_decode.log 2>&1; echo "decode rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
