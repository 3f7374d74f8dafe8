#!/usr/bin/env bash
# Call 3 (18th session, at 16ca248): the rest of test_gpu_cudnn (call 2 ran out of time after its
# first six), the last test_gpu_ulysses case call 2 cut, and the cp = 1 rows at 128k.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 30 $B/test_gpu_ulysses --gtest_filter='AllGatherPacked/DeviceLoopbackRing.*p2_gqa_causal_lse_only_fp16' > $R/gpu_ulysses_last.log 2>&1; echo "ulysses last rc $?" >> $R/rc.txt
timeout 35 stdbuf -oL $B/ulysses-bench --cp 1 --seq 131072 --strategy ulysses --saved heads,lse --iters 2 --json $R/after_128k.json > $R/after_128k.log 2>&1; echo "128k rc $?" >> $R/rc.txt
timeout 200 $B/test_gpu_cudnn --gtest_filter='-Cudnn.AccumulatedGradientsAddToTheRunningSums:Cudnn.RaggedOffsetsPast2To31Elements:Cudnn.RaggedSinksPast2To31Elements:Cudnn.DenseViewsPast2To31Elements:Cudnn.DenseBatchPast2To31Elements:Cudnn.DenseHeadsPast2To31Elements' > $R/gpu_cudnn_rest.log 2>&1; echo "cudnn rest rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
