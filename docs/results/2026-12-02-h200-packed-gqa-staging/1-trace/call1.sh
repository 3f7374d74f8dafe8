#!/usr/bin/env bash
# Call 1 (19th session, 8fc5f2e + the packed-GQA dK/dV staging): where packed rows' "other" at
# cp = 2 came from (ad-hoc trace of the old backend: every cuDNN graph with its workspace, every
# overflow growth), the new test on the old and new backend, the packed bench rows after, and
# the packed/ragged GPU tests.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin; T=.carry/adhoc/bench-trace
nvidia-smi -L > $R/gpu.txt
timeout 45 stdbuf -oL $T --cp 1,2 --transport loopback --seq 32768 --varlen 64 --seed 7 --strategy ulysses --saved heads --chunks 1 --iters 1 > $R/trace_packed64.log 2>&1; echo "trace64 rc $?" >> $R/rc.txt
timeout 25 .carry/before/test_gpu_cudnn_old --gtest_filter='Cudnn.PackedGqaGradientsInWideRows' > $R/test_old.log 2>&1; echo "test old rc $?" >> $R/rc.txt
timeout 25 $B/test_gpu_cudnn --gtest_filter='Cudnn.PackedGqaGradientsInWideRows' > $R/test_new.log 2>&1; echo "test new rc $?" >> $R/rc.txt
timeout 60 stdbuf -oL $B/ulysses-bench --cp 1,2 --transport loopback --seq 32768 --varlen 64 --seed 7 --strategy ulysses --saved heads,lse --chunks 1,2,4 --iters 2 --json $R/packed_cp2.json > $R/packed_cp2.log 2>&1; echo "packed cp2 rc $?" >> $R/rc.txt
timeout 75 stdbuf -oL $T --cp 1,2 --transport loopback --seq 131072 --varlen 8 --seed 7 --strategy ulysses --saved heads,lse --chunks 1 --iters 2 --json $R/before_128k_8docs.json > $R/before_128k_8docs.log 2>&1; echo "before 128k rc $?" >> $R/rc.txt
timeout 75 stdbuf -oL $B/ulysses-bench --cp 1,2 --transport loopback --seq 131072 --varlen 8 --seed 7 --strategy ulysses --saved heads,lse --chunks 1 --iters 2 --json $R/after_128k_8docs.json > $R/after_128k_8docs.log 2>&1; echo "after 128k rc $?" >> $R/rc.txt
timeout 110 $B/test_gpu_ulysses --gtest_filter='*varlen*:*thd*:*Packed*:*packed*' > $R/gpu_ulysses_packed.log 2>&1; echo "ulysses packed rc $?" >> $R/rc.txt
timeout 150 $B/test_gpu_cudnn --gtest_filter='*varlen*:*Varlen*:*Ragged*' > $R/gpu_cudnn_packed.log 2>&1; echo "cudnn packed rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
