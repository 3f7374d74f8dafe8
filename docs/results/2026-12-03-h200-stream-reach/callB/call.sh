#!/usr/bin/env bash
# Call B (30th session): old (8e5c986) vs new (6c8bedd) ring/hybrid with the packed stream under
# windows: 128k 8 documents window 1024 at cp 1,2; 32k 8 documents 128,128 without causal (pairs on
# both sides) at cp 2,4; hybrid 2x2 under window 1024 at cp 4. Then stream + window sweep draws.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
nvidia-smi -L > $R/gpu.txt
run() {  # name, args
  local n=$1; shift
  timeout 120 stdbuf -oL $B/ulysses-bench-old "$@" > $R/${n}_old.log 2>&1; echo "$n old rc $?" >> $R/rc.txt
  timeout 120 stdbuf -oL $B/ulysses-bench "$@" --json $R/$n.json > $R/$n.log 2>&1; echo "$n new rc $?" >> $R/rc.txt
  pack
}
C="--transport loopback --chunks 1 --seed 7 --packed-sharding stream --iters 3"
run w1024_128k --cp 1,2 --seq 131072 --varlen 8 --window 1024,-1 --strategy ring,allgather $C
run two_sided_32k --cp 2,4 --seq 32768 --varlen 8 --no-causal --window 128,128 --strategy ring,allgather $C
run hybrid_32k --cp 4 --seq 32768 --varlen 8 --window 1024,-1 --strategy hybrid --ulysses-degree 2 $C
ULYSSES_SWEEP_MATCH="sharding=stream !window=(-1,-1)" ULYSSES_SWEEP_CASES=2000 timeout 120 $B/test_gpu_sweep > $R/sweep.log 2>&1; echo "sweep rc $? (124 by design)" >> $R/rc.txt
