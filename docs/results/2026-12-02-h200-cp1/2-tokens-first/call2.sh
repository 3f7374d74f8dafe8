#!/usr/bin/env bash
# Call 2 (17th session): merge/finalize rows tokens-first where the LSE is head-major. Layout suite
# (both LSE orders), the probes before (eaa2c3c's kernels) and after, the sinks suites, packed and
# windowed sinks rows and ring at cp = 2 before/after; then cp = 1 plan rows at 128k.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin; A=.carry/adhoc
nvidia-smi -L > $R/gpu.txt
timeout 40 $B/test_gpu_layout > $R/gpu_layout.log 2>&1; echo "layout rc $?" >> $R/rc.txt
for v in before after; do
  for p in finalizeprobe mergeprobe; do timeout 30 $A/$p-$v > $R/${p}_$v.txt 2>&1; echo "$p $v rc $?" >> $R/rc.txt; done
done
for v in before after; do
  bin=$B/ulysses-bench; [[ $v == before ]] && bin=$A/ulysses-bench-before
  timeout 40 stdbuf -oL $bin --device gpu --cp 1 --seq 32768 --varlen 64 --seed 7 --sinks --strategy ulysses --saved lse --iters 9 --json $R/${v}_packed_sinks.json > $R/${v}_packed_sinks.log 2>&1; echo "$v packed_sinks rc $?" >> $R/rc.txt
  timeout 40 stdbuf -oL $bin --device gpu --cp 1 --seq 32768 --window 128,-1 --sinks --strategy ulysses --saved lse --iters 9 --json $R/${v}_w128_sinks.json > $R/${v}_w128_sinks.log 2>&1; echo "$v w128_sinks rc $?" >> $R/rc.txt
  timeout 60 stdbuf -oL $bin --device gpu --cp 2 --transport loopback --seq 32768 --sinks --strategy ring --iters 5 --json $R/${v}_ring_sinks.json > $R/${v}_ring_sinks.log 2>&1; echo "$v ring_sinks rc $?" >> $R/rc.txt
done
timeout 60 $B/test_gpu_cudnn --gtest_filter='*sinks*:*RaggedSinks*' > $R/gpu_cudnn_sinks.log 2>&1; echo "cudnn sinks rc $?" >> $R/rc.txt
timeout 90 $B/test_gpu_ulysses --gtest_filter='*sinks*:*Sinks*:*ring*:*Ring*' > $R/gpu_ulysses_sinks_ring.log 2>&1; echo "ulysses sinks ring rc $?" >> $R/rc.txt
timeout 100 stdbuf -oL $B/ulysses-bench --device gpu --cp 1 --seq 131072 --strategy ulysses --saved heads,lse --iters 3 --json $R/after_128k.json > $R/after_128k.log 2>&1; echo "after 128k rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
