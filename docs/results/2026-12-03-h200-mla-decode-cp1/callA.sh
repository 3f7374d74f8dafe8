#!/usr/bin/env bash
# Call A (34th session): cp = 1 Ulysses packed MLA backward in place (no plan copies), decoding
# with head_dim_v != head_dim, and the MLA suites left unrun on the 33rd session's final build.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
nvidia-smi -L > $R/gpu.txt
t0=$(date +%s)
step() { echo "$1 rc $2 at $(( $(date +%s) - t0 )) s" >> $R/rc.txt; }
timeout 90 $B/test_gpu_ulysses --gtest_filter='GpuSingleRank.*' > $R/single_rank.log 2>&1; step "GpuSingleRank (cp 1 fused views, MLA)" $?
timeout 150 $B/test_gpu_decode --gtest_filter='Cases/*' > $R/decode_cases.log 2>&1; step "decode cases" $?
pack
A="--cp 1 --seq 32768 --varlen 8 --transport loopback --heads 32 --kv-heads 32 --seed 7 --iters 3 --strategy ulysses"
timeout 60 stdbuf -oL $B/ulysses-bench $A --head-dim 192 --head-dim-v 128 --json $R/cp1_mla.json > $R/cp1_mla.log 2>&1; step "bench cp1 packed mla" $?
pack
D="--decode --seq 32768,131072,1048576 --heads 16 --kv-heads 16 --iters 20"
timeout 90 stdbuf -oL $B/ulysses-bench $D --head-dim 192 --head-dim-v 128 --json $R/decode_mla.json > $R/decode_mla.log 2>&1; step "decode bench 192/128" $?
timeout 90 stdbuf -oL $B/ulysses-bench $D --head-dim 192 --json $R/decode_padded.json > $R/decode_padded.log 2>&1; step "decode bench 192/192" $?
timeout 60 stdbuf -oL $B/ulysses-bench --decode --seq 131072 --heads 16 --kv-heads 8 --cp 1,2,4 --transport loopback --decode-tokens 3 --window 4000,-1 --head-dim 192 --head-dim-v 128 --iters 5 > $R/decode_mla_loopback.log 2>&1; step "decode mla loopback cp 1,2,4" $?
pack
timeout 60 $B/test_gpu_ulysses --gtest_filter='Gpu/DeviceLoopbackUlysses.*mla*:Gpu/DeviceLoopbackUlysses.*wider_v*' > $R/ulysses_mla.log 2>&1; step "ulysses mla cases" $?
timeout 150 $B/test_gpu_ulysses --gtest_filter='Mla/DeviceLoopbackRing.*' > $R/mla_ring.log 2>&1; step "mla ring/hybrid/allgather" $?
pack
ULYSSES_SWEEP_MATCH="Dv= thd" ULYSSES_SWEEP_CASES=2000 timeout 60 $B/test_gpu_sweep > $R/sweep_dv_thd.log 2>&1; step "sweep Dv thd (124 by design)" $?
