"""Context-parallel attention across the GPUs of one torchrun job, checked against one GPU.

    torchrun --nproc_per_node=<GPUs> python/examples/torchrun_attention.py --seq 32768 --strategy ulysses

Every rank builds the same random global q, k, v, dO (same seed), keeps its shard
(ulysses.torch.shard: contiguous for ulysses, zigzag for ring/hybrid), runs forward and backward
through ulysses.torch.UlyssesAttention on PyTorch's own NCCL communicator (`--comm torch`, the
default: ulysses.torch.communicator_from_process_group) or on one of ulysses' own (`--comm
ulysses`: non-blocking, its unique id sent over torch.distributed), and gathers the outputs. Rank 0
compares them with PyTorch's scaled_dot_product_attention on the whole sequence and prints the step
time. Exit code 1 if the difference exceeds a few bf16 ulps of the largest value. `--compile [MODE]`
runs the module under torch.compile; `--cuda-graph` captures a whole step into a CUDA graph and
times its replays (no host work in the step).
"""

import argparse
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

import ulysses
import ulysses.torch as ut


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seq", type=int, default=32768)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--strategy", default="ulysses",
                   choices=["ulysses", "ring", "hybrid", "allgather"])
    p.add_argument("--ulysses-degree", type=int, default=0, help="hybrid: ranks per Ulysses group")
    p.add_argument("--saved", default="heads", choices=["heads", "lse"])
    p.add_argument("--payload", default="native", choices=["native", "fp8"])
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--comm", default="torch", choices=["torch", "ulysses"],
                   help="torch: PyTorch's NCCL communicator of the world group; ulysses: one of "
                        "ulysses' own (non-blocking, every wait bounded)")
    p.add_argument("--compile", nargs="?", const="default", metavar="MODE",
                   choices=["default", "reduce-overhead", "max-autotune"],
                   help="run the module under torch.compile(fullgraph=True, mode=MODE); "
                        "reduce-overhead replays its steps as CUDA graphs")
    p.add_argument("--cuda-graph", action="store_true",
                   help="capture a whole step (forward + backward) with torch.cuda.graph after "
                        "two warm-up steps, and time its replays")
    a = p.parse_args()
    if a.cuda_graph and a.compile == "reduce-overhead":
        p.error("--cuda-graph captures the step itself; reduce-overhead already replays graphs")

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    device = int(os.environ.get("LOCAL_RANK", rank))
    torch.cuda.set_device(device)
    # NVLink multicast (NVLS) off in PyTorch's communicators too, as in ulysses' own, unless the
    # environment says otherwise.
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    dist.init_process_group("nccl", device_id=torch.device("cuda", device))

    if a.comm == "torch":
        comm = ut.communicator_from_process_group(device=device)
    else:
        uid = [ulysses.nccl_unique_id() if rank == 0 else None]
        dist.broadcast_object_list(uid, src=0)
        comm = ulysses.nccl_communicator(uid[0], world, rank, device)
    cfg = ulysses.PlanConfig(num_heads_q=a.heads, num_heads_kv=a.kv_heads, head_dim=a.head_dim,
                             causal=True, strategy=a.strategy, cp=world,
                             ulysses_degree=a.ulysses_degree, seqlen=a.seq, dtype="bf16",
                             saved_activations=a.saved, payload=a.payload)
    attn = ut.UlyssesAttention(cfg, comm, ulysses.cudnn_kernel(device))
    if a.compile:  # one graph: the module's forward and backward are custom operators
        attn = torch.compile(attn, fullgraph=True, mode=a.compile)

    g = torch.Generator(device="cuda").manual_seed(1234)
    rand = lambda h: (torch.rand((1, a.seq, h, a.head_dim), generator=g, device="cuda") * 2  # noqa
                      - 1).to(torch.bfloat16)
    q, k, v, d_o = rand(a.heads), rand(a.kv_heads), rand(a.kv_heads), rand(a.heads)
    mine = [ut.shard(x, cfg, rank).requires_grad_(x is not d_o) for x in (q, k, v, d_o)]

    def step():
        o = attn(*mine[:3])
        o.backward(mine[3])
        return o

    if a.cuda_graph:  # warm-up on a side stream (cuDNN's graphs), then one step captured
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                step()
        torch.cuda.current_stream().wait_stream(side)
        for x in mine[:3]:
            x.grad = None  # the graph's own gradients, overwritten by each replay
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            o = step()

    times = []
    for _ in range(a.iters + 2):
        if not a.cuda_graph:
            for x in mine[:3]:
                x.grad = None
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        if a.cuda_graph:
            graph.replay()
        else:
            o = step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    ms = sorted(times[2:])[len(times[2:]) // 2] * 1e3

    def gather(x):
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return ut.unshard(parts, cfg)

    got = [gather(x) for x in (o.detach(), mine[0].grad, mine[1].grad, mine[2].grad)]
    if rank == 0:
        qt, kt, vt = (x.transpose(1, 2).detach().clone().requires_grad_() for x in (q, k, v))
        ot = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=True)
        ot.backward(d_o.transpose(1, 2))
        ok = True
        for name, mine_x, ref in zip(("O", "dQ", "dK", "dV"), got, (ot, qt.grad, kt.grad, vt.grad)):
            ref = ref.transpose(1, 2).float()
            err = (mine_x.float() - ref).abs().max().item()
            tol = (4 if a.payload == "native" else 64) * 2**-8 * max(1.0, ref.abs().max().item())
            ok &= err <= tol
            print(f"{name}: max |ulysses - torch SDPA| = {err:.3e} (tolerance {tol:.3e})")
        flops = 3.5 * 4 * a.seq * a.seq * a.heads * a.head_dim / 2  # causal, backward = 2.5x
        print(f"{a.strategy} cp={world} seq={a.seq} comm={a.comm}"
              f"{' compiled ' + a.compile if a.compile else ''}"
              f"{' cuda-graph' if a.cuda_graph else ''}: {ms:.2f} ms per forward+"
              "backward, "
              f"{flops / (ms * 1e-3) / world / 1e12:.0f} TFLOP/s per GPU -> {'PASS' if ok else 'FAIL'}")
    else:
        ok = True
    dist.destroy_process_group()
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
