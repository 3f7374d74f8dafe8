#!/usr/bin/env bash
# Call 3 (39th session): where the cp.async ring faults (compute-sanitizer memcheck).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer /usr/local/cuda*/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)
echo "sanitizer: $CS" > $R/which.txt; ls -d /usr/local/cuda* >> $R/which.txt 2>&1
timeout 200 $CS --tool memcheck --print-limit 5 $B/test_gpu_decode --gtest_filter='*p1_one_token_gqa_built_in*' > $R/memcheck.log 2>&1; echo "rc $?" >> $R/which.txt
