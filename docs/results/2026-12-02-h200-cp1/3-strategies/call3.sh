#!/usr/bin/env bash
# Call 3 (17th session): ring, hybrid and all-gather at cp = 1 through Ulysses' one-rank plan.
# cp = 1 rows per strategy before (db99f85: every strategy's own plan) and after (e1cfaaa), the
# multi-GPU suite on one GPU (one-rank NCCL graph rings now routed, fp8 still ring), Python, then
# test_gpu_ulysses in full (the tokens-first merge/finalize and the routing).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin; A=.carry/adhoc
nvidia-smi -L > $R/gpu.txt
for v in before after; do
  bin=$B/ulysses-bench; [[ $v == before ]] && bin=$A/ulysses-bench-before
  timeout 80 stdbuf -oL $bin --device gpu --cp 1 --seq 8192,32768 --strategy ulysses,ring,allgather --iters 7 --json $R/${v}_strategies.json > $R/${v}_strategies.log 2>&1; echo "$v strategies rc $?" >> $R/rc.txt
done
timeout 90 $B/test_multigpu > $R/gpu_multigpu.log 2>&1; echo "multigpu rc $?" >> $R/rc.txt
py=/opt/torch/.venv/bin/python3
timeout 40 env -C tests/python PYTHONPATH="$PWD/python" ULYSSES_LIBRARY="$PWD/$B/libulysses_c.so" $py -m unittest -v test_torch_gpu > $R/python.log 2>&1; echo "python rc $?" >> $R/rc.txt
timeout 280 $B/test_gpu_ulysses > $R/gpu_ulysses.log 2>&1; echo "ulysses rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
