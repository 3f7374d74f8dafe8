#!/usr/bin/env bash
# Call 5 (19th session): cp = 1 at 128k dense without cuDNN's eighth (predicted 9.55 -> ~9.05 GiB,
# not measured in the eighteenth session), and 8 packed documents of 128k with saved = lse and 4
# chunks at cp = 1, 2 (the packed counterpart of the memory target's row).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 50 stdbuf -oL $B/ulysses-bench --cp 1 --seq 131072 --strategy ulysses --saved lse --iters 2 --json $R/dense_128k.json > $R/dense_128k.log 2>&1; echo "dense rc $?" >> $R/rc.txt
timeout 70 stdbuf -oL $B/ulysses-bench --cp 1,2 --transport loopback --seq 131072 --varlen 8 --seed 7 --strategy ulysses --saved lse --chunks 4 --in-flight 1 --iters 1 --json $R/packed_128k.json > $R/packed_128k.log 2>&1; echo "packed rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
