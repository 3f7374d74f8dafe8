#!/usr/bin/env bash
# side_by_side.py on one GPU: PyTorch's own SDPA choice, then flash and cuDNN forced.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
export PYTHONPATH=$PWD/python ULYSSES_LIBRARY=$PWD/.carry/bin/libulysses_c.so
py=/opt/torch/.venv/bin/python3
{ nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv
  $py -c "import torch; print('torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())"
} > $OUT/gpu.txt 2>&1
cat $OUT/gpu.txt
n=0
for spec in "200|--seq 8192,32768,131072 --rounds 2" "170|--seq 8192,32768,131072 --sdpa flash --rounds 2" \
            "60|--seq 8192,32768 --sdpa cudnn --rounds 2"; do
  n=$((n+1)); limit=${spec%%|*}; args=${spec#*|}
  t0=$(date +%s)
  timeout $limit $py -m torch.distributed.run --standalone --nproc_per_node=1 \
    python/examples/side_by_side.py $args --json $OUT/side_by_side$n.json > $OUT/side_by_side$n.log 2>&1
  echo "rc $? in $(( $(date +%s) - t0 )) s" >> $OUT/side_by_side$n.log
  echo "== $args"; grep -v "^W\|Warning\|warn" $OUT/side_by_side$n.log | tail -30
done
echo "== a plain Linear model's first backward (does PyTorch warn about cuBLAS without ulysses?)"
timeout 30 $py -c "
import torch
m = torch.nn.Linear(64, 64, device='cuda', dtype=torch.bfloat16)
x = torch.randn(8, 64, device='cuda', dtype=torch.bfloat16)
y = m(x); y.backward(torch.ones_like(y)); torch.cuda.synchronize(); print('plain backward done')
" 2>&1 | tail -3
