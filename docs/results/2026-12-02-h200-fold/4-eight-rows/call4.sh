#!/usr/bin/env bash
# Call 4 (16th session): finalize with eight 16-bit rows per warp. The layout suite, the merge probe
# at e95bfb3, at f7bd39e (v2) and now (v3), the cuDNN and Ulysses sinks cases (finalize is the sink
# fold and ring's last step), traced sinks rows, Python.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 60 $B/test_gpu_layout > $R/gpu_layout.log 2>&1; echo "layout rc $?" >> $R/rc.txt
for v in before v2 v3; do timeout 30 .carry/adhoc/mergeprobe-$v > $R/mergeprobe_$v.txt 2>&1; echo "probe $v rc $?" >> $R/rc.txt; done
timeout 60 $B/test_gpu_cudnn --gtest_filter='*sinks*:*RaggedSinks*' > $R/gpu_cudnn_sinks.log 2>&1; echo "cudnn sinks rc $?" >> $R/rc.txt
timeout 40 stdbuf -oL $B/ulysses-bench --device gpu --cp 1 --seq 32768 --varlen 64 --seed 7 --iters 5 --trace-calls --sinks --json $R/trace_packed64_sinks.json > $R/trace_packed64_sinks.log 2>&1; echo "bench trace_packed64_sinks rc $?" >> $R/rc.txt
timeout 40 stdbuf -oL $B/ulysses-bench --device gpu --cp 1 --seq 32768 --window 128,-1 --iters 5 --sinks --trace-calls --json $R/dense_sinks_w128.json > $R/dense_sinks_w128.log 2>&1; echo "bench dense_sinks_w128 rc $?" >> $R/rc.txt
py=/opt/torch/.venv/bin/python3
timeout 40 env -C tests/python PYTHONPATH="$PWD/python" ULYSSES_LIBRARY="$PWD/$B/libulysses_c.so" $py -m unittest -v test_torch_gpu > $R/python.log 2>&1; echo "python rc $?" >> $R/rc.txt
timeout 90 $B/test_gpu_ulysses --gtest_filter='*sinks*:*Sinks*' > $R/gpu_ulysses_sinks.log 2>&1; echo "ulysses sinks rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
