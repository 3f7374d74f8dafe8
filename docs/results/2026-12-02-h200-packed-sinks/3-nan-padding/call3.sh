#!/usr/bin/env bash
# Call 3 (15th session): packed cases whose padding rows hold NaN in q, k, v, dO (every strategy,
# and the torch module), then what cuDNN's own sinks cost dense at cp = 1 (for a later decision on
# folding them in there too).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 220 $B/test_gpu_ulysses > $R/gpu_ulysses.log 2>&1; echo "ulysses rc $?" >> $R/rc.txt
py=/opt/torch/.venv/bin/python3
timeout 60 env -C tests/python PYTHONPATH="$PWD/python" ULYSSES_LIBRARY="$PWD/$B/libulysses_c.so" $py -m unittest -v test_torch_gpu > $R/python.log 2>&1; echo "python rc $?" >> $R/rc.txt
for s in "" "--sinks"; do
  n=dense${s:+_sinks}
  timeout 60 stdbuf -oL $B/ulysses-bench --device gpu --cp 1 --seq 8192,32768,131072 --iters 5 $s --json $R/$n.json > $R/$n.log 2>&1; echo "bench $n rc $?" >> $R/rc.txt
  timeout 40 stdbuf -oL $B/ulysses-bench --device gpu --cp 1 --seq 32768 --window 128,-1 --iters 5 $s --json $R/${n}_w128.json > $R/${n}_w128.log 2>&1; echo "bench ${n}_w128 rc $?" >> $R/rc.txt
done
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
