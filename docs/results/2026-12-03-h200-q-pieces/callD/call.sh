#!/usr/bin/env bash
# Call D (29th session): the final tree's bench notes (skipped hybrid rows and chunk counts named)
# and the whole cuDNN suite with the new dSinks check.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
nvidia-smi -L > $R/gpu.txt
timeout 60 stdbuf -oL $B/ulysses-bench --cp 1,2 --transport loopback --seq 8192 --strategy ulysses,hybrid \
  --ulysses-degree 2 --chunks 1,8 --iters 2 > $R/bench_notes.log 2>&1; echo "bench rc $?" >> $R/rc.txt
pack
timeout 140 $B/test_gpu_cudnn --gtest_filter='*WithinTwice*:*Sinks*:*sinks*' > $R/cudnn.log 2>&1; echo "cudnn rc $?" >> $R/rc.txt
