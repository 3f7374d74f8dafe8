#!/usr/bin/env bash
# Call 3 (23rd session): the 128k rows call 2's time limit cut off (ring with packed documents under
# a window, beside ulysses and allgather), and every ring/hybrid/all-gather loopback case again on
# the new tree.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
for n in 8 64; do
  timeout 170 $B/ulysses-bench --cp 1,2 --transport loopback --seq 131072 --varlen $n --window 1024,-1 --seed 7 --strategy ulysses,ring,allgather --chunks 1 --iters 3 --json $R/packed_window_128k_$n.json > $R/packed_window_128k_$n.log 2>&1; echo "bench 128k $n rc $?" >> $R/rc.txt
done
timeout 200 $B/test_gpu_ulysses --gtest_filter='*DeviceLoopbackRing*' > $R/ulysses_ring_family.log 2>&1; echo "ring family rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
