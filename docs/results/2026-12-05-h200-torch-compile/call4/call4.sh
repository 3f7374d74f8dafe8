#!/usr/bin/env bash
# Lean re-run after the eager-path and group-sharing changes: the package's PyTorch tests, then
# torchrun 8k and 32k eager and compiled.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
R=$OUT/r; mkdir -p $R
py=/opt/torch/.venv/bin/python3
export PYTHONPATH="$PWD/python" ULYSSES_LIBRARY="$PWD/.carry/bin/libulysses_c.so"
git log --oneline -1 > $R/head.txt 2>/dev/null || true
(cd tests/python && timeout 200 $py -m unittest -v test_torch_gpu test_torch_cpu test_c_api) > $R/python_torch.log 2>&1
echo "python_torch rc $?" >> $R/rc.txt
for args in "--seq 8192" "--seq 8192 --compile" "--seq 32768" "--seq 32768 --compile"; do
  n=torchrun${args//[- ]/_}
  timeout 120 $py -m torch.distributed.run --nproc_per_node=1 python/examples/torchrun_attention.py $args > $R/$n.log 2>&1
  echo "$n rc $?" >> $R/rc.txt
done
cat $R/rc.txt; tail -3 $R/python_torch.log; grep -h "ms per" $R/torchrun*.log
