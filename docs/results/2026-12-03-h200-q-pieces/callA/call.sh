#!/usr/bin/env bash
# Call A (29th session): the packed backward stages Q only in its pieces' rows (copy_rows);
# element-wise, cuDNN packed and loopback packed tests, then old (ba584f9) vs new bench on 8
# packed documents under 128,128 without causal (Ulysses' bands stage Q at cp = 2).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
nvidia-smi -L > $R/gpu.txt
timeout 60 $B/test_gpu_layout --gtest_filter='GpuElementwise.*' > $R/layout.log 2>&1; echo "layout rc $?" >> $R/rc.txt
timeout 100 $B/test_gpu_cudnn --gtest_filter='*varlen*:Blocks/*:Cudnn.Accumulated*:Cudnn.Packed*' > $R/cudnn.log 2>&1; echo "cudnn rc $?" >> $R/rc.txt
timeout 160 $B/test_gpu_ulysses --gtest_filter='*varlen*:*thd*:*packed*:Packed*:PackedStream*:AllGatherPacked*:*docs*' > $R/loopback_packed.log 2>&1; echo "loopback packed rc $?" >> $R/rc.txt
pack
A="--cp 1,2 --seq 32768 --transport loopback --no-causal --window 128,128 --chunks 1 --varlen 8 --seed 7 --packed-sharding stream --iters 5 --strategy ulysses,allgather,ring,hybrid --ulysses-degree 2 --trace-calls"
timeout 60 stdbuf -oL $B/ulysses-bench-old $A > $R/packed_32k_old.log 2>&1; echo "old rc $?" >> $R/rc.txt
timeout 60 stdbuf -oL $B/ulysses-bench $A --json $R/packed_32k.json > $R/packed_32k.log 2>&1; echo "new rc $?" >> $R/rc.txt
