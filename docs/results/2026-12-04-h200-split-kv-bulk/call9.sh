#!/usr/bin/env bash
# Call 9 (40th session): the final tree's decode tests (after the width dispatch through split_kv_layout).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
timeout 110 .carry/bin/test_gpu_decode > $R/test_gpu_decode.log 2>&1; echo "test_gpu_decode rc $?" >> $R/rc.txt
