#!/usr/bin/env bash
# Call B (29th session): where the strategies' work goes at cp = 2 and 4 on the device loopback
# (hybrid 2 x 2 not measured since the staging rewrite), then a broad random-configuration sweep.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
nvidia-smi -L > $R/gpu.txt
timeout 200 stdbuf -oL $B/ulysses-bench --cp 1,2,4 --transport loopback --seq 8192,32768 \
  --strategy ulysses,ring,hybrid,allgather --ulysses-degree 2 --chunks 1 --iters 5 --seed 7 \
  --trace-calls --json $R/dense.json > $R/dense.log 2>&1; echo "dense rc $?" >> $R/rc.txt; pack
ULYSSES_SWEEP_CASES=2000 timeout 230 $B/test_gpu_sweep > $R/sweep.log 2>&1; echo "sweep rc $?" >> $R/rc.txt
