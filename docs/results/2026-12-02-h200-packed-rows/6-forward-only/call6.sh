#!/usr/bin/env bash
# Call 6 (20th session): forward-only problems sized without backward's workspace, and the
# workspace test's bound corrected (packed GQA's full-head partials: 1.8x dense at head_dim 64):
# the workspace test, the packed cuDNN cases, decode (forward-only problems), the inference and
# one-rank Ulysses cases, the torch GPU tests.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 60 $B/test_gpu_cudnn --gtest_filter='*PackedWorkspace*:*varlen*:*Varlen*:*d72*' > $R/gpu_cudnn.log 2>&1; echo "cudnn rc $?" >> $R/rc.txt
timeout 60 $B/test_gpu_decode > $R/gpu_decode.log 2>&1; echo "decode rc $?" >> $R/rc.txt
timeout 40 $B/test_gpu_ulysses --gtest_filter='GpuStreams.*:GpuSingleRank.*' > $R/gpu_ulysses.log 2>&1; echo "ulysses rc $?" >> $R/rc.txt
py=/opt/torch/.venv/bin/python3
timeout 40 env -C tests/python PYTHONPATH="$PWD/python" ULYSSES_LIBRARY="$PWD/$B/libulysses_c.so" $py -m unittest -v test_torch_gpu > $R/python.log 2>&1; echo "python rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
