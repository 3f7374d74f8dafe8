#!/usr/bin/env bash
# Call 5 (50th session, 1x H200): the layout suite on the final code, with the new
# MoveHeadsChecksEveryMoveBeforeAnyLaunch, and that test against 1501945's move_heads (which
# launched a move over 33 peers before checking the next move: expected to FAIL there).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
t0=$(date +%s)
step() { local name=$1 limit=$2; shift 2; timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc $? at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; pack; }
B=.carry/bin
step tests_layout 60 $B/test_gpu_layout
step tests_layout_old 30 $B/test_gpu_layout_old --gtest_filter='*MoveHeadsChecksEveryMoveBeforeAnyLaunch*'
