#!/usr/bin/env bash
# Branch reduce-overhead: gpu_session.sh python (every Python GPU test, the torchrun rows), then
# 8k rows twice with 20 steps each mode, and a per-step profile of eager vs graph replay.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
bash scripts/gpu_session.sh python > "$OUT/session_stdout.txt" 2>&1
echo "gpu_session rc $?" >> "$OUT/session_stdout.txt"
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}
py=/opt/torch/.venv/bin/python3
export PYTHONPATH="$PWD/python" ULYSSES_LIBRARY="$PWD/.carry/bin/libulysses_c.so"
A=$(mktemp -d); S="$OUT/adhoc_summary.txt"
pack() { tar czf "$OUT/adhoc.tgz" -C "$A" .; }
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv > "$A/env.txt"
for seq in 8192 32768; do
  OUT=$A timeout 120 "$py" .carry/adhoc/step_profile.py $seq > "$A/profile_$seq.log" 2>&1
  echo "profile $seq rc $?" >> "$S"; grep "^seq" "$A/profile_$seq.log" >> "$S"; rm -f "$A"/trace_*; pack
done
for round in 1 2; do
  for args in "--seq 8192" "--seq 8192 --cuda-graph" "--seq 8192 --compile reduce-overhead"; do
    name="r${round}_torchrun${args//[- ]/_}"
    timeout 200 "$py" -m torch.distributed.run --nproc_per_node=1 \
      python/examples/torchrun_attention.py --iters 20 $args > "$A/$name.log" 2>&1
    echo "$name rc $?" >> "$S"; grep -E "PASS|FAIL|Error" "$A/$name.log" | tail -2 >> "$S"; pack
  done
done
cp "$S" "$A/"; pack
