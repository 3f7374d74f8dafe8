#!/usr/bin/env bash
# Call 4 (20th session): the rest of the GPU suites at ac2dbc3's tree: multi-GPU on one GPU (call 3
# cut it at 60 s, a limit too short for its peer-copy cases), cuDNN in full, Python.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
B=.carry/bin
nvidia-smi -L > $R/gpu.txt
timeout 200 $B/test_multigpu > $R/multigpu.log 2>&1; echo "multigpu rc $?" >> $R/rc.txt
timeout 320 $B/test_gpu_cudnn > $R/gpu_cudnn.log 2>&1; echo "cudnn rc $?" >> $R/rc.txt
py=/opt/torch/.venv/bin/python3
timeout 40 env -C tests/python PYTHONPATH="$PWD/python" ULYSSES_LIBRARY="$PWD/$B/libulysses_c.so" $py -m unittest -v test_torch_gpu > $R/python.log 2>&1; echo "python rc $?" >> $R/rc.txt
tar czf $OUT/r.tgz -C $OUT r && rm -rf $R
