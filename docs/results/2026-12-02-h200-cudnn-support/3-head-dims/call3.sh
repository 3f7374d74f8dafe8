#!/usr/bin/env bash
# Call 3 (14th session): the cuDNN suite's backward-rule plumbing on both cuDNN copies (9.14 must
# now refuse packed backward past head_dim 128 and still check forward), then what head_dim costs:
# cuDNN at cp = 1 with Hq x D = 4096 (64 x 64, 32 x 128, 16 x 256), and head_dim 256 through
# Ulysses (dense and 8 packed documents, cp = 2 on the device loopback, checked against cp = 1).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
NEW=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
timeout 100 $B/test_gpu_cudnn --gtest_filter='-*Past2To31*' > $R/sys_gpu_cudnn.log 2>&1; echo "sys cudnn rc $?" >> $R/rc.txt
export LD_LIBRARY_PATH=$NEW
timeout 100 $B/test_gpu_cudnn --gtest_filter='-*Past2To31*' > $R/gpu_cudnn.log 2>&1; echo "cudnn rc $?" >> $R/rc.txt
for hd in "64 64 16" "128 32 8" "256 16 4"; do
  set -- $hd
  timeout 120 stdbuf -oL $B/ulysses-bench --device gpu --cp 1 --seq 8192,32768,131072 --head-dim $1 --heads $2 --kv-heads $3 \
    --iters 3 --json $R/d$1.json > $R/bench_d$1.log 2>&1; echo "bench d$1 rc $?" >> $R/rc.txt
done
timeout 120 stdbuf -oL $B/ulysses-bench --device gpu --cp 1,2 --transport loopback --seq 32768 --head-dim 256 --heads 16 --kv-heads 4 \
  --strategy ulysses --chunks 1 --iters 3 --json $R/d256_cp2.json > $R/bench_d256_cp2.log 2>&1; echo "bench d256 cp2 rc $?" >> $R/rc.txt
timeout 120 stdbuf -oL $B/ulysses-bench --device gpu --cp 1,2 --transport loopback --seq 32768 --varlen 8 --seed 7 --head-dim 256 --heads 16 --kv-heads 4 \
  --strategy ulysses --chunks 1 --iters 3 --json $R/d256_packed.json > $R/bench_d256_packed.log 2>&1; echo "bench d256 packed rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
