#!/usr/bin/env bash
# Call 1 (18th session): cp = 1 workspace holds only the in-place regions; unaligned views copy
# through the plan's own scratch. GPU tests (one-rank cases first), then cp = 1 plan rows with
# their memory, Python (torch module at cp = 1), multigpu on one GPU.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 60 $B/test_gpu_ulysses --gtest_filter='GpuSingleRank.*:*p1_*' > $R/gpu_ulysses_p1.log 2>&1; echo "ulysses p1 rc $?" >> $R/rc.txt
timeout 90 stdbuf -oL $B/ulysses-bench --cp 1 --seq 8192,32768,131072 --strategy ulysses --saved heads,lse --iters 3 --json $R/dense.json > $R/dense.log 2>&1; echo "dense bench rc $?" >> $R/rc.txt
timeout 40 stdbuf -oL $B/ulysses-bench --cp 1 --seq 32768 --varlen 64 --seed 7 --strategy ulysses --saved heads,lse --iters 5 --json $R/packed.json > $R/packed.log 2>&1; echo "packed bench rc $?" >> $R/rc.txt
timeout 40 stdbuf -oL $B/ulysses-bench --cp 1 --seq 8192,32768 --strategy ring,allgather --saved heads,lse --iters 5 --json $R/strategies.json > $R/strategies.log 2>&1; echo "strategies bench rc $?" >> $R/rc.txt
py=/opt/torch/.venv/bin/python3
timeout 40 env -C tests/python PYTHONPATH="$PWD/python" ULYSSES_LIBRARY="$PWD/$B/libulysses_c.so" $py -m unittest -v test_torch_gpu > $R/python.log 2>&1; echo "python rc $?" >> $R/rc.txt
timeout 60 $B/test_multigpu > $R/gpu_multigpu.log 2>&1; echo "multigpu rc $?" >> $R/rc.txt
timeout 240 $B/test_gpu_ulysses --gtest_filter='-GpuSingleRank.*:*p1_*' > $R/gpu_ulysses_rest.log 2>&1; echo "ulysses rest rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
