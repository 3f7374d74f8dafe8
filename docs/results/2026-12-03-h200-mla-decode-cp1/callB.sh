#!/usr/bin/env bash
# Call B (34th session): the final build's regression: every Ulysses/ring/hybrid/all-gather GPU
# test, the large decode case, and the Python package with PyTorch (C API version 4).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
nvidia-smi -L > $R/gpu.txt
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; }
timeout 60 $B/test_gpu_decode --gtest_filter='DeviceLoopbackDecodeLarge.*' > $R/decode_large.log 2>&1; step "decode large" $?
timeout 120 env -C tests/python PYTHONPATH="$PWD/python" ULYSSES_LIBRARY="$PWD/$B/libulysses_c.so" /opt/torch/.venv/bin/python3 -m unittest -v test_torch_gpu test_torch_cpu test_c_api test_decode > $R/python_torch.log 2>&1; step "python torch" $?
pack
timeout 380 $B/test_gpu_ulysses > $R/gpu_ulysses.log 2>&1; step "test_gpu_ulysses whole" $?
