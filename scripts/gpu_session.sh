#!/usr/bin/env bash
# One call on a lent GPU machine: GPU tests, then the benchmark sweep. Modes: all (default),
# tests-only, bench-only, distributed (only the multi-rank tests and a shorter bench), compare
# (the multi-rank tests, then ulysses' saved-activations and transport choices side by side), ring
# (bench only: ring's saved-activations and transport choices), a2a (bench only: the exchanges
# through ncclAlltoAll, a group of ncclSend/ncclRecv, and copy-engine copies, side by side, NCCL rows
# also as CUDA graph replays), overlap
# (bench only: head chunks pipelined with the kernel over NCCL and over copy engines), fp8 (bench
# only: native vs fp8 payloads, ulysses' inbound exchanges, ring's K/V hops and all-gather's K/V
# chunks, over NCCL and copy engines), targets (bench only: issue 3's rows, every chunk count over
# copy engines and NCCL, in 3 rounds of cp = 1 and every row in turn), timeline (bench only:
# the overlap rows with --timeline and --trace-calls: each rank's kernel calls and exchanges of
# one step where they ran, beside each call timed alone),
# mla (bench only: head_dim 192 with head_dim_v 128, 32 heads; ulysses with chunks as overlap, ring
# and allgather beside it; transports as overlap).
# uneven (bench only: KV heads that cp does not divide, split unevenly by ulysses, beside a count it
# divides, and allgather; 8 query heads per KV head; transports as overlap; 4+ GPUs also hybrid
# groups of 2 with 3 KV heads beside 4).
# python (the package's PyTorch tests, then the torchrun example on every GPU: ulysses, ring, fp8,
# over PyTorch's NCCL communicator and ulysses' own, under torch.compile and as CUDA graph
# replays; then python/examples/compiled_model.py: the module inside a compiled model, and
# python/examples/side_by_side.py: ulysses against DeepSpeed-Ulysses' recipe in PyTorch and one
# GPU's SDPA; PyTorch from the machine's venv).
# copies (ulysses-copy-bench: 2D copies of rows of each width against 1D copies, every route, and
# whether each route's copies need SMs: what packs as copy-engine copies between GPUs would get).
# decode (the decode tests, then `ulysses-bench --decode`: a sharded KV cache, one new token).
# allgather (its GPU tests, then ulysses, ring and allgather side by side at 8k/32k/128k: over
# NCCL and copy engines with 2+ GPUs, through the device loopback with one).
# packed (the packed-sequence tests, then ulysses, ring and allgather on 8 and 64 packed documents
# at 32k/128k tokens, `--varlen`, transports as for allgather, 8 documents of 128k with sinks, and
# 8 documents under a window of 1024 (ring and hybrid take windows on packed documents since c2e7b9f)
# and under 128,128 without causal (backward as causal bands per document since 9f8c672);
# with 2+ GPUs also 640k tokens at cp = 1 and 2, whose cp = 1 backward runs in parts past 2^31
# elements). balance (8 and 64 packed documents of 128k, ulysses, ring with the stream and
# allgather, the documents as given and reordered by balance_packed_sequences, every kernel call
# timed).
# Expects prebuilt binaries in .carry/bin (scripts/prepare_gpu_carry.sh MODE) and leaves in $OUT (or
# ./gpu-out) summary.txt and session.tgz, every log and JSON: a device call brings back at most 8
# files, so the logs are written to a work folder and packed after every step (a call cut short
# keeps the steps before). Keeps NVLink multicast off for every process it starts.
set -uo pipefail
cd "$(dirname "$0")/.."
DEST=${OUT:-$PWD/gpu-out}
mkdir -p "$DEST"
OUT=$(mktemp -d "${TMPDIR:-/tmp}/gpu-session.XXXXXX")
pack() {
  cp "$OUT/summary.txt" "$DEST/" 2>/dev/null
  tar czf "$DEST/session.tgz.part" -C "$OUT" . && mv "$DEST/session.tgz.part" "$DEST/session.tgz"
}
trap pack EXIT
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
# cuDNN 9.19 (what the build's headers are) ships in PyTorch's wheel there; the system copy is older.
for d in /opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib; do
  [[ -d $d ]] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
BIN=.carry/bin
mode=${1:-all}
per_seq=()  # targets, timeline: "seq:limit" entries, one bench run each
{
  date -u
  nvidia-smi -L
  nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv
  nvidia-smi topo -m 2>/dev/null | head -5
  # The libraries the carried binaries load (prepare_gpu_carry.sh MODE carries only MODE's).
  for b in $BIN/*; do ldd "$b" | grep -E "cudnn|nccl|cudart|nvrtc"; break; done
} 2>&1 | tee "$OUT/env.txt"
ngpu=$(nvidia-smi -L | wc -l)
rc=0
run() {  # name, timeout, command...
  local name=$1 limit=$2
  shift 2
  echo "=== $name" | tee -a "$OUT/summary.txt"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local r=$?
  grep -E "(^|>:)\[  (PASSED|FAILED) |tests? ran|FAILED TEST|timeout path|^Ran [0-9]+ tests?|^OK|^FAILED \(" "$OUT/$name.log" | tail -15 | tee -a "$OUT/summary.txt"
  [[ $r -ne 0 ]] && { echo "$name: exit $r" | tee -a "$OUT/summary.txt"; rc=1; }
  pack
  return 0
}
# The cp > 1 rows' transports: NCCL and copy engines with 2+ GPUs; with one, cp = 2, 4 as virtual
# ranks sharing it (device loopback), so ms/step is the sum of their work.
set_via() {
  if ((ngpu >= 2)); then via=(--transport nccl,peer); else via=(--cp 1,2,4 --transport loopback); fi
}
# Extra bench flags from the caller (e.g. BENCH_ARGS="--chunks 1"), word-split on purpose.
read -r -a bench_args <<<"${BENCH_ARGS:-}"
if [[ $mode == distributed ]]; then  # the distributed tests and a shorter bench only
  bench_args+=(--iters 3)
fi
if [[ $mode == compare ]]; then  # heads vs lse, 1 vs 4 chunks, NCCL vs copy-engine exchanges
  bench_args=(--seq 8192,32768,131072 --strategy ulysses --saved heads,lse --chunks 1,4
              --in-flight 1,2 --transport nccl,peer --iters 3 "${bench_args[@]}")
fi
if [[ $mode == targets ]]; then  # issue 3's targets in one table (bench only): efficiency per
  # sequence length for every chunk count over copy engines and ulysses' non-blocking NCCL, in 3
  # rounds (cp = 1 on each GPU and every row in turn, each row's efficiency against its round's
  # cp = 1: the clock drifts by a few percent under the power cap over a sweep); a2a GB/s beside
  # NCCL's raw all-to-all (the memory rows, lse with one chunk in flight, are `compare`'s; blocking
  # NCCL and queued steps, what the host adds, were the forty-third session's)
  # (chunks 3: 1, 2, 1 KV heads, small at the ends since the forty-fifth session)
  bench_args=(--strategy ulysses --saved heads --chunks 1,2,3,4 --transport peer,nccl
              --steps synced --iters 7 --rounds 3 "${bench_args[@]}")
  # One bench run per length, each with its own limit (s): a call cut short keeps the shorter
  # lengths' rows.
  per_seq=(8192:100 32768:150 131072:330)
fi
if [[ $mode == timeline ]]; then  # why a chunked step takes what it takes: per rank, each kernel
  # call and exchange of a step as it ran (--timeline), and each call alone (--trace-calls)
  bench_args=(--strategy ulysses --saved heads --chunks 1,2,3,4 --transport peer,nccl --timeline
              --trace-calls --iters 9 "${bench_args[@]}")
  per_seq=(8192:90 32768:120 131072:300)
fi
if [[ $mode == ring ]]; then  # ring: heads vs lse, NCCL vs copy-engine hops (bench only)
  bench_args=(--seq 8192,32768,131072 --strategy ring --saved heads,lse --transport nccl,peer
              --iters 3 "${bench_args[@]}")
fi
if [[ $mode == a2a ]]; then  # which exchange: ncclAlltoAll, grouped send/recv, copy engines
  bench_args=(--seq 8192,32768,131072 --strategy ulysses --chunks 1
              --transport nccl,nccl-grouped,peer --cuda-graph off,on --iters 5 "${bench_args[@]}")
fi
if [[ $mode == overlap ]]; then  # does overlap pay once the exchanges leave the SMs alone?
  # (8k too: small chunks' kernels overlap each other on two streams since f184fab)
  bench_args=(--seq 8192,32768,131072 --strategy ulysses --chunks 1,2,4 --transport nccl,peer
              --iters 3 "${bench_args[@]}")
fi
if [[ $mode == mla ]]; then  # MLA's head dims (192 for Q/K, 128 for V/O), MHA as it trains
  bench_args=(--seq 8192,32768,131072 --strategy ulysses,ring,allgather --heads 32 --kv-heads 32
              --head-dim 192 --head-dim-v 128 --chunks 1,2,4 --transport nccl,peer --iters 3
              "${bench_args[@]}")
fi
if [[ $mode == uneven ]]; then  # Ulysses with ranks owning different head counts (head_routing.h)
  # 2 GPUs: 3 KV heads split 2 and 1 (bal 1.33) beside 4; 4 GPUs: 6 split 2, 2, 1, 1 beside 8.
  kvs=(3 4)
  ((ngpu >= 4)) && kvs=(6 8)
  for kv in "${kvs[@]}"; do
    run "bench_uneven_kv$kv" 300 $BIN/ulysses-bench --seq 8192,32768,131072 --strategy ulysses,allgather \
      --heads $((8 * kv)) --kv-heads $kv --chunks 1 --transport nccl,peer --iters 3 \
      --json "$OUT/uneven_kv$kv.json" "${bench_args[@]}"
  done
  if ((ngpu >= 4)); then  # hybrid groups of 2 (2-rank rings): 3 KV heads split 2 and 1, beside 4
    for kv in 3 4; do
      run "bench_uneven_hybrid_kv$kv" 300 $BIN/ulysses-bench --seq 8192,32768,131072 \
        --strategy hybrid,allgather --ulysses-degree 2 --heads $((8 * kv)) --kv-heads $kv \
        --transport nccl,peer --iters 3 --json "$OUT/uneven_hybrid_kv$kv.json" "${bench_args[@]}"
    done
  fi
  exit $rc
fi
if [[ $mode == fp8 ]]; then  # what halving the inbound bytes buys, and what it costs in accuracy
  bench_args=(--seq 8192,32768,131072 --strategy ulysses,ring,allgather --chunks 1 --payload native,fp8
              --transport nccl,peer --iters 5 "${bench_args[@]}")
fi
if [[ $mode == decode ]]; then  # decoding against a sharded cache: tests, then the sweep
  run gpu_decode 300 $BIN/test_gpu_decode
  run decode_bench 540 $BIN/ulysses-bench --decode --json "$OUT/decode.json" "${bench_args[@]}"
  cat "$OUT/decode_bench.log"
  # A batch of 8 sequences of 1/8 .. 8/8 of the cache length, beside 8 of the full length.
  run decode_ragged 300 $BIN/ulysses-bench --decode --batch 8 --ragged --seq 131072,1048576 \
    --splits 16 --json "$OUT/decode_ragged.json"
  cat "$OUT/decode_ragged.log"
  # Paged caches (16-row pages, shuffled in a pool) beside unpaged, in the built-in kernel.
  run decode_paged 300 $BIN/ulysses-bench --decode --split-kernel built_in --page-size 0,16 \
    --seq 131072,1048576 --splits 16 --min-split-rows 1024 --json "$OUT/decode_paged.json"
  cat "$OUT/decode_paged.log"
  exit $rc
fi
if [[ $mode == allgather ]]; then  # all-gather CP: tests, then beside ulysses and ring
  run gpu_allgather 400 $BIN/test_gpu_ulysses --gtest_filter='AllGather*'
  run multigpu_allgather 300 $BIN/test_multigpu --gtest_filter='*allgather*'
  set_via
  run bench 540 $BIN/ulysses-bench --json "$OUT/bench.json" --seq 8192,32768,131072 \
    --strategy ulysses,ring,allgather --chunks 1 --iters 3 "${via[@]}" "${bench_args[@]}"
  cat "$OUT/bench.log"
  grep -h -A12 "Failure\|error:" "$OUT"/*.log 2>/dev/null | head -150
  exit $rc
fi
if [[ $mode == packed ]]; then  # packed documents (thd): the tests, then three strategies (ring
  # both ways of cutting the documents: per sequence and the stream)
  run gpu_packed 400 $BIN/test_gpu_ulysses --gtest_filter='AllGather*:Packed*'
  run gpu_cudnn_rows 120 $BIN/test_gpu_cudnn --gtest_filter='*VarlenRows*'
  set_via
  for docs in 8 64; do
    run "bench_docs$docs" 400 $BIN/ulysses-bench --json "$OUT/bench_docs$docs.json" \
      --seq 32768,131072 --varlen "$docs" --seed 7 --strategy ulysses,ring,allgather --chunks 1 \
      --packed-sharding per_sequence,stream --iters 3 "${via[@]}" "${bench_args[@]}"
    cat "$OUT/bench_docs$docs.log"
  done
  # With sinks (gpt-oss style): folded in after a sink-free cuDNN forward, dSinks from sink_grad.
  run bench_docs8_sinks 400 $BIN/ulysses-bench --json "$OUT/bench_docs8_sinks.json" \
    --seq 131072 --varlen 8 --seed 7 --sinks --strategy ulysses,ring,allgather --chunks 1 \
    --iters 3 "${via[@]}" "${bench_args[@]}"
  cat "$OUT/bench_docs8_sinks.log"
  run bench_docs8_window 400 $BIN/ulysses-bench --json "$OUT/bench_docs8_window.json" \
    --seq 32768,131072 --varlen 8 --seed 7 --window 1024,-1 --strategy ulysses,ring,allgather \
    --packed-sharding per_sequence,stream --chunks 1 --iters 3 "${via[@]}" "${bench_args[@]}"
  cat "$OUT/bench_docs8_window.log"
  # A window without causal (ModernBERT-style, 128 each side): backward as causal bands per document.
  run bench_docs8_two_sided 300 $BIN/ulysses-bench --json "$OUT/bench_docs8_two_sided.json" \
    --seq 32768,131072 --varlen 8 --seed 7 --no-causal --window 128,128 \
    --strategy ulysses,ring,allgather --packed-sharding stream --chunks 1 --iters 3 "${via[@]}" \
    "${bench_args[@]}"
  cat "$OUT/bench_docs8_two_sided.log"
  if ((ngpu >= 2)); then  # past 2^31 elements: cp = 1's backward runs in parts, cp = 2's fits
    run bench_640k 300 $BIN/ulysses-bench --json "$OUT/bench_640k.json" --seq 655360 --varlen 64 \
      --seed 7 --strategy ulysses --chunks 1 --iters 3 --cp 1,2 --transport nccl "${bench_args[@]}"
    cat "$OUT/bench_640k.log"
  fi
  grep -h -A12 "Failure\|error:" "$OUT"/*.log 2>/dev/null | head -150
  exit $rc
fi
if [[ $mode == balance ]]; then  # packed documents in the given and the balanced order
  # (balance_packed_sequences) for the packed stream's zigzag layouts, every kernel call timed:
  # per GPU (or, on one, per virtual rank) what the slowest rank's kernels cost. Seed 8, 8
  # documents: largest rank 1.16 / 1.31 / 1.53x the mean at cp 2 / 4 / 8, against medians of
  # 1.07 / 1.24 / 1.53 over seeds 1-30 (docs/results/2026-12-03-h200-balance/seed_scan.txt)
  set_via
  for docs in 8 64; do
    run "bench_balance$docs" 400 $BIN/ulysses-bench --json "$OUT/bench_balance$docs.json" \
      --seq 131072 --varlen "$docs" --seed 8 --strategy ulysses,ring,allgather --chunks 1 \
      --packed-sharding stream --doc-order given,balanced --trace-calls --iters 3 "${via[@]}" \
      "${bench_args[@]}"
    cat "$OUT/bench_balance$docs.log"
  done
  grep -h -A12 "Failure\|error:" "$OUT"/*.log 2>/dev/null | head -150
  exit $rc
fi
if [[ $mode == copies ]]; then  # what copy engines make of rows (ulysses-copy-bench): 2D copies
  # that take a chunk's heads out of every token's row, against 1D copies of the same bytes, on
  # every route (a GPU to itself, to the host, to each peer), and whether each route needs SMs
  run copies 300 $BIN/ulysses-copy-bench --json "$OUT/copies.json"
  cat "$OUT/copies.log"
  # Half of each row (cp = 2, one chunk: 16 of 32 heads, 4 KiB of 8 KiB)
  run copies_half 300 $BIN/ulysses-copy-bench --spread 2 --widths 2048,4096 \
    --json "$OUT/copies_half.json"
  cat "$OUT/copies_half.log"
  exit $rc
fi
if [[ $mode == python ]]; then  # the Python package from torchrun, one process per GPU
  py=${PYTHON:-/opt/torch/.venv/bin/python3}
  export PYTHONPATH="$PWD/python" ULYSSES_LIBRARY="$PWD/$BIN/libulysses_c.so"
  # The package's tests with PyTorch on the GPU first (incl. PyTorch's own NCCL communicator of a
  # one-rank group), and the C++ side of wrapped communicators.
  run python_torch 300 env -C tests/python "$py" -m unittest -v test_torch_gpu test_torch_cpu \
    test_c_api
  run multigpu_wrapped 120 $BIN/test_multigpu --gtest_filter='Nccl.Wrapped*:Nccl.Uniform*'
  # (--comm torch, the default: PyTorch's NCCL communicator; --comm ulysses: one of ulysses' own)
  for args in "--seq 8192" "--seq 8192 --comm ulysses" "--seq 32768" "--seq 131072" \
              "--seq 32768 --strategy ring" "--seq 32768 --strategy allgather" \
              "--seq 32768 --payload fp8" "--seq 8192 --compile" "--seq 32768 --compile" \
              "--seq 8192 --cuda-graph" "--seq 8192 --compile reduce-overhead" \
              "--seq 32768 --cuda-graph"; do
    run "torchrun${args//[- ]/_}" 300 "$py" -m torch.distributed.run --nproc_per_node="$ngpu" \
      python/examples/torchrun_attention.py $args
    grep -E "max \||PASS|FAIL" "$OUT/torchrun${args//[- ]/_}.log" | tee -a "$OUT/summary.txt"
  done
  # The module inside a model: eager, torch.compile and reduce-overhead of the whole model (GPU 0).
  run compiled_model 300 "$py" python/examples/compiled_model.py --seq 8192
  grep -E "^round|skipped" "$OUT/compiled_model.log" | tee -a "$OUT/summary.txt"
  # ulysses against the DeepSpeed-Ulysses recipe in PyTorch, and one GPU's SDPA, in rounds.
  run side_by_side 400 "$py" -m torch.distributed.run --standalone --nproc_per_node="$ngpu" \
    python/examples/side_by_side.py --seq 8192,32768,131072 --json "$OUT/side_by_side.json"
  grep -E "^seq|^  (sdpa|ulysses|torch-|SDPA)" "$OUT/side_by_side.log" | tee -a "$OUT/summary.txt"
  exit $rc
fi
if [[ $mode != bench-only && $mode != ring && $mode != a2a && $mode != overlap && $mode != targets &&
      $mode != timeline &&
      $mode != fp8 && $mode != mla ]]; then
  if [[ $mode != distributed && $mode != compare ]]; then
    run gpu_layout 120 $BIN/test_gpu_layout
    run gpu_cudnn 300 $BIN/test_gpu_cudnn
    run gpu_decode 300 $BIN/test_gpu_decode
    run gpu_sweep 300 $BIN/test_gpu_sweep  # random configurations (ULYSSES_SWEEP_CASES)
  fi
  run gpu_ulysses 400 $BIN/test_gpu_ulysses
  run multigpu 300 $BIN/test_multigpu  # NCCL cases skip on one GPU; peer-copy ones run there too
  # The Python package with PyTorch (the machine's venv), on the library built here.
  py=${PYTHON:-/opt/torch/.venv/bin/python3}
  if [[ -x $py && -f $BIN/libulysses_c.so ]]; then
    run python_torch 300 env -C tests/python PYTHONPATH="$PWD/python" \
      ULYSSES_LIBRARY="$PWD/$BIN/libulysses_c.so" "$py" -m unittest -v test_torch_gpu test_torch_cpu test_c_api
  fi
  # The other launch mode: one process per GPU under mpirun (all GPUs, and 2 when there are more).
  if ((ngpu >= 2)) && [[ -x $BIN/test_mpi ]] && command -v mpirun >/dev/null; then
    ldd $BIN/test_mpi | grep -E "libmpi|not found" | tee -a "$OUT/env.txt"
    mpi=(mpirun --allow-run-as-root --oversubscribe --tag-output -x NCCL_NVLS_ENABLE
         -x TORCH_SYMM_MEM_DISABLE_MULTICAST -x NVSHMEM_DISABLE_NVLS -x LD_LIBRARY_PATH)
    run "mpi_np$ngpu" 300 "${mpi[@]}" -np "$ngpu" $BIN/test_mpi --gtest_color=no
    if ((ngpu > 2)); then run mpi_np2 300 "${mpi[@]}" -np 2 $BIN/test_mpi --gtest_color=no; fi
  fi
fi
if [[ $mode != tests-only && -x $BIN/ulysses-bench && ${#per_seq[@]} -gt 0 ]]; then
  for entry in "${per_seq[@]}"; do  # seq:limit
    trace=()  # timeline: each length's marked steps also as a Perfetto / chrome://tracing file
    [[ $mode == timeline ]] && trace=(--timeline-trace "$OUT/trace_${entry%%:*}.json")
    run "bench_${entry%%:*}" "${entry##*:}" $BIN/ulysses-bench --json "$OUT/bench_${entry%%:*}.json" \
      --seq "${entry%%:*}" "${trace[@]}" "${bench_args[@]}"
    cat "$OUT/bench_${entry%%:*}.log"
  done
elif [[ $mode != tests-only && -x $BIN/ulysses-bench ]]; then
  run bench 540 $BIN/ulysses-bench --json "$OUT/bench.json" "${bench_args[@]}"
  cat "$OUT/bench.log"
fi
grep -h -A12 "Failure\|error:" "$OUT"/*.log 2>/dev/null | head -150
exit $rc
