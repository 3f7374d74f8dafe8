#!/usr/bin/env bash
# Fifty-ninth session, one GPU: the final decode library (device layouts, slot-major split-KV
# grid, bounded open slots): the decode GPU suite, then eager vs CUDA graph replay rows.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit,driver_version --format=csv > $OUT/gpu.txt 2>&1
timeout 200 .carry/bin/test_gpu_decode > $OUT/decode_tests.log 2>&1
echo "decode tests rc $?" | tee -a $OUT/rc.txt
grep -E "^\[  (PASSED|FAILED) \]|tests? from .* ran" $OUT/decode_tests.log | tail -4
bench() {
  echo "## $*" >> $OUT/bench.log
  timeout 60 .carry/bin/ulysses-bench --decode --split-kernel built_in --seed 7 "$@" 2>&1 | grep -v "^#" >> $OUT/bench.log
  echo "bench rc $? $*" >> $OUT/rc.txt
}
for order in off,on on,off; do
  bench --cuda-graph $order --seq 8192,131072,1048576 --splits 16
  bench --cuda-graph $order --seq 8192 --splits 32
  bench --cuda-graph $order --decode-tokens 4 --seq 131072 --splits 16,32
  bench --cuda-graph $order --batch 8 --ragged --seq 131072 --splits 16
  bench --cuda-graph $order --page-size 16 --seq 131072 --splits 16
done
grep -c PASS $OUT/bench.log; grep -c FAIL $OUT/bench.log; tail -3 $OUT/rc.txt
