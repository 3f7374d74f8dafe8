#!/usr/bin/env bash
# Call 8 (45th session, 1x H200): emulate.cc in "ce" mode -- the peer's rows are not copied device
# to device (such a copy waits for SMs while cuDNN holds them, call 6), only the link's wait on the
# copy engine; the rank's own rows are copied as the peer-copy transport does. 8k at both link
# models, 32k and 128k at 335 GB/s + 30 us.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
step ce8k_335 60 .carry/probe/emulate_new 8192 335 30 6 ce
step ce8k_390 60 .carry/probe/emulate_new 8192 390 10 6 ce
step ce32k_335 100 .carry/probe/emulate_new 32768 335 30 4 ce
step ce128k_335 150 .carry/probe/emulate_new 131072 335 30 1 ce
