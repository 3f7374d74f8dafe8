#!/usr/bin/env bash
# Call 2 (19th session): compact-rows check by token stride only (call 1 staged cp = 1's compact
# dK/dV whose batch stride differed), canonical packed probe written out: the packed cuDNN and
# Ulysses tests, the packed bench rows at 32k (64 documents) and 128k (8 documents).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 90 $B/test_gpu_cudnn --gtest_filter='*varlen*:*Varlen*:*Ragged*:*Packed*' > $R/gpu_cudnn_packed.log 2>&1; echo "cudnn packed rc $?" >> $R/rc.txt
timeout 60 stdbuf -oL $B/ulysses-bench --cp 1,2 --transport loopback --seq 32768 --varlen 64 --seed 7 --strategy ulysses --saved heads,lse --chunks 1,2,4 --iters 3 --json $R/packed_32k.json > $R/packed_32k.log 2>&1; echo "packed 32k rc $?" >> $R/rc.txt
timeout 80 stdbuf -oL $B/ulysses-bench --cp 1,2 --transport loopback --seq 131072 --varlen 8 --seed 7 --strategy ulysses --saved heads,lse --chunks 1,4 --iters 2 --json $R/packed_128k.json > $R/packed_128k.log 2>&1; echo "packed 128k rc $?" >> $R/rc.txt
timeout 110 $B/test_gpu_ulysses --gtest_filter='*varlen*:*thd*:*Packed*:*packed*' > $R/gpu_ulysses_packed.log 2>&1; echo "ulysses packed rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
