#!/usr/bin/env bash
# Call 1 (16th session): sinks never reach cuDNN (dense calls fold them in too). First the three
# all-gather packed cases left unverified with NaN padding last session; then the cuDNN suite on
# 9.19 (all but the two unchanged dense past-2^31 tests) and its sinks cases on the system 9.14
# (no version rule any more), the Ulysses sinks cases, Python; then dense cp = 1 with and without
# sinks, before (e95bfb3) and after, and a traced 64-document 32k row with and without sinks.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
NEW=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 60 $B/test_gpu_cudnn --gtest_filter='*sinks*:*Sinks*:*Unsplittable*' > $R/sys_gpu_cudnn.log 2>&1; echo "sys cudnn rc $?" >> $R/rc.txt
export LD_LIBRARY_PATH=$NEW
timeout 60 $B/test_gpu_ulysses --gtest_filter='AllGatherPacked/*' > $R/allgather_packed.log 2>&1; echo "allgather packed rc $?" >> $R/rc.txt
timeout 200 $B/test_gpu_cudnn --gtest_filter='-*DenseBatchPast*:*DenseHeadsPast*:*DenseViewsPast*' > $R/gpu_cudnn.log 2>&1; echo "cudnn rc $?" >> $R/rc.txt
timeout 120 $B/test_gpu_ulysses --gtest_filter='*sinks*:*Sinks*' > $R/gpu_ulysses_sinks.log 2>&1; echo "ulysses sinks rc $?" >> $R/rc.txt
py=/opt/torch/.venv/bin/python3
timeout 60 env -C tests/python PYTHONPATH="$PWD/python" ULYSSES_LIBRARY="$PWD/$B/libulysses_c.so" $py -m unittest -v test_torch_gpu > $R/python.log 2>&1; echo "python rc $?" >> $R/rc.txt
for v in before after; do
  bench=$B/ulysses-bench; [[ $v == before ]] && bench=.carry/adhoc/ulysses-bench-before
  for s in "" "--sinks"; do
    [[ $v == before && -z $s ]] && continue  # the sink-free path did not change
    n=${v}_dense${s:+_sinks}
    timeout 60 stdbuf -oL $bench --device gpu --cp 1 --seq 8192,32768,131072 --iters 5 $s --json $R/$n.json > $R/$n.log 2>&1; echo "bench $n rc $?" >> $R/rc.txt
    timeout 40 stdbuf -oL $bench --device gpu --cp 1 --seq 32768 --window 128,-1 --iters 5 $s --json $R/${n}_w128.json > $R/${n}_w128.log 2>&1; echo "bench ${n}_w128 rc $?" >> $R/rc.txt
  done
done
for s in "" "--sinks"; do
  n=trace_packed64${s:+_sinks}
  timeout 60 stdbuf -oL $B/ulysses-bench --device gpu --cp 1 --seq 32768 --varlen 64 --seed 7 --iters 5 --trace-calls $s --json $R/$n.json > $R/$n.log 2>&1; echo "bench $n rc $?" >> $R/rc.txt
done
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
