#!/usr/bin/env bash
# Call 1 (20th session): held_bytes()/release_held() on the GPU — the cuDNN wide-rows test and the
# one-rank misaligned-views test (release, then a fourth checked round), the full cuDNN-packed and
# single-rank suites, then the bench's memory lines with "held" split from "other": packed
# 64 documents of 32k and 8 of 128k at cp = 1, 2 (loopback), dense 32k.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 90 $B/test_gpu_cudnn --gtest_filter='*varlen*:*Varlen*:*Ragged*:*Packed*' > $R/gpu_cudnn_packed.log 2>&1; echo "cudnn packed rc $?" >> $R/rc.txt
timeout 90 $B/test_gpu_ulysses --gtest_filter='GpuSingleRank.*:GpuStreams.*' > $R/gpu_ulysses_single.log 2>&1; echo "ulysses single rc $?" >> $R/rc.txt
timeout 60 stdbuf -oL $B/ulysses-bench --cp 1,2 --transport loopback --seq 32768 --varlen 64 --seed 7 --strategy ulysses --saved heads,lse --chunks 1,4 --iters 3 --json $R/packed_32k.json > $R/packed_32k.log 2>&1; echo "packed 32k rc $?" >> $R/rc.txt
timeout 80 stdbuf -oL $B/ulysses-bench --cp 1,2 --transport loopback --seq 131072 --varlen 8 --seed 7 --strategy ulysses --saved heads --chunks 1 --iters 2 --json $R/packed_128k.json > $R/packed_128k.log 2>&1; echo "packed 128k rc $?" >> $R/rc.txt
timeout 40 stdbuf -oL $B/ulysses-bench --cp 1,2 --transport loopback --seq 32768 --strategy ulysses --saved heads --chunks 1 --iters 3 --json $R/dense_32k.json > $R/dense_32k.log 2>&1; echo "dense 32k rc $?" >> $R/rc.txt
py=/opt/torch/.venv/bin/python3
timeout 40 env -C tests/python PYTHONPATH="$PWD/python" ULYSSES_LIBRARY="$PWD/$B/libulysses_c.so" $py -m unittest -v test_torch_gpu test_c_api > $R/python.log 2>&1; echo "python rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
