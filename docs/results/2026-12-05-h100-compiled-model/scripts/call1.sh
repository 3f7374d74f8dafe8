#!/usr/bin/env bash
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
export PYTHONPATH=$PWD/python ULYSSES_LIBRARY=$PWD/.carry/bin/libulysses_c.so
py=/opt/torch/.venv/bin/python3
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv > $OUT/gpu.txt
( timeout 150 env -C tests/python $py -m unittest test_torch_gpu test_c_api 2>&1 | tail -5 ) > $OUT/tests.log
for s in 8192 32768; do
  for r in 1; do
    echo "== compiled_model --seq $s run $r"; timeout 200 $py python/examples/compiled_model.py --seq $s; echo "rc $?"
  done
done > $OUT/compiled_model.log 2>&1
for s in 8192; do timeout 240 $py .carry/adhoc/cm_profile.py $s; echo "rc $?"; done > $OUT/profile.log 2>&1
tail -3 $OUT/tests.log; cat $OUT/compiled_model.log | grep -v Warning; cat $OUT/profile.log | tail -60
