#!/usr/bin/env bash
# Call 1 (17th session): cp = 1 without exchanges, the kernel on the caller's views. The Ulysses
# suite in full (new P = 1 cases, fused views; also the first full run on the final merge/finalize),
# layout, Python (cp = 1 through the torch module), the finalize probe, then cp = 1 plan rows
# before (db99f85: bench only) and after, dense and packed.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 60 $B/test_gpu_ulysses --gtest_filter='*p1_*:*SingleRank*' > $R/gpu_ulysses_p1.log 2>&1; echo "ulysses p1 rc $?" >> $R/rc.txt
timeout 40 $B/test_gpu_layout > $R/gpu_layout.log 2>&1; echo "layout rc $?" >> $R/rc.txt
timeout 20 .carry/adhoc/finalizeprobe > $R/finalizeprobe.txt 2>&1; echo "finalizeprobe rc $?" >> $R/rc.txt
for v in before after; do
  bin=$B/ulysses-bench; [[ $v == before ]] && bin=.carry/adhoc/ulysses-bench-before
  timeout 60 stdbuf -oL $bin --device gpu --cp 1 --seq 8192,32768 --strategy ulysses --saved heads,lse --iters 7 --json $R/${v}_dense.json > $R/${v}_dense.log 2>&1; echo "$v dense rc $?" >> $R/rc.txt
  timeout 40 stdbuf -oL $bin --device gpu --cp 1 --seq 32768 --varlen 64 --seed 7 --strategy ulysses --saved heads,lse --iters 7 --json $R/${v}_packed.json > $R/${v}_packed.log 2>&1; echo "$v packed rc $?" >> $R/rc.txt
done
py=/opt/torch/.venv/bin/python3
timeout 40 env -C tests/python PYTHONPATH="$PWD/python" ULYSSES_LIBRARY="$PWD/$B/libulysses_c.so" $py -m unittest -v test_torch_gpu > $R/python.log 2>&1; echo "python rc $?" >> $R/rc.txt
timeout 280 $B/test_gpu_ulysses --gtest_filter='-*p1_*:*SingleRank*' > $R/gpu_ulysses_rest.log 2>&1; echo "ulysses rest rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
