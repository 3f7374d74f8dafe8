"""PyTorch integration: UlyssesAttention, an autograd module over one rank's Plan.

    attn = ulysses.torch.UlyssesAttention(
        ulysses.PlanConfig(num_heads_q=32, num_heads_kv=8, head_dim=128, causal=True,
                           cp=cp, seqlen=131072, dtype="bf16"),
        cp_group)        # exchanges over PyTorch's NCCL communicator of the group, cuDNN kernel
    o = attn(q, k, v)        # this rank's shard [B, S/cp, H, D]; o.backward(...) fills q.grad, ...

Work is enqueued on PyTorch's current stream. The workspace is one uint8 tensor per module, reused
by every call; each forward allocates its `saved` buffer, which its autograd node keeps until
backward. Use one process per GPU (or one thread per GPU): PyTorch runs all backward work of a
device on that device's one autograd thread, so ranks sharing a GPU in one process (the device
loopback) would wait for each other there; call Plan.forward/backward directly for those. This
module imports torch; the rest of the package does not.
"""

from __future__ import annotations

import torch

from . import (Communicator, Kernel, Plan, PlanConfig, UlyssesError, _whole_ints, cudnn_kernel,
               reference_kernel, shard_indices, wrap_nccl_communicator)

__all__ = ["UlyssesAttention", "communicator_from_process_group", "shard", "unshard"]


def communicator_from_process_group(group=None, device=None, timeout_ms: int = 0) -> Communicator:
    """ulysses' communicator over the NCCL communicator PyTorch holds for `group` (a
    torch.distributed process group of the NCCL backend; None: the default group) on CUDA device
    `device` (None: the current one). No second NCCL communicator is created: ulysses' exchanges
    go through PyTorch's, which is blocking unless TORCH_NCCL_USE_COMM_NONBLOCKING is set, so
    each exchange costs ~13 us of host time instead of the ~150-190 us of ulysses' own
    non-blocking communicators (ulysses.nccl_communicator). Collective over the group when
    PyTorch has not made the communicator yet (it makes it at the group's first collective: this
    runs one, an all_reduce of one element). The Communicator keeps the group object alive, but
    destroy_process_group() frees PyTorch's communicator whatever holds the group: drop the
    Communicator and the plans made with it first. PyTorch's collectives on the group and
    ulysses' calls share one NCCL communicator, which runs operations in the order they were
    issued: every rank must issue them in the same order, as any SPMD program does (a sequence-
    parallel group of its own, apart from the data-parallel one, keeps them apart altogether). On
    a timeout ulysses aborts PyTorch's communicator with its own."""
    import torch.distributed as dist

    api = "ulysses.torch.communicator_from_process_group"
    if not dist.is_available() or not dist.is_initialized():
        raise UlyssesError(1, f"{api}: torch.distributed is not initialised "
                              "(call torch.distributed.init_process_group first)")
    if group is None:
        group = dist.distributed_c10d._get_default_group()
    if device is None:
        if not torch.cuda.is_available():
            raise UlyssesError(3, f"{api}: PyTorch sees no CUDA device (NCCL groups need one)")
        device = torch.cuda.current_device()
    cuda = torch.device("cuda", device)
    try:
        backend = group._get_backend(cuda)
    except (RuntimeError, ValueError) as e:
        raise UlyssesError(1, f"{api}: the group has no CUDA backend ({e}); expected an NCCL "
                              "process group") from None
    comm_ptr = getattr(backend, "comm_ptr", None) or getattr(backend, "_comm_ptr", None)
    if comm_ptr is None:
        raise UlyssesError(3, f"{api}: the group's CUDA backend is {type(backend).__name__}, "
                              "which gives no NCCL communicator (expected ProcessGroupNCCL with "
                              f"comm_ptr() or _comm_ptr(); PyTorch {torch.__version__}); "
                              "ulysses.nccl_communicator makes one of ulysses' own")

    def current_ptr():  # PyTorch answers for its current device; 0 (or an error) before it has one
        with torch.cuda.device(device):
            try:
                return comm_ptr()
            except RuntimeError:
                return 0

    ptr = current_ptr()
    if not ptr:
        dist.all_reduce(torch.zeros(1, device=cuda), group=group)
        ptr = current_ptr()
    if not ptr:
        raise UlyssesError(4, f"{api}: PyTorch made no NCCL communicator for the group on device "
                              f"{device}, even after a collective")
    return wrap_nccl_communicator(ptr, device, timeout_ms, owner=group)


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, module, q, k, v, sinks):
        plan = module.plan
        o = torch.empty(q.shape[:-1] + v.shape[-1:], dtype=q.dtype, device=q.device)  # V's width
        saved = module._saved_buffer(q.device) if plan.config.training else None
        cu, cu_dev = module._cu
        plan.forward(q, k, v, o, sinks=sinks, cu_seqlens=cu, cu_seqlens_device=cu_dev,
                     workspace=module._workspace(q.device), saved=saved,
                     stream=module._stream(q.device))
        ctx.module, ctx.saved_buffer, ctx.cu = module, saved, module._cu
        ctx.save_for_backward(q, k, v, o, sinks)
        return o

    @staticmethod
    def backward(ctx, d_o):
        module = ctx.module
        q, k, v, o, sinks = ctx.saved_tensors
        d_o = d_o.contiguous()
        dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
        dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
        dsinks = torch.empty_like(sinks) if sinks is not None else None
        lse_only = module.plan.config.saved_activations == "lse"
        cu, cu_dev = ctx.cu
        module.plan.backward(d_o, dq, dk, dv, dsinks=dsinks, sinks=sinks, cu_seqlens=cu,
                             cu_seqlens_device=cu_dev, workspace=module._workspace(q.device),
                             saved=ctx.saved_buffer,
                             q=q if lse_only else None, k=k if lse_only else None,
                             v=v if lse_only else None, o=o if lse_only else None,
                             stream=module._stream(q.device))
        ctx.saved_buffer = None
        return None, dq, dk, dv, dsinks


class UlyssesAttention(torch.nn.Module):
    """Context-parallel attention on this rank's shard. Collective: every rank of the
    communicator constructs it with the same config and calls it in the same order.

    `comm`: a ulysses Communicator, or a torch.distributed process group of the NCCL backend, whose
    NCCL communicator then carries the exchanges (communicator_from_process_group, on the current
    CUDA device). `kernel`: None takes cuDNN on the communicator's device (the host reference kernel
    on a host communicator)."""

    def __init__(self, config: PlanConfig, comm, kernel: Kernel = None):
        super().__init__()
        if not isinstance(comm, Communicator):
            comm = communicator_from_process_group(comm)
        if kernel is None:
            kernel = cudnn_kernel(comm.device) if comm.device >= 0 else reference_kernel()
        self.plan = Plan(config, comm, kernel)
        self._ws = None
        self._cu = (None, None)

    def _workspace(self, device):
        n = self.plan.workspace_bytes
        if self._ws is None or self._ws.numel() < n or self._ws.device != device:
            self._ws = torch.empty(max(n, 1), dtype=torch.uint8, device=device)
        return self._ws

    def _saved_buffer(self, device):
        return torch.empty(max(self.plan.saved_bytes, 1), dtype=torch.uint8, device=device)

    @staticmethod
    def _stream(device):
        return torch.cuda.current_stream(device) if device.type == "cuda" else None

    def forward(self, q, k, v, sinks=None, cu_seqlens=None):
        """q [B, S/cp, Hq, D] (or [T/cp, Hq, D] for layout thd), k, v likewise with Hkv heads;
        sinks [Hq] fp32 when config.sinks; cu_seqlens (thd): the global cumulative lengths."""
        if cu_seqlens is None:
            self._cu = (None, None)
        else:
            host = _whole_ints(cu_seqlens, "cu_seqlens")
            dev = (torch.tensor(host, dtype=torch.int32, device=q.device)
                   if q.device.type == "cuda" else None)
            self._cu = (host, dev)
        return _Attention.apply(self, q, k, v, sinks)


def shard(x: torch.Tensor, config: PlanConfig, rank: int, dim: int = 1,
          cu_seqlens=None) -> torch.Tensor:
    """Rank `rank`'s tokens of a global tensor along `dim` (zigzag unless ulysses), a copy."""
    idx = torch.tensor(shard_indices(config, rank, cu_seqlens), device=x.device)
    return x.index_select(dim, idx)


def unshard(shards, config: PlanConfig, dim: int = 1, cu_seqlens=None) -> torch.Tensor:
    """The global tensor from every rank's shard (rank order), the inverse of shard()."""
    first = shards[0]
    shape = list(first.shape)
    shape[dim] = int(config.seqlen)
    out = first.new_empty(shape)
    for r, s in enumerate(shards):
        idx = torch.tensor(shard_indices(config, r, cu_seqlens), device=first.device)
        out.index_copy_(dim, idx, s)
    return out
