#!/usr/bin/env bash
# Call D (36th session): chunk blocks one after another, each sized for its chunk's widest rows
# (6958666). The Uneven GPU cases, the Ulysses GPU suites, the NCCL and peer-copy suites on one GPU
# (incl. the ring graph cases call C's timeout cut), the bench with 40 / 8 heads on 3 virtual ranks
# at chunks 1, 2 (memory per rank), and 12 / 6 heads on 2 ranks in 1, 2, 3 chunks.
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
timeout 120 $B/test_gpu_ulysses --gtest_filter='Uneven/*' > $R/uneven_cases.log 2>&1; step "uneven GPU cases (chunks)" $?
pack
timeout 60 stdbuf -oL $B/ulysses-bench --seq 30720 --cp 1,3 --heads 40 --kv-heads 8 --sinks --saved heads,lse --chunks 1,2 --seed 7 --iters 3 --transport loopback --strategy ulysses --json $R/bench_40h_cp3_chunks.json > $R/bench_40h_cp3_chunks.log 2>&1; step "bench 40/8 heads cp 3 chunks 1,2" $?
timeout 60 stdbuf -oL $B/ulysses-bench --seq 32768 --cp 1,2 --heads 48 --kv-heads 6 --chunks 1,2,3 --seed 7 --iters 3 --transport loopback --strategy ulysses --json $R/bench_48h_cp2_chunks.json > $R/bench_48h_cp2_chunks.log 2>&1; step "bench 48/6 heads cp 2 chunks 1,2,3" $?
pack
timeout 90 $B/test_multigpu --gtest_filter='AllGpus/NcclRingGraph.*:AllGpus/NcclUlyssesGraph.*:Gpus/PeerCopyUlysses.*' > $R/multigpu.log 2>&1; step "test_multigpu graph and peer-copy suites on one GPU" $?
pack
timeout 270 $B/test_gpu_ulysses --gtest_filter='Gpu/DeviceLoopbackUlysses.*:Fp8/DeviceLoopbackUlysses.*' > $R/ulysses_regression.log 2>&1; step "ulysses GPU suites (regression)" $?
