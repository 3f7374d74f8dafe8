#!/usr/bin/env bash
# Call C (31st session): the PyTorch tests on the GPU, with the new MLA case (the torch module's O
# at V's width; two virtual ranks bitwise one; one rank close to PyTorch's SDPA).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
R=$OUT/r; mkdir -p $R
pack() { tar czf $OUT/r.tgz -C $OUT r; }
trap 'pack; rm -rf $R' EXIT
(cd tests/python && timeout 300 env PYTHONPATH="$OLDPWD/python" ULYSSES_LIBRARY="$OLDPWD/.carry/bin/libulysses_c.so" \
  /opt/torch/.venv/bin/python3 -m unittest -v test_torch_gpu) > $R/torch_gpu.log 2>&1; echo "torch_gpu rc $?" >> $R/rc.txt
