"""PyTorch's SDPA (cuDNN) against ulysses at cp = 1, one GPU: synchronized steps, queued steps (the
host ahead), the GPU operations of a profiled step each, per kernel name."""
import json, os, sys, time, statistics as st
import torch
import torch.nn.functional as F
from torch.profiler import profile, ProfilerActivity, record_function
import ulysses, ulysses.torch as ut

out = os.environ.get("OUT", ".")
torch.cuda.set_device(0)
comm = ulysses.nccl_communicator(ulysses.nccl_unique_id(), 1, 0, 0)
kernel = ulysses.cudnn_kernel(0)

def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          is_causal=True, enable_gqa=True).transpose(1, 2)

for seq in [int(s) for s in (sys.argv[1] if len(sys.argv) > 1 else "8192,32768").split(",")]:
    cfg = ulysses.PlanConfig(num_heads_q=32, num_heads_kv=8, head_dim=128, causal=True,
                             strategy="ulysses", cp=1, seqlen=seq, dtype="bf16")
    attn = ut.UlyssesAttention(cfg, comm, kernel)
    g = torch.Generator(device="cuda").manual_seed(1)
    rand = lambda h: (torch.rand((1, seq, h, 128), generator=g, device="cuda") * 2 - 1).to(torch.bfloat16)
    base = [rand(32), rand(8), rand(8), rand(32)]
    inputs = {m: [x.clone().requires_grad_(i < 3) for i, x in enumerate(base)]
              for m in ("sdpa", "ulysses", "graph")}
    fns = {"sdpa": sdpa, "ulysses": attn, "graph": attn}

    def step(mode):
        xs = inputs[mode]
        for x in xs[:3]:
            x.grad = None
        o = fns[mode](*xs[:3])
        o.backward(xs[3])

    for m in ("sdpa", "ulysses"):
        for _ in range(3):
            step(m)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step("graph")
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step("graph")
    torch.cuda.synchronize()
    run = lambda m: graph.replay() if m == "graph" else step(m)

    res = {m: {"synced": [], "queued": []} for m in fns}
    n = 20 if seq <= 8192 else 6
    for rnd in range(3):
        for m in fns:
            for _ in range(n):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                run(m)
                torch.cuda.synchronize()
                res[m]["synced"].append((time.perf_counter() - t0) * 1e3)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(n):
                run(m)
            torch.cuda.synchronize()
            res[m]["queued"].append((time.perf_counter() - t0) * 1e3 / n)
    for m in fns:
        print(f"seq {seq} {m:8s} synced median {st.median(res[m]['synced']):.3f} ms (min "
              f"{min(res[m]['synced']):.3f})  queued per step {', '.join(f'{x:.3f}' for x in res[m]['queued'])}",
              flush=True)
    for m in fns:
        trace = f"/tmp/trace_{m}_{seq}.json"
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for i in range(4):
                torch.cuda.synchronize()
                with record_function(f"step{i}"):
                    run(m)
                torch.cuda.synchronize()
        prof.export_chrome_trace(trace)
        ev = json.load(open(trace))["traceEvents"]
        steps = sorted((e["ts"], e["ts"] + e["dur"]) for e in ev
                       if e.get("cat") == "user_annotation" and e.get("name", "").startswith("step"))
        gpu = sorted((e["ts"], e["ts"] + e["dur"], e["name"]) for e in ev
                     if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset"))
        for j in (2, 3):
            s0 = steps[j][0]
            end = steps[j + 1][0] if j + 1 < len(steps) else float("inf")
            mine = [x for x in gpu if s0 <= x[0] < end]
            busy = sum(b - a for a, b, _ in mine)
            span = max(b for _, b, _ in mine) - mine[0][0]
            print(f"  {m} step {j}: {len(mine)} GPU ops, sum {busy / 1e3:.3f} ms, span "
                  f"{span / 1e3:.3f} ms, lead {(mine[0][0] - s0) / 1e3:.3f} ms")
            for a, b, name in mine:
                print(f"      {(a - mine[0][0]) / 1e3:8.3f} +{(b - a) / 1e3:7.3f}  {name[:110]}")
        sys.stdout.flush()
