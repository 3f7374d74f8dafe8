#!/usr/bin/env bash
# Call 2 (15th session): packed sinks folded in after a sink-free cuDNN forward, sink_grad's loads
# in flight together and rows with LSE = -inf skipped. Suites (cuDNN on 9.14's packed cases and
# on 9.19, layout, Ulysses, Python), the sink_grad probe, then call 1's packed rows again.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
NEW=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 90 $B/test_gpu_cudnn --gtest_filter='*varlen*:*Ragged*:*Rows*:*Unsupported*' > $R/sys_gpu_cudnn.log 2>&1; echo "sys cudnn rc $?" >> $R/rc.txt
export LD_LIBRARY_PATH=$NEW
timeout 120 $B/test_gpu_cudnn --gtest_filter='-*Dense*Past2To31*' > $R/gpu_cudnn.log 2>&1; echo "cudnn rc $?" >> $R/rc.txt
timeout 90 $B/test_gpu_layout > $R/gpu_layout.log 2>&1; echo "layout rc $?" >> $R/rc.txt
timeout 60 .carry/adhoc/sinkgrad > $R/sinkgrad.txt 2>&1; echo "sinkgrad rc $?" >> $R/rc.txt
for docs in 8 64; do
  for s in "" "--sinks"; do
    n=packed${docs}${s:+_sinks}
    timeout 100 stdbuf -oL $B/ulysses-bench --device gpu --cp 1,2 --transport loopback --seq 32768,131072 --varlen $docs --seed 7 \
      --strategy ulysses,ring,allgather --chunks 1 --iters 3 $s --json $R/$n.json > $R/$n.log 2>&1; echo "bench $n rc $?" >> $R/rc.txt
  done
done
timeout 220 $B/test_gpu_ulysses > $R/gpu_ulysses.log 2>&1; echo "ulysses rc $?" >> $R/rc.txt
py=/opt/torch/.venv/bin/python3
timeout 60 env -C tests/python PYTHONPATH="$PWD/python" ULYSSES_LIBRARY="$PWD/$B/libulysses_c.so" $py -m unittest -v test_torch_gpu > $R/python.log 2>&1; echo "python rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
