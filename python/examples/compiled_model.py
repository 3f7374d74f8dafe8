"""UlyssesAttention inside a model, eager against torch.compile of the whole model.

Two layers of q/k/v/o projections around ulysses' attention (residual added), one process, cp = 1:
on a GPU with cuDNN and a one-rank NCCL communicator, bf16, Llama-like widths (32 query heads, 8
KV heads of 128, hidden 4096); without one on the CPU with the reference kernel and tiny widths.
Each mode (eager; torch.compile; on a GPU also mode="reduce-overhead", whose CUDA graphs then
hold the projections and the attention, and copy only the model's input) builds its own model from
the same seed; the median of synchronized forward + backward steps is printed per mode, two rounds,
then Inductor's count of skipped CUDA graphs (exit code 1 if any was skipped).
"""

import argparse
import statistics
import sys
import time

import torch
from torch._dynamo.utils import counters

import ulysses
import ulysses.torch as ut


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seq", type=int, default=8192, help="tokens (the CPU run takes 16)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per mode and round")
    a = p.parse_args()
    cuda = torch.cuda.is_available()
    dev = torch.device("cuda", 0) if cuda else torch.device("cpu")
    dt = torch.bfloat16 if cuda else torch.float32
    heads, kv_heads, dim, hidden = (32, 8, 128, 4096) if cuda else (4, 2, 8, 32)
    seq = a.seq if cuda else min(a.seq, 16)
    if cuda:
        comm, kernel = ulysses.nccl_communicator(ulysses.nccl_unique_id(), 1, 0, 0), None
    else:
        comm, kernel = ulysses.loopback_group(1)[0], ulysses.reference_kernel()
    cfg = ulysses.PlanConfig(num_heads_q=heads, num_heads_kv=kv_heads, head_dim=dim, causal=True,
                             strategy="ulysses", cp=1, seqlen=seq,
                             dtype="bf16" if cuda else "fp32")

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()

            def lin(i, o):
                return torch.nn.Linear(i, o, bias=False, device=dev, dtype=dt)
            self.q, self.k, self.v = lin(hidden, heads * dim), lin(hidden, kv_heads * dim), \
                lin(hidden, kv_heads * dim)
            self.o = lin(heads * dim, hidden)
            self.attn = ut.UlyssesAttention(cfg, comm, kernel)

        def forward(self, x):
            b, s, _ = x.shape
            o = self.attn(self.q(x).view(b, s, heads, dim), self.k(x).view(b, s, kv_heads, dim),
                          self.v(x).view(b, s, kv_heads, dim))
            return x + self.o(o.view(b, s, heads * dim))

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(Layer(), Layer())

    x = torch.randn(1, seq, hidden, device=dev, dtype=dt) * 0.5
    d_y = torch.randn_like(x)
    runs = {"eager": model(), "compile": torch.compile(model(), fullgraph=True)}
    if cuda:
        runs["reduce-overhead"] = torch.compile(model(), fullgraph=True, mode="reduce-overhead")
    counters.clear()

    def step(m):
        m.zero_grad(set_to_none=True)
        m(x).backward(d_y)

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for m in runs.values():
        for _ in range(4):  # cuDNN's graphs, Inductor's compilation and CUDA graph recording
            step(m)
    for rnd in (1, 2):
        for name, m in runs.items():
            times = []
            for _ in range(a.steps):
                sync()
                t0 = time.perf_counter()
                step(m)
                sync()
                times.append((time.perf_counter() - t0) * 1e3)
            print(f"round {rnd} seq {seq} {name:15s}: {statistics.median(times):.3f} ms per "
                  f"forward+backward (min {min(times):.3f})", flush=True)
    skips = counters["inductor"]["cudagraph_skips"]
    print(f"Inductor's skipped CUDA graphs: {skips}")
    sys.exit(1 if skips else 0)


if __name__ == "__main__":
    main()
