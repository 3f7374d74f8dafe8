#!/usr/bin/env bash
# Call 7 (46th session, 1x H200): every execution plan cuDNN 9.19 offers for the SDPA
# calls at 8k (32 heads: cp = 1; 16 heads: one rank at cp = 2) and 32k (16 heads), each timed.
set -uo pipefail
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
step plans_8k_h32 60 .carry/probe/plans 8192 32
step plans_8k_h16 60 .carry/probe/plans 8192 16
step plans_8k_h32_again 60 .carry/probe/plans 8192 32
step plans_32k_h16 90 .carry/probe/plans 32768 16
