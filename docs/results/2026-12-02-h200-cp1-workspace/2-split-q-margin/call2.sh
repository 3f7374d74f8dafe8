#!/usr/bin/env bash
# Call 2 (18th session): cp = 1 head-sharded saves keep Q rows apart from K|V rows (Q in O's token
# stride: no staging in cuDNN's packed backward); cuDNN's workspace without the 1/8 margin over
# what canonical graphs report. before = 9129e35's bench, after = the working tree's.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 60 $B/test_gpu_ulysses --gtest_filter='GpuSingleRank.*:*p1_*' > $R/gpu_ulysses_p1.log 2>&1; echo "ulysses p1 rc $?" >> $R/rc.txt
timeout 120 $B/test_gpu_cudnn > $R/gpu_cudnn.log 2>&1; echo "cudnn rc $?" >> $R/rc.txt
PK="--seq 32768 --varlen 64 --seed 7 --strategy ulysses --saved heads,lse --iters 9"
DN="--cp 1,2 --transport loopback --seq 8192,32768,131072 --strategy ulysses --saved heads,lse --iters 2"
for v in before after; do
  bin=$B/ulysses-bench; [ $v = before ] && bin=.carry/before/ulysses-bench
  timeout 45 stdbuf -oL $bin --cp 1 $PK --json $R/${v}_packed.json > $R/${v}_packed.log 2>&1; echo "$v packed rc $?" >> $R/rc.txt
done
for v in after before; do
  bin=$B/ulysses-bench; [ $v = before ] && bin=.carry/before/ulysses-bench
  timeout 45 stdbuf -oL $bin --cp 1,2 --transport loopback --seq 32768 --varlen 64 --seed 7 --strategy ulysses --saved heads,lse --iters 2 --json $R/${v}_packed_cp2.json > $R/${v}_packed_cp2.log 2>&1; echo "$v packed cp2 rc $?" >> $R/rc.txt
  timeout 70 stdbuf -oL $bin $DN --json $R/${v}_dense.json > $R/${v}_dense.log 2>&1; echo "$v dense rc $?" >> $R/rc.txt
done
py=/opt/torch/.venv/bin/python3
timeout 40 env -C tests/python PYTHONPATH="$PWD/python" ULYSSES_LIBRARY="$PWD/$B/libulysses_c.so" $py -m unittest -v test_torch_gpu > $R/python.log 2>&1; echo "python rc $?" >> $R/rc.txt
timeout 200 $B/test_gpu_ulysses --gtest_filter='-GpuSingleRank.*:*p1_*' > $R/gpu_ulysses_rest.log 2>&1; echo "ulysses rest rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
