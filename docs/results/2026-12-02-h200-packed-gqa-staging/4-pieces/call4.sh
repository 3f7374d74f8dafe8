#!/usr/bin/env bash
# Call 4 (19th session): finalize16 / sink_grad16 with one piece mapping (piece_of): the layout
# suite (both kernels bitwise against the host and the 8-byte kernels), the cuDNN sinks cases, and
# steps with sinks before (HEAD's bench) and after, alternating.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 60 $B/test_gpu_layout > $R/gpu_layout.log 2>&1; echo "layout rc $?" >> $R/rc.txt
timeout 60 $B/test_gpu_cudnn --gtest_filter='*sinks*:*Sinks*' > $R/gpu_cudnn_sinks.log 2>&1; echo "cudnn sinks rc $?" >> $R/rc.txt
for v in before after before after; do
  bin=$B/ulysses-bench; [[ $v == before ]] && bin=.carry/before/ulysses-bench-head
  timeout 30 stdbuf -oL $bin --cp 1 --seq 32768 --sinks --saved lse --iters 9 >> $R/${v}_sinks.log 2>&1; echo "$v rc $?" >> $R/rc.txt
done
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
