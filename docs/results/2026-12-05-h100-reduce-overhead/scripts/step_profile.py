"""Where an eager step's time goes against its CUDA-graph replay (cp = 1, one GPU).

For each mode: median wall time of synchronized steps; median host time to enqueue a step (until
the call returns, before synchronizing); and from a Kineto trace of 10 steps: kernels per step,
GPU busy time (union of kernel/memcpy/memset intervals), the delay from the step's start on the
host to its first GPU activity, and the idle gaps between its first and last activity."""
import json, os, sys, time, statistics as st
import torch
from torch.profiler import profile, ProfilerActivity, record_function
import ulysses, ulysses.torch as ut

seq = int(sys.argv[1]) if len(sys.argv) > 1 else 8192
out = os.environ.get("OUT", ".")
torch.cuda.set_device(0)
comm = ulysses.nccl_communicator(ulysses.nccl_unique_id(), 1, 0, 0)
cfg = ulysses.PlanConfig(num_heads_q=32, num_heads_kv=8, head_dim=128, causal=True,
                         strategy="ulysses", cp=1, seqlen=seq, dtype="bf16")
kernel = ulysses.cudnn_kernel(0)
attn = ut.UlyssesAttention(cfg, comm, kernel)
fns = {"eager": attn,
       "compile": torch.compile(ut.UlyssesAttention(cfg, comm, kernel), fullgraph=True),
       "reduce": torch.compile(ut.UlyssesAttention(cfg, comm, kernel), fullgraph=True,
                               mode="reduce-overhead")}
g = torch.Generator(device="cuda").manual_seed(1)
rand = lambda h: (torch.rand((1, seq, h, 128), generator=g, device="cuda") * 2 - 1).to(torch.bfloat16)
q, k, v, d_o = rand(32), rand(8), rand(8), rand(32)
xs = [x.requires_grad_() for x in (q, k, v)]

def step(fn=attn):
    o = fn(*xs)
    o.backward(d_o)
    return o

side = torch.cuda.Stream()
side.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(side):
    for _ in range(3):
        step()
torch.cuda.current_stream().wait_stream(side)
for x in xs:
    x.grad = None
graph = torch.cuda.CUDAGraph()
with torch.cuda.graph(graph):
    step()

for mode in ("compile", "reduce"):
    for _ in range(4):
        for x in xs:
            x.grad = None
        step(fns[mode])
torch.cuda.synchronize()

def run(mode):
    if mode == "graph":
        graph.replay()
    else:
        for x in xs:
            x.grad = None
        step(fns[mode])

rows = {}
for mode in ("eager", "graph", "compile", "reduce", "eager", "graph", "compile", "reduce"):
    wall, enq = [], []
    for _ in range(30):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        run(mode)
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        enq.append((t1 - t0) * 1e3)
        wall.append((t2 - t0) * 1e3)
    trace = f"{out}/trace_{mode}_{seq}.json"
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in range(10):
            torch.cuda.synchronize()
            with record_function(f"step{i}"):
                run(mode)
            torch.cuda.synchronize()
    prof.export_chrome_trace(trace)
    ev = json.load(open(trace))["traceEvents"]
    steps = sorted((e["ts"], e["ts"] + e["dur"]) for e in ev
                   if e.get("cat") == "user_annotation" and e.get("name", "").startswith("step"))
    gpu = sorted((e["ts"], e["ts"] + e["dur"]) for e in ev
                 if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset"))
    per = []
    for j, (s0, s1) in enumerate(steps):
        end = steps[j + 1][0] if j + 1 < len(steps) else float("inf")
        mine = [iv for iv in gpu if s0 <= iv[0] < end]
        if not mine:
            continue
        busy, cur0, cur1 = 0.0, *mine[0]
        for a, b in mine[1:]:
            if a > cur1:
                busy += cur1 - cur0
                cur0, cur1 = a, b
            else:
                cur1 = max(cur1, b)
        busy += cur1 - cur0
        span = max(b for _, b in mine) - mine[0][0]
        per.append(dict(n=len(mine), busy=busy / 1e3, lead=(mine[0][0] - s0) / 1e3,
                        gaps=(span - busy) / 1e3, span=span / 1e3))
    # The host's work before the step's first GPU activity (one step): CPU ops and CUDA runtime calls.
    s0, _ = steps[1]
    first = min(a for a, _ in gpu if a >= s0)
    host = sorted(((e["dur"], e["cat"], e["name"][:70]) for e in ev
                   if e.get("cat") in ("cpu_op", "cuda_runtime", "cuda_driver", "python_function")
                   and s0 <= e["ts"] < first), reverse=True)[:12]
    print(f"  {mode} step 1, host before its first GPU op ({(first - s0) / 1e3:.3f} ms):", flush=True)
    for d, c, n in host:
        print(f"    {d / 1e3:8.3f} ms {c:12s} {n}")
    names = {}
    for e in ev:
        if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and s0 <= e["ts"] < steps[2][0]:
            names[e["name"][:60]] = names.get(e["name"][:60], 0) + e["dur"]
    print("  GPU ops of step 1: " + "; ".join(f"{n} {d / 1e3:.3f}" for n, d in names.items()))
    r = dict(wall=st.median(wall), enqueue=st.median(enq),
             **{k: st.median(p[k] for p in per) for k in per[0]})
    rows.setdefault(mode, []).append(r)
    print(f"seq {seq} {mode:5s}: wall {r['wall']:.3f} ms, enqueue {r['enqueue']:.3f} ms | traced: "
          f"{r['n']:.0f} GPU ops, busy {r['busy']:.3f} ms, lead {r['lead']:.3f} ms, "
          f"gaps {r['gaps']:.3f} ms, span {r['span']:.3f} ms", flush=True)
json.dump(rows, open(f"{out}/step_profile_{seq}.json", "w"), indent=1)
