#!/usr/bin/env bash
# Fifty-ninth session, one GPU: decode steps eager (layout planned on the host) against CUDA graph
# replays of one captured step (layout in device memory), built-in kernel, one H100.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit,driver_version --format=csv > $OUT/gpu.txt 2>&1
B=.carry/bin/ulysses-bench
run() {  # name limit args...
  local n=$1 l=$2; shift 2
  timeout $l $B --decode --split-kernel built_in --cuda-graph off,on --seed 7 --json $OUT/$n.json "$@" > $OUT/$n.log 2>&1
  echo "$n rc $?" | tee -a $OUT/rc.txt; grep -vE "^#" $OUT/$n.log | tail -8
}
run one 150 --seq 8192,131072,1048576
run one_again 150 --seq 8192,131072,1048576
run ragged8 90 --batch 8 --ragged --seq 131072
run tokens4 90 --decode-tokens 4 --seq 8192,131072
run paged16 90 --page-size 16 --seq 8192,131072
