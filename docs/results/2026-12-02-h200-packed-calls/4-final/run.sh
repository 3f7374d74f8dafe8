#!/usr/bin/env bash
# Ad-hoc call B: every GPU suite (gpu_session.sh tests-only), then 8 and 64 packed documents at 128k,
# cp 2 loopback, ulysses / ring / allgather, traced call by call.
set -uo pipefail
git rev-parse --short HEAD > $OUT/head.txt 2>/dev/null
mkdir -p $OUT/tests $OUT/bench
OUT=$OUT/tests bash scripts/gpu_session.sh tests-only > $OUT/tests/session.txt 2>&1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
for n in 8 64; do
  timeout 130 .carry/bin/ulysses-bench --device gpu --seq 131072 --varlen $n --seed 7 --cp 2 \
    --transport loopback --strategy ulysses,ring,allgather --chunks 1 --iters 3 --trace-calls \
    --json $OUT/bench/packed_v$n.json > $OUT/bench/packed_v$n.txt 2>&1
  echo "varlen $n rc $?" >> $OUT/bench/rc.txt
done
