#!/usr/bin/env bash
# Call 4 (17th session): finalize and sink_grad in 16-byte pieces for 16-bit rows. Layout suite
# (D 128 cases added), the row probe before (207576d) and after, sinks rows before/after (dense
# window 128, 64 packed documents), the cuDNN and Ulysses sinks cases.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin; A=.carry/adhoc
nvidia-smi -L > $R/gpu.txt
timeout 40 $B/test_gpu_layout > $R/gpu_layout.log 2>&1; echo "layout rc $?" >> $R/rc.txt
for v in before after before after; do timeout 20 $A/rowprobe-$v >> $R/rowprobe_$v.txt 2>&1; echo "rowprobe $v rc $?" >> $R/rc.txt; done
for v in before after; do
  bin=$B/ulysses-bench; [[ $v == before ]] && bin=$A/ulysses-bench-head
  timeout 60 stdbuf -oL $bin --device gpu --cp 1 --seq 32768 --window 128,-1 --sinks --strategy ulysses --saved lse --iters 9 --trace-calls --json $R/${v}_w128_sinks.json > $R/${v}_w128_sinks.log 2>&1; echo "$v w128_sinks rc $?" >> $R/rc.txt
  timeout 60 stdbuf -oL $bin --device gpu --cp 1 --seq 32768 --varlen 64 --seed 7 --sinks --strategy ulysses --saved lse --iters 9 --json $R/${v}_packed_sinks.json > $R/${v}_packed_sinks.log 2>&1; echo "$v packed_sinks rc $?" >> $R/rc.txt
done
timeout 60 $B/test_gpu_cudnn --gtest_filter='*sinks*:*RaggedSinks*' > $R/gpu_cudnn_sinks.log 2>&1; echo "cudnn sinks rc $?" >> $R/rc.txt
timeout 90 $B/test_gpu_ulysses --gtest_filter='*sinks*:*Sinks*' > $R/gpu_ulysses_sinks.log 2>&1; echo "ulysses sinks rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
