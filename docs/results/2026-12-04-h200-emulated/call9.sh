#!/usr/bin/env bash
# Call 9 (45th session, 1x H200): emulate.cc with the workspace and `saved` filled with random
# values (call 8's "ce" rows read stale zeros where the peer's rows would be and ran faster than
# cuDNN alone), in "ce" (the rank's own rows copied device to device, the peer's the link's wait
# alone) and "ce-noself" (no copy of the own rows either); 8k at 390 GB/s + 10 us, 32k at 335 +
# 30, each mode twice, alternated.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
for round in 1 2; do
  step ce8k_$round 60 .carry/probe/emulate_new 8192 390 10 6 ce
  step noself8k_$round 60 .carry/probe/emulate_new 8192 390 10 6 ce-noself
done
step ce32k 100 .carry/probe/emulate_new 32768 335 30 4 ce
step noself32k 100 .carry/probe/emulate_new 32768 335 30 4 ce-noself
