"""One eager step's host timeline (cp = 1, 8k): every CPU op, annotation, CUDA runtime and driver
call and GPU op in step order, times relative to the step's start; the C calls annotated."""
import json, os, sys, time
import torch
from torch.profiler import profile, ProfilerActivity, record_function
import ulysses, ulysses.torch as ut

seq = int(sys.argv[1]) if len(sys.argv) > 1 else 8192
out = os.environ.get("OUT", ".")
torch.cuda.set_device(0)
comm = ulysses.nccl_communicator(ulysses.nccl_unique_id(), 1, 0, 0)
cfg = ulysses.PlanConfig(num_heads_q=32, num_heads_kv=8, head_dim=128, causal=True,
                         strategy="ulysses", cp=1, seqlen=seq, dtype="bf16")
attn = ut.UlyssesAttention(cfg, comm, ulysses.cudnn_kernel(0))


class Timed:  # ulysses._lib with the plan's two C calls inside annotations
    def __init__(self, lib):
        self._lib = lib

    def __getattr__(self, name):
        f = getattr(self._lib, name)
        if name not in ("ulysses_plan_forward", "ulysses_plan_backward"):
            return f

        def call(*args):
            with record_function("C " + name):
                return f(*args)
        return call


ulysses._lib = Timed(ulysses._lib)
g = torch.Generator(device="cuda").manual_seed(1)
rand = lambda h: (torch.rand((1, seq, h, 128), generator=g, device="cuda") * 2 - 1).to(torch.bfloat16)
q, k, v, d_o = rand(32), rand(8), rand(8), rand(32)
xs = [x.requires_grad_() for x in (q, k, v)]


def step():
    for x in xs:
        x.grad = None
    o = attn(*xs)
    o.backward(d_o)


for _ in range(5):
    step()
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for i in range(4):
        torch.cuda.synchronize()
        with record_function(f"step{i}"):
            step()
        torch.cuda.synchronize()
trace = f"{out}/trace_host_{seq}.json"
prof.export_chrome_trace(trace)
ev = json.load(open(trace))["traceEvents"]
steps = sorted(e["ts"] for e in ev if e.get("cat") == "user_annotation"
               and e.get("name", "").startswith("step"))
for j in (2, 3):
    s0, s1 = steps[j], (steps[j + 1] if j + 1 < len(steps) else float("inf"))
    mine = sorted((e["ts"], e.get("dur", 0), e.get("cat", ""), e.get("name", "")) for e in ev
                  if e.get("cat") in ("cpu_op", "user_annotation", "cuda_runtime", "cuda_driver",
                                      "kernel", "gpu_memcpy", "gpu_memset")
                  and s0 <= e["ts"] < s1 and e.get("ph") == "X")
    print(f"--- step {j} ({seq} tokens): start ts, duration (ms), category, name")
    for ts, d, c, n in mine:
        print(f"{(ts - s0) / 1e3:8.3f} {d / 1e3:8.3f} {c:15s} {n[:90]}")
os.remove(trace)
