#!/usr/bin/env bash
# Call 4 (46th session, 1x H200): 40 GPU sweep draws of Ulysses plans only, cp > 1, half of them
# sending a rank's own rows through the exchange, the other half packing them in place.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
step tests_sweep_ulysses 280 env ULYSSES_SWEEP_CASES=40 ULYSSES_SWEEP_MATCH='ulysses !cp=1' .carry/bin/test_gpu_sweep
