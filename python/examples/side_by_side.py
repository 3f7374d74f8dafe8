"""ulysses against a DeepSpeed-style Ulysses in plain PyTorch, side by side in one torchrun job.

    torchrun --nproc_per_node=<GPUs> python/examples/side_by_side.py --seq 8192,32768,131072

Per sequence length (B = 1, causal, bf16, forward + backward) four cases run, interleaved in rounds
so that every case sees the same clocks:

  * one GPU, the whole sequence (rank 0; the other ranks wait): PyTorch's
    scaled_dot_product_attention, and ulysses at cp = 1;
  * every GPU on its shard of the sequence: ulysses.torch.UlyssesAttention at cp = world (over
    PyTorch's NCCL communicator), and `TorchUlysses` below, the DeepSpeed-Ulysses recipe written in
    PyTorch: Q, K and V permuted into per-rank blocks, torch.distributed.all_to_all_single (heads
    scattered, the sequence gathered), SDPA on the whole sequence for the rank's heads, and the
    same back for O (in backward each exchange's gradient goes back the same way).

It prints per case the median step (the slowest rank's), TFLOP/s per GPU (backward counted as 2.5×
forward), each distributed case's per-GPU efficiency T1 / (P · step) against its own kernel on one
GPU (ulysses against ulysses at cp = 1, the PyTorch recipe against SDPA), the attention kernel SDPA
ran (PyTorch's choice, or `--sdpa BACKEND`), and the step's peak memory on top of what was
allocated before it (PyTorch's allocator; for ulysses plus the module's workspace, made with it,
and what its plan and kernel hold outside PyTorch). The
two distributed cases' O, dQ, dK, dV are compared shard by shard (exit code 1 beyond a few bf16
ulps of the largest value). Without a GPU the job checks `TorchUlysses` alone (gloo, fp32, small
shapes) against SDPA on the whole sequence: ulysses' own cases need NCCL.
"""

import argparse
import contextlib
import json
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import ulysses
import ulysses.torch as ut


class _AllToAll(torch.autograd.Function):
    """all_to_all_single of [P, ...] blocks (block j to rank j); its gradient is the same
    exchange of the gradient's blocks, as in DeepSpeed's _SeqAllToAll."""

    @staticmethod
    def forward(ctx, blocks, group):
        ctx.group = group
        got = torch.empty_like(blocks)
        dist.all_to_all_single(got, blocks, group=group)
        return got

    @staticmethod
    def backward(ctx, grad):
        return _AllToAll.apply(grad.contiguous(), ctx.group), None


class TorchUlysses(torch.nn.Module):
    """DeepSpeed-Ulysses in PyTorch: q [B, S/P, Hq, D], k, v [B, S/P, Hkv, D] (a contiguous shard
    of the sequence) -> o [B, S/P, Hq, D]. Needs Hq and Hkv divisible by P."""

    def __init__(self, group=None):
        super().__init__()
        self.group = group
        self.p = dist.get_world_size(group)

    def _heads_out(self, x):  # [B, S/P, H, D] -> [B, S, H/P, D]
        b, s, h, d = x.shape
        blocks = x.reshape(b, s, self.p, h // self.p, d).permute(2, 0, 1, 3, 4).contiguous()
        got = _AllToAll.apply(blocks, self.group)
        return got.permute(1, 0, 2, 3, 4).reshape(b, self.p * s, h // self.p, d)

    def _sequence_back(self, x):  # [B, S, H/P, D] -> [B, S/P, H, D]
        b, s, h, d = x.shape
        blocks = x.reshape(b, self.p, s // self.p, h, d).transpose(0, 1).contiguous()
        got = _AllToAll.apply(blocks, self.group)
        return got.permute(1, 2, 0, 3, 4).reshape(b, s // self.p, self.p * h, d)

    def forward(self, q, k, v):
        qf, kf, vf = (self._heads_out(x).transpose(1, 2) for x in (q, k, v))
        o = F.scaled_dot_product_attention(qf, kf, vf, is_causal=True, enable_gqa=True)
        return self._sequence_back(o.transpose(1, 2))


def check_on_cpu(rank, world):
    """TorchUlysses on this rank's shard against SDPA on the whole sequence (fp32, gloo)."""
    seq, heads, kv_heads, dim = 8 * world, 2 * world, world, 16
    g = torch.Generator().manual_seed(1234)
    q, k, v, d_o = (torch.randn(1, seq, h, dim, generator=g)
                    for h in (heads, kv_heads, kv_heads, heads))
    ref = [x.transpose(1, 2).clone().requires_grad_() for x in (q, k, v)]
    o_ref = F.scaled_dot_product_attention(*ref, is_causal=True, enable_gqa=True)
    o_ref.backward(d_o.transpose(1, 2))
    rows = slice(rank * seq // world, (rank + 1) * seq // world)
    mine = [x[:, rows].clone().requires_grad_() for x in (q, k, v)]
    o = TorchUlysses()(*mine)
    o.backward(d_o[:, rows])
    err = max((got - want.transpose(1, 2)[:, rows]).abs().max().item()
              for got, want in zip((o, *(x.grad for x in mine)),
                                   (o_ref, *(x.grad for x in ref))))
    err = torch.tensor(err)
    dist.all_reduce(err, op=dist.ReduceOp.MAX)
    ok = err.item() <= 1e-5
    if rank == 0:
        print(f"no GPU: TorchUlysses on {world} ranks (gloo, fp32, seq {seq}) against SDPA on the "
              f"whole sequence: max |difference| {err.item():.2e} -> {'PASS' if ok else 'FAIL'}")
    return ok


def step(fn, xs):
    """One forward + backward of fn on xs = [q, k, v, dO]."""
    for x in xs[:3]:
        x.grad = None
    o = fn(*xs[:3])
    o.backward(xs[3])
    return o


SDPA_BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
                 "efficient": SDPBackend.EFFICIENT_ATTENTION}


def sdpa_kernel_name(xs):
    """The first attention kernel an SDPA forward on xs launches (PyTorch picks the backend)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        with torch.no_grad():
            sdpa(*xs[:3])
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    hits = [n for n in names if any(w in n.lower() for w in ("flash", "fmha", "sdpa", "attention"))]
    return (hits or names or ["(none seen)"])[0][:100]


def sdpa(q, k, v):
    """PyTorch's attention on [B, S, H, D] views (its own choice of backend)."""
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          is_causal=True, enable_gqa=True).transpose(1, 2)


def one_length(a, seq, rank, world, comm, one_comm, device, show_kernel):
    """The four cases at one sequence length (show_kernel: also the kernel SDPA ran); returns
    (rank 0's printed rows, whether the check passed)."""
    def plan(cp):
        return ulysses.PlanConfig(num_heads_q=a.heads, num_heads_kv=a.kv_heads, head_dim=a.head_dim,
                                  causal=True, strategy="ulysses", cp=cp, seqlen=seq, dtype="bf16",
                                  overlap_chunks=a.chunks if cp > 1 else 1)

    def leaves(xs):  # each case its own copies: q, k, v take gradients, dO does not
        return [x.clone().requires_grad_(i < 3) for i, x in enumerate(xs)]

    g = torch.Generator(device="cuda").manual_seed(1234)
    full = [(torch.rand((1, seq, h, a.head_dim), generator=g, device="cuda") * 2 - 1)
            .to(torch.bfloat16) for h in (a.heads, a.kv_heads, a.kv_heads, a.heads)]
    cfg = plan(world)
    shards = [ut.shard(x, cfg, rank) for x in full]
    kernel = ulysses.cudnn_kernel(device)
    mod = ut.UlyssesAttention(cfg, comm, kernel)
    owned = {"ulysses": (mod, kernel)}  # what ulysses keeps between steps, outside the peaks
    # name: (runs on rank 0 alone, the function, its inputs)
    cases = {"sdpa, one GPU": (True, None, None), "ulysses cp=1, one GPU": (True, None, None)}
    if rank == 0:
        one_kernel = ulysses.cudnn_kernel(device)
        one = ut.UlyssesAttention(plan(1), one_comm, one_kernel)
        owned["ulysses cp=1, one GPU"] = (one, one_kernel)
        cases = {"sdpa, one GPU": (True, sdpa, leaves(full)),
                 "ulysses cp=1, one GPU": (True, one, leaves(full))}
    cases["ulysses"] = (False, mod, leaves(shards))
    cases["torch-ulysses"] = (False, TorchUlysses(), leaves(shards))
    del full, shards

    times = {n: [] for n in cases}
    peak = {n: 0 for n in cases}
    for rnd in range(a.rounds):
        for name, (one_gpu, fn, xs) in cases.items():
            if not one_gpu or rank == 0:
                for i in range(a.iters + (2 if rnd == 0 else 0)):  # 2 warm-up steps first
                    for x in xs[:3]:
                        x.grad = None
                    torch.cuda.synchronize()
                    if not one_gpu:
                        dist.barrier()
                    base = torch.cuda.memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                    t0 = time.perf_counter()
                    step(fn, xs)
                    torch.cuda.synchronize()
                    if rnd > 0 or i >= 2:
                        times[name].append((time.perf_counter() - t0) * 1e3)
                    peak[name] = max(peak[name], torch.cuda.max_memory_allocated() - base)
            dist.barrier()
    for name, (m, k) in owned.items():  # the module's workspace and what the library holds
        peak[name] += m.plan.workspace_bytes + m.plan.held_bytes + k.held_bytes

    # The two distributed cases, shard by shard.
    outs = {}
    for name in ("ulysses", "torch-ulysses"):
        _, fn, xs = cases[name]
        outs[name] = [step(fn, xs).detach()] + [x.grad for x in xs[:3]]
    err = torch.tensor([max((u.float() - t.float()).abs().max().item()
                            for u, t in zip(outs["ulysses"], outs["torch-ulysses"])),
                        max(t.float().abs().max().item() for t in outs["torch-ulysses"])],
                       device="cuda")
    dist.all_reduce(err, op=dist.ReduceOp.MAX)
    tol = 4 * 2**-8 * max(1.0, err[1].item())
    ok = err[0].item() <= tol

    flops = 3.5 * 4 * seq * seq * a.heads * a.head_dim / 2  # causal, backward = 2.5x forward
    names = list(cases)
    med = torch.tensor([statistics.median(times[n]) if times[n] else 0.0 for n in names] +
                       [float(peak[n]) for n in names], device="cuda", dtype=torch.float64)
    dist.all_reduce(med, op=dist.ReduceOp.MAX)  # the slowest rank's step, the largest peak
    rows = []
    if rank == 0:
        own_one_gpu = {"ulysses": "ulysses cp=1, one GPU", "torch-ulysses": "sdpa, one GPU"}
        print(f"seq {seq}, {world} GPU(s), {a.heads} q / {a.kv_heads} KV heads of {a.head_dim}, "
              f"causal, bf16, forward + backward; medians of {a.rounds} rounds x {a.iters} steps")
        for i, n in enumerate(names):
            gpus = 1 if cases[n][0] else world
            ms, mem = med[i].item(), med[len(names) + i].item() / 2**30
            # (a one-GPU row is its distributed case's T1: no efficiency of its own)
            eff = med[names.index(own_one_gpu[n])].item() / (gpus * ms) if n in own_one_gpu \
                else None
            print(f"  {n:22s} {ms:9.3f} ms  {flops / (ms * 1e-3) / gpus / 1e12:5.0f} TFLOP/s per "
                  f"GPU  " + (f"efficiency {eff:.3f}" if eff is not None else " " * 16) +
                  f"  step peak {mem:.2f} GiB")
            rows.append({"seq": seq, "case": n, "gpus": gpus, "ms": ms, "efficiency": eff,
                         "step_peak_gib": mem})
        if show_kernel:
            print(f"  SDPA's kernel: {sdpa_kernel_name(cases['sdpa, one GPU'][2])}")
        print(f"  ulysses against torch-ulysses (O, dQ, dK, dV): max |difference| "
              f"{err[0].item():.3e} (tolerance {tol:.3e}) -> {'PASS' if ok else 'FAIL'}",
              flush=True)
    return rows, ok


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seq", default="8192,32768", help="total sequence lengths, comma-separated")
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--iters", type=int, default=5, help="timed steps per case and round")
    p.add_argument("--rounds", type=int, default=3, help="rounds over the four cases")
    p.add_argument("--chunks", type=int, default=1,
                   help="ulysses' overlap_chunks (head chunks whose exchanges overlap the kernel)")
    p.add_argument("--sdpa", default="default", choices=["default", *SDPA_BACKENDS],
                   help="the backend PyTorch's SDPA must use (default: PyTorch's choice)")
    p.add_argument("--json", metavar="FILE", help="rank 0 writes every row here")
    a = p.parse_args()

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if not torch.cuda.is_available():
        dist.init_process_group("gloo")
        ok = check_on_cpu(rank, world)
        dist.destroy_process_group()
        raise SystemExit(0 if ok else 1)
    if a.heads % world or a.kv_heads % world:
        p.error(f"--heads {a.heads} and --kv-heads {a.kv_heads} must be multiples of the "
                f"{world} ranks for the PyTorch recipe")
    device = int(os.environ.get("LOCAL_RANK", rank))
    torch.cuda.set_device(device)
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast off, as in ulysses' own
    dist.init_process_group("nccl", device_id=torch.device("cuda", device))
    comm = ut.communicator_from_process_group(device=device)
    one_comm = ulysses.nccl_communicator(ulysses.nccl_unique_id(), 1, 0, device) \
        if rank == 0 else None
    rows, ok = [], True
    backend = contextlib.nullcontext() if a.sdpa == "default" else \
        sdpa_kernel(SDPA_BACKENDS[a.sdpa])
    with backend:
        for i, seq in enumerate(int(s) for s in a.seq.split(",")):
            got, passed = one_length(a, seq, rank, world, comm, one_comm, device, i == 0)
            rows += got
            ok &= passed
    if rank == 0 and a.json:
        with open(a.json, "w") as f:
            json.dump({"world": world, "rows": rows}, f, indent=1)
    dist.destroy_process_group()
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
