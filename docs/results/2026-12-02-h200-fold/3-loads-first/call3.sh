#!/usr/bin/env bash
# Call 3 (16th session): merge and finalize with the rows' data loads issued before the LSE is used
# (lane u owns row u's LSE). The layout suite (its new test fixed), the merge probe before
# (e95bfb3) and now, the cuDNN sinks cases, traced sinks rows, packed 64-document rows with sinks
# through every strategy, Python, then the whole Ulysses suite (ring merges every step).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 90 $B/test_gpu_layout > $R/gpu_layout.log 2>&1; echo "layout rc $?" >> $R/rc.txt
for v in before after; do timeout 60 .carry/adhoc/mergeprobe-$v > $R/mergeprobe_$v.txt 2>&1; echo "probe $v rc $?" >> $R/rc.txt; done
timeout 90 $B/test_gpu_cudnn --gtest_filter='*sinks*:*RaggedSinks*' > $R/gpu_cudnn_sinks.log 2>&1; echo "cudnn sinks rc $?" >> $R/rc.txt
for s in "" "--sinks"; do
  n=trace_packed64${s:+_sinks}
  timeout 60 stdbuf -oL $B/ulysses-bench --device gpu --cp 1 --seq 32768 --varlen 64 --seed 7 --iters 5 --trace-calls $s --json $R/$n.json > $R/$n.log 2>&1; echo "bench $n rc $?" >> $R/rc.txt
done
timeout 60 stdbuf -oL $B/ulysses-bench --device gpu --cp 1 --seq 8192,32768 --iters 5 --sinks --json $R/dense_sinks.json > $R/dense_sinks.log 2>&1; echo "bench dense_sinks rc $?" >> $R/rc.txt
timeout 40 stdbuf -oL $B/ulysses-bench --device gpu --cp 1 --seq 32768 --window 128,-1 --iters 5 --sinks --trace-calls --json $R/dense_sinks_w128.json > $R/dense_sinks_w128.log 2>&1; echo "bench dense_sinks_w128 rc $?" >> $R/rc.txt
timeout 100 stdbuf -oL $B/ulysses-bench --device gpu --cp 1,2 --transport loopback --seq 32768,131072 --varlen 64 --seed 7 \
  --strategy ulysses,ring,allgather --chunks 1 --iters 3 --sinks --json $R/packed64_sinks.json > $R/packed64_sinks.log 2>&1; echo "bench packed64_sinks rc $?" >> $R/rc.txt
py=/opt/torch/.venv/bin/python3
timeout 60 env -C tests/python PYTHONPATH="$PWD/python" ULYSSES_LIBRARY="$PWD/$B/libulysses_c.so" $py -m unittest -v test_torch_gpu > $R/python.log 2>&1; echo "python rc $?" >> $R/rc.txt
timeout 300 $B/test_gpu_ulysses > $R/gpu_ulysses.log 2>&1; echo "ulysses rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
