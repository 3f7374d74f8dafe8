#!/usr/bin/env bash
# Call A (38th session): where the first step's time goes. cuDNN graph statistics
# (cudnn_graph_stats) in a GPU test, per rank in the loopback cases, and the bench's first-step line.
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
timeout 60 $B/test_gpu_cudnn --gtest_filter='Cudnn.GraphsAreBuiltOncePerShape:Cudnn.UnsupportedRequestsNameTheFeature' > $R/cudnn_stats.log 2>&1; step "cudnn graph stats test" $?
timeout 100 $B/test_gpu_ulysses --gtest_filter='Mla/DeviceLoopbackRing.*ring_p2_gqa_causal_sinks:Mla/DeviceLoopbackRing.*ring_p2_two_sided_window_wider_v:Mla/DeviceLoopbackRing.*hybrid_4x2_replicated_kv_causal:Gpu/DeviceLoopbackRing.*:Gpu/DeviceLoopbackUlysses.*p2_mla_gqa_causal' > $R/loopback_graphs.log 2>&1; step "loopback cases with graph stats" $?
pack
timeout 120 $B/ulysses-bench --cp 1,2 --transport loopback --seq 8192,32768 --strategy ulysses,ring,allgather --chunks 1 --iters 3 --json $R/first_dense.json > $R/first_dense.log 2>&1; step "bench dense first step" $?
pack
timeout 90 $B/ulysses-bench --cp 1,2 --transport loopback --seq 8192 --heads 32 --kv-heads 32 --head-dim 192 --head-dim-v 128 --strategy ulysses,ring --chunks 1 --iters 3 --json $R/first_mla.json > $R/first_mla.log 2>&1; step "bench mla first step" $?
timeout 90 $B/ulysses-bench --cp 1,2 --transport loopback --seq 32768 --varlen 8 --strategy ulysses,ring,allgather --chunks 1 --iters 3 --json $R/first_packed.json > $R/first_packed.log 2>&1; step "bench packed first step" $?
