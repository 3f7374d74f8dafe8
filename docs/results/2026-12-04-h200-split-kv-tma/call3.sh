#!/usr/bin/env bash
# Call 3 (42nd session): where cuDNN and the built-in kernel (now with tensor copies) cross over,
# for auto's threshold (kAutoBuiltInKeys, 64k keys): 64k-1M keys, B = 1 and B = 8, 1 and 4
# tokens, MLA; Python GPU tests on the new kernel.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; }
C="$B/ulysses-bench --decode --min-split-rows 1024 --splits 16 --split-kernel local,built_in"
for k in 1 2; do
  timeout 90 $C --seq 65536,131072,262144,524288,1048576 --json $R/cross_t1_$k.json > $R/cross_t1_$k.log 2>&1; step cross_t1_$k $?
done
timeout 90 $C --seq 65536,131072,262144,524288 --decode-tokens 4 > $R/cross_t4.log 2>&1; step cross_t4 $?
timeout 90 $C --seq 16384,32768,65536,131072 --batch 8 > $R/cross_b8.log 2>&1; step cross_b8 $?
timeout 90 $C --seq 32768,65536,131072 --batch 8 --ragged > $R/cross_b8_ragged.log 2>&1; step cross_b8_ragged $?
timeout 90 $C --seq 65536,131072,262144,524288 --head-dim 192 --head-dim-v 128 > $R/cross_mla.log 2>&1; step cross_mla $?
timeout 150 env -C tests/python PYTHONPATH=$PWD/python ULYSSES_LIBRARY=$PWD/$B/libulysses_c.so /opt/torch/.venv/bin/python3 -m unittest -v test_torch_gpu test_c_api test_decode > $R/python.log 2>&1; step python $?
