"""GPU-busy time of one step per mode of compiled_model.py's model (kernels' union, ms)."""
import sys, runpy, statistics, time
import torch
from torch.profiler import profile, ProfilerActivity

# Reuse the example's model by running it with a patched step loop: simplest is to import and
# rebuild the same model here.
import ulysses, ulysses.torch as ut
seq = int(sys.argv[1]) if len(sys.argv) > 1 else 8192
dev, dt = torch.device("cuda", 0), torch.bfloat16
heads, kv, dim, hidden = 32, 8, 128, 4096
comm = ulysses.nccl_communicator(ulysses.nccl_unique_id(), 1, 0, 0)
cfg = ulysses.PlanConfig(num_heads_q=heads, num_heads_kv=kv, head_dim=dim, causal=True,
                         strategy="ulysses", cp=1, seqlen=seq, dtype="bf16")
class Layer(torch.nn.Module):
    def __init__(self, attn=True):
        super().__init__()
        lin = lambda i, o: torch.nn.Linear(i, o, bias=False, device=dev, dtype=dt)
        self.q, self.k, self.v = lin(hidden, heads*dim), lin(hidden, kv*dim), lin(hidden, kv*dim)
        self.o = lin(heads*dim, hidden)
        self.attn = ut.UlyssesAttention(cfg, comm, None) if attn else None
    def forward(self, x):
        b, s, _ = x.shape
        q = self.q(x).view(b, s, heads, dim)
        k, v = self.k(x).view(b, s, kv, dim), self.v(x).view(b, s, kv, dim)
        if self.attn is None:  # projections only: q stands in for the attention's output
            o = q + k.repeat_interleave(4, 2) + v.repeat_interleave(4, 2)
        else:
            o = self.attn(q, k, v)
        return x + self.o(o.reshape(b, s, heads*dim))
def model(attn=True):
    torch.manual_seed(0)
    return torch.nn.Sequential(Layer(attn), Layer(attn))
x = torch.randn(1, seq, hidden, device=dev, dtype=dt) * 0.5
dy = torch.randn_like(x)
runs = {"eager": model(), "compile": torch.compile(model(), fullgraph=True),
        "reduce-overhead": torch.compile(model(), fullgraph=True, mode="reduce-overhead"),
        "proj-only eager": model(False),
        "proj-only r-o": torch.compile(model(False), fullgraph=True, mode="reduce-overhead")}
def step(m):
    m.zero_grad(set_to_none=True); m(x).backward(dy)
for m in runs.values():
    for _ in range(4): step(m)
torch.cuda.synchronize()
for name, m in runs.items():
    ts = []
    for _ in range(15):
        torch.cuda.synchronize(); t0 = time.perf_counter(); step(m); torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) * 1e3)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step(m); torch.cuda.synchronize()
    ev = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    iv = sorted((e.time_range.start, e.time_range.end) for e in ev)
    busy, cur = 0, None
    for s, e in iv:
        if cur is None or s > cur[1]:
            if cur: busy += cur[1] - cur[0]
            cur = [s, e]
        else: cur[1] = max(cur[1], e)
    if cur: busy += cur[1] - cur[0]
    top = {}
    for e in ev: top[e.name] = top.get(e.name, 0) + e.time_range.elapsed_us()
    t5 = sorted(top.items(), key=lambda kv: -kv[1])[:6]
    print(f"{name:16s} seq {seq}: median {statistics.median(ts):.3f} ms (min {min(ts):.3f}), "
          f"GPU busy {busy/3e3:.3f} ms/step, kernels {len(ev)/3:.0f}/step")
    for n, us in t5: print(f"    {us/3e3:7.3f} ms  {n[:90]}")
