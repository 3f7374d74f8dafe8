#!/usr/bin/env bash
# Call 2 (16th session): merge and finalize take rows in groups of four with 4-element accesses
# (the sink fold cost 0.56 ms of forward at 64 documents of 32k: ~1 TB/s). The new layout test, the
# merge probe before/after, the cuDNN sinks cases, the whole Ulysses suite (ring merges every step),
# Python (and the cuDNN sinks cases on the system 9.14); then the sinks rows of call 1 and ring at cp = 2 (loopback), before and after.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
# The system cuDNN 9.14: dense sinks had a 9.13 rule, now none (call 1 ran only its packed case).
timeout 60 $B/test_gpu_cudnn --gtest_filter='Features/*sinks*' > $R/sys_gpu_cudnn_sinks.log 2>&1; echo "sys cudnn sinks rc $?" >> $R/rc.txt
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
timeout 90 $B/test_gpu_layout > $R/gpu_layout.log 2>&1; echo "layout rc $?" >> $R/rc.txt
for v in before after; do timeout 60 .carry/adhoc/mergeprobe-$v > $R/mergeprobe_$v.txt 2>&1; echo "probe $v rc $?" >> $R/rc.txt; done
timeout 90 $B/test_gpu_cudnn --gtest_filter='*sinks*:*RaggedSinks*' > $R/gpu_cudnn_sinks.log 2>&1; echo "cudnn sinks rc $?" >> $R/rc.txt
for s in "" "--sinks"; do
  n=trace_packed64${s:+_sinks}
  timeout 60 stdbuf -oL $B/ulysses-bench --device gpu --cp 1 --seq 32768 --varlen 64 --seed 7 --iters 5 --trace-calls $s --json $R/$n.json > $R/$n.log 2>&1; echo "bench $n rc $?" >> $R/rc.txt
done
timeout 60 stdbuf -oL $B/ulysses-bench --device gpu --cp 1 --seq 8192,32768 --iters 5 --sinks --json $R/dense_sinks.json > $R/dense_sinks.log 2>&1; echo "bench dense_sinks rc $?" >> $R/rc.txt
timeout 40 stdbuf -oL $B/ulysses-bench --device gpu --cp 1 --seq 32768 --window 128,-1 --iters 5 --sinks --trace-calls --json $R/dense_sinks_w128.json > $R/dense_sinks_w128.log 2>&1; echo "bench dense_sinks_w128 rc $?" >> $R/rc.txt
for v in before after; do
  bench=$B/ulysses-bench; [[ $v == before ]] && bench=.carry/adhoc/ulysses-bench-before
  timeout 90 stdbuf -oL $bench --device gpu --cp 2 --transport loopback --strategy ring --chunks 1 --seq 32768,131072 --iters 3 --sinks --json $R/ring_$v.json > $R/ring_$v.log 2>&1; echo "bench ring_$v rc $?" >> $R/rc.txt
done
py=/opt/torch/.venv/bin/python3
timeout 60 env -C tests/python PYTHONPATH="$PWD/python" ULYSSES_LIBRARY="$PWD/$B/libulysses_c.so" $py -m unittest -v test_torch_gpu > $R/python.log 2>&1; echo "python rc $?" >> $R/rc.txt
timeout 300 $B/test_gpu_ulysses > $R/gpu_ulysses.log 2>&1; echo "ulysses rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
