#!/usr/bin/env bash
# Call 3 (20th session): GPU suites in full at ac2dbc3's tree (held_bytes/release_held): layout,
# decode, multi-GPU on one GPU, ulysses.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 30 $B/test_gpu_layout > $R/gpu_layout.log 2>&1; echo "layout rc $?" >> $R/rc.txt
timeout 60 $B/test_gpu_decode > $R/gpu_decode.log 2>&1; echo "decode rc $?" >> $R/rc.txt
timeout 60 $B/test_multigpu > $R/multigpu.log 2>&1; echo "multigpu rc $?" >> $R/rc.txt
timeout 300 $B/test_gpu_ulysses > $R/gpu_ulysses.log 2>&1; echo "ulysses rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
