#!/usr/bin/env bash
# Sixtieth session, one GPU: the final library (3c80b63): decode and layout GPU suites, the Ulysses
# chunk and stream cases, and the Python decode tests.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
B=.carry/bin
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $OUT/rc.txt; }
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit,driver_version,clocks.max.memory --format=csv > $OUT/gpu.txt 2>&1
timeout 200 $B/test_gpu_decode > $OUT/decode.log 2>&1; step decode $?
timeout 60 $B/test_gpu_layout > $OUT/layout.log 2>&1; step layout $?
timeout 120 $B/test_gpu_ulysses --gtest_filter='*Chunk*:*chunk*:GpuStreams.*' > $OUT/ulysses.log 2>&1; step ulysses $?
timeout 120 env -C tests/python PYTHONPATH=$PWD/python ULYSSES_LIBRARY=$PWD/$B/libulysses_c.so /opt/torch/.venv/bin/python3 -m unittest test_decode test_c_api > $OUT/python.log 2>&1; step python $?
for f in decode layout ulysses; do grep -E "^\[  (PASSED|FAILED) \]|tests? from .* ran|FAILED" $OUT/$f.log | tail -3; done
tail -3 $OUT/python.log
cat $OUT/rc.txt
