"""PyTorch integration: UlyssesAttention, an autograd module over one rank's Plan.

    attn = ulysses.torch.UlyssesAttention(
        ulysses.PlanConfig(num_heads_q=32, num_heads_kv=8, head_dim=128, causal=True,
                           cp=cp, seqlen=131072, dtype="bf16"),
        cp_group)        # exchanges over PyTorch's NCCL communicator of the group, cuDNN kernel
    o = attn(q, k, v)        # this rank's shard [B, S/cp, H, D]; o.backward(...) fills q.grad, ...

Any strides with head_dim contiguous; O and the gradients come back in the order the inputs lie in
memory. Megatron's [s, b, h, d] activations go in as q.transpose(0, 1) (and k, v alike), and
attn(...).transpose(0, 1) is then a contiguous [s, b, h, d] O: nothing is copied either way.

Work is enqueued on PyTorch's current stream. The workspace is one uint8 tensor, reused by every
call (modules of one config, communicator and kernel, a model's layers, run on one module's plan
and workspace); each forward allocates its `saved` buffer, which its autograd node keeps until
backward. torch.compile(fullgraph=True) compiles through the module: there its forward and
backward are the custom operators torch.ops.ulysses.attention_forward / attention_backward. Use
one process per GPU (or one thread per GPU): PyTorch runs all backward work of a device on that
device's one autograd thread, so ranks sharing a GPU in one process (the device loopback) would
wait for each other there; call Plan.forward/backward directly for those. This module imports
torch; the rest of the package does not.

CUDA graphs: after an eager step with the same shapes (it builds cuDNN's graphs), a step can be
captured with torch.cuda.graph or torch.cuda.make_graphed_callables, or replayed by
torch.compile(mode="reduce-overhead"), on a NCCL communicator (PyTorch's or ulysses' own). The
graph holds the serving module's plan and workspace: keep the modules alive, and do not call
release_held, while it is replayed. Packed batches: cu_seqlens given as host values (a list or a
CPU tensor) that an eager step used before capture; replays run on the captured lengths. Under
reduce-overhead compile the model rather than this module alone: Inductor's graphs copy each input
that is not their own output into static buffers (Q, K, V and dO each call). Packed batches'
cu_seqlens are a CPU tensor input, for which Inductor may skip CUDA graphs (not checked here).
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import weakref
from typing import Optional

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


# Under torch.compile the module's forward and backward are custom operators (torch.library), so
# the compiler traces through UlyssesAttention without a graph break (fullgraph=True works): it
# sees each op as an opaque call with a shape function (the fake), and autograd through
# register_autograd. Eager calls take a plain autograd.Function over the same two functions.
#
# The ops find their plan by an int id, which the compiler takes as a constant of the graph.
# Modules whose plans are interchangeable (the same config, communicator and kernel) share one
# id, so the layers of a model compile to one graph instead of one each (past
# torch._dynamo.config.recompile_limit, 8, the rest would run uncompiled); a call runs on any
# live module of its id, whose plan and workspace then serve all of them in turn.
class _Interchangeable:
    def __init__(self, op_id: int):
        self.op_id = op_id
        self.modules: "weakref.WeakSet[UlyssesAttention]" = weakref.WeakSet()
        self.serving = lambda: None  # weakref to the module whose plan runs the calls

    def module(self) -> "Optional[UlyssesAttention]":
        m = self.serving()
        if m is None:  # the first call, or the serving module is gone: another one serves
            m = next(iter(self.modules), None)
            self.serving = weakref.ref(m) if m is not None else (lambda: None)
        return m


_registry = threading.Lock()  # ranks in threads of one process build modules concurrently
_by_key: dict = {}  # (config, communicator, kernel) -> _Interchangeable
_by_id: dict = {}  # op id -> _Interchangeable
_op_ids = itertools.count()
_default_kernels: "weakref.WeakKeyDictionary[Communicator, Kernel]" = weakref.WeakKeyDictionary()


_group_comms: dict = {}  # (id(process group), device) -> weakref to the Communicator over it


def _group_communicator(group) -> Communicator:
    """One Communicator per process group and device while modules use it: layers constructed
    from one group share it, hence their op id (the Communicator keeps the group alive, so no
    other group takes its id meanwhile)."""
    import torch.distributed as dist

    if group is None and dist.is_available() and dist.is_initialized():
        group = dist.distributed_c10d._get_default_group()
    device = torch.cuda.current_device() if torch.cuda.is_available() else None
    key = (id(group), device)
    with _registry:
        ref = _group_comms.get(key)
        comm = ref() if ref is not None else None
    if comm is None:  # (collective over the group when PyTorch has no communicator yet: unlocked)
        comm = communicator_from_process_group(group)
        with _registry:
            for k in [k for k, r in _group_comms.items() if r() is None]:
                del _group_comms[k]
            _group_comms[key] = weakref.ref(comm)
    return comm


def _op_id(module: "UlyssesAttention") -> int:
    plan = module.plan
    # The plan keeps its communicator and kernel alive, so while a module of the key lives, no
    # other object can take their ids; once none lives, the key starts over with a new op id.
    key = (repr(plan.config), id(plan._comm), id(plan._kernel))
    with _registry:
        group = _by_key.get(key)
        if group is None or not group.modules:
            for k in [k for k, g in _by_key.items() if not g.modules]:  # retire dead ids
                del _by_id[_by_key.pop(k).op_id]
            group = _Interchangeable(next(_op_ids))
            _by_key[key], _by_id[group.op_id] = group, group
        group.modules.add(module)
        return group.op_id


def _module(op_id: int) -> "UlyssesAttention":
    with _registry:
        group = _by_id.get(op_id)
        m = group.module() if group is not None else None
    if m is None:
        raise UlyssesError(1, f"ulysses.torch: no UlyssesAttention of op id {op_id} is alive")
    return m


# Device copies of packed batches' cu_seqlens, shared by every module: a model's layers take one
# batch's lengths each, so one copy serves them all, and lengths seen before cost no copy. The
# copy goes through pinned memory without waiting for the stream (from pageable memory PyTorch
# would wait for all the GPU work enqueued before it). A copy used while a CUDA graph was being
# captured stays for the life of the process: the graph's replays read it.
_cu_copies: dict = {}  # (device, values) -> (int32 tensor, stream it was made on), oldest first
_cu_captured: dict = {}  # the same, for copies that a captured graph holds
_CU_COPIES = 16


def _cu_device_copy(host: torch.Tensor, values: tuple, device: torch.device,
                    capturing: bool) -> torch.Tensor:
    key = (device, values)
    stream = torch.cuda.current_stream(device)
    with _registry:
        entry = _cu_captured.get(key)
        if entry is None:
            entry = _cu_copies.pop(key, None)
            if entry is not None:  # kept for the graph being captured, or the newest now
                (_cu_captured if capturing else _cu_copies)[key] = entry
    if entry is None:
        if capturing:
            raise UlyssesError(1, "ulysses.torch: cu_seqlens " + _short(values) + " have no "
                                  "device copy yet, and none can be made while a CUDA graph is "
                                  "captured: run one step with them before capturing "
                                  "(torch.cuda.make_graphed_callables' warm-up does)")
        copy = host.pin_memory().to(device, non_blocking=True)
        entry = (copy, stream)
        with _registry:
            _cu_copies[key] = entry
            while len(_cu_copies) > _CU_COPIES:
                del _cu_copies[next(iter(_cu_copies))]  # its users keep it while they need it
    copy, made_on = entry
    if made_on != stream and not capturing:  # freed memory must wait for this stream's reads
        copy.record_stream(stream)
    return copy


def _short(values: tuple) -> str:
    return str(list(values)) if len(values) <= 8 else \
        f"[{', '.join(map(str, values[:4]))}, ..., {values[-1]}] ({len(values)} values)"


def _cu_pair(cu_seqlens, device: torch.device):
    """(host int32 tensor, its device copy or None) from cu_seqlens: ints, or a 1-D tensor of any
    integer dtype on any device (a device tensor costs a synchronizing copy to the host: the plan
    needs the values there; an int32 one on `device` is used as the device copy); every value
    checked to be a whole int32. While the current stream is captured into a CUDA graph the values
    must be on the host and have been seen before (their device copy is made outside capture)."""
    if cu_seqlens is None:
        return None, None
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    values = cu_seqlens
    if isinstance(cu_seqlens, torch.Tensor):
        if (cu_seqlens.dtype.is_floating_point or cu_seqlens.dtype.is_complex
                or cu_seqlens.dim() != 1):
            raise UlyssesError(1, "ulysses.torch: cu_seqlens must be a 1-D integer tensor (got "
                                  f"{cu_seqlens.dtype}, {cu_seqlens.dim()}-D)")
        if capturing and cu_seqlens.device.type != "cpu":
            raise UlyssesError(1, "ulysses.torch: cu_seqlens is a tensor on "
                                  f"{cu_seqlens.device} while a CUDA graph is captured: the plan "
                                  "needs the values on the host, and they cannot be read back "
                                  "during capture; pass them as a list or a CPU tensor")
        values = cu_seqlens.tolist()
    values = tuple(_whole_ints(values, "cu_seqlens"))
    host = torch.tensor(values, dtype=torch.int32)
    if device.type != "cuda":
        return host, None
    if isinstance(cu_seqlens, torch.Tensor) and cu_seqlens.device == device and \
            cu_seqlens.dtype == torch.int32:
        return host, cu_seqlens.contiguous()
    return host, _cu_device_copy(host, values, device, capturing)


def _empty_in_order_of(ref: torch.Tensor, shape) -> torch.Tensor:
    """An empty tensor of `shape` (as many dimensions as `ref`) whose leading dimensions lie in
    memory in the order of ref's strides, outermost first, the last one innermost. Outputs and
    gradients then follow the caller's layout: Megatron's [s, b, h, d] tensors passed as
    x.transpose(0, 1) give an O whose transpose(0, 1) is contiguous, with no copy either way."""
    lead = sorted(range(ref.dim() - 1), key=lambda d: (-ref.stride(d), d))
    order = lead + [ref.dim() - 1]
    out = ref.new_empty([shape[d] for d in order])
    return out.permute([order.index(d) for d in range(ref.dim())])


def _readable(t: torch.Tensor) -> torch.Tensor:
    """`t` itself where the library can read it in place (the last dimension contiguous, every
    other stride positive), else a contiguous copy (e.g. the expanded gradient of a sum)."""
    if t.stride(-1) == 1 and all(st > 0 for st, n in zip(t.stride(), t.shape) if n > 1):
        return t
    return t.contiguous()


def _run_forward(m: "UlyssesAttention", q, k, v, sinks, cu_pair):
    """The plan's forward: (o, saved). cu_pair: _cu_pair()'s."""
    o = _empty_in_order_of(q, q.shape[:-1] + v.shape[-1:])  # V's width, q's layout
    saved = m._saved_buffer(q.device)
    cu, cu_dev = cu_pair
    m.plan.forward(q, k, v, o, sinks=sinks, cu_seqlens=cu, cu_seqlens_device=cu_dev,
                   workspace=m._workspace(q.device), saved=saved if saved.numel() else None,
                   stream=m._stream(q.device))
    return o, saved


def _for_backward(m: "UlyssesAttention", q, k, v, o) -> tuple:
    """What backward needs of the caller's q, k, v and o: all four when the plan saves only the
    LSE; nothing when it saves its own head-sharded rows (keeping them would then hold memory a
    model frees after forward: the projections' backward needs their inputs, not q, k, v)."""
    keep = m.plan.config.saved_activations == "lse"
    return (q, k, v, o) if keep else (None, None, None, None)


def _grads_like(m: "UlyssesAttention", d_o, sinks) -> tuple:
    """Empty dq, dk, dv (the shard's rows, shaped from dO and the config, in dO's layout) and
    dsinks (empty without sinks)."""
    c = m.plan.config
    lead = d_o.shape[:-2]  # [B, S/cp] (bshd) or [T/cp] (thd)
    dsinks = (torch.empty_like(sinks) if sinks is not None
              else d_o.new_empty((0,), dtype=torch.float32))
    return (_empty_in_order_of(d_o, lead + (c.num_heads_q, c.head_dim)),
            _empty_in_order_of(d_o, lead + (c.num_heads_kv, c.head_dim)),
            _empty_in_order_of(d_o, lead + (c.num_heads_kv, c.head_dim_v or c.head_dim)), dsinks)


def _run_backward(m: "UlyssesAttention", d_o, q, k, v, o, saved, sinks, cu_pair):
    """The plan's backward: (dq, dk, dv, dsinks), dsinks empty without sinks. q, k, v, o: as
    _for_backward() kept them."""
    dq, dk, dv, dsinks = _grads_like(m, d_o, sinks)
    cu, cu_dev = cu_pair
    m.plan.backward(_readable(d_o), dq, dk, dv, dsinks=dsinks if sinks is not None else None,
                    sinks=sinks, cu_seqlens=cu, cu_seqlens_device=cu_dev,
                    workspace=m._workspace(d_o.device), saved=saved if saved.numel() else None,
                    q=q, k=k, v=v, o=o, stream=m._stream(d_o.device))
    return dq, dk, dv, dsinks


class _Eager(torch.autograd.Function):
    """Outside torch.compile: the same calls without the custom operators' dispatch, which
    costs ~30 us of host time per forward + backward on the development machine's CPU."""

    @staticmethod
    def forward(ctx, m, q, k, v, sinks, cu_pair):
        o, saved = _run_forward(m, q, k, v, sinks, cu_pair)
        ctx.save_for_backward(*_for_backward(m, q, k, v, o), saved, sinks)
        ctx.module, ctx.cu_pair = m, cu_pair  # backward reuses forward's device copy
        return o

    @staticmethod
    def backward(ctx, d_o):
        q, k, v, o, saved, sinks = ctx.saved_tensors
        dq, dk, dv, dsinks = _run_backward(ctx.module, d_o, q, k, v, o, saved, sinks, ctx.cu_pair)
        return None, dq, dk, dv, (dsinks if sinks is not None else None), None


# (Schemas written out: annotations are strings under `from __future__ import annotations`, which
# not every PyTorch release infers a schema from.)
# saved_bytes, the length of forward's `saved` output, is an argument although the module knows
# it: the graph then holds it as a constant, so Inductor's on-disk cache, whose key is the graph,
# cannot hand a compiled graph of another config (another `saved` length, the same shapes and op
# id, e.g. from an earlier process) to this one.
@torch.library.custom_op("ulysses::attention_forward", mutates_args=(), schema=(
    "(Tensor q, Tensor k, Tensor v, Tensor? sinks, Tensor? cu_seqlens, int module_id, "
    "int saved_bytes) -> (Tensor, Tensor)"))
def _forward_op(q, k, v, sinks, cu_seqlens, module_id, saved_bytes):
    m = _module(module_id)
    if m._saved_len() != saved_bytes:
        raise UlyssesError(1, f"ulysses.torch: attention_forward: saved_bytes is {saved_bytes}, "
                              f"but op id {module_id}'s plan saves {m._saved_len()} bytes")
    return _run_forward(m, q, k, v, sinks, _cu_pair(cu_seqlens, q.device))


@_forward_op.register_fake
def _(q, k, v, sinks, cu_seqlens, module_id, saved_bytes):
    return (_empty_in_order_of(q, q.shape[:-1] + v.shape[-1:]),
            q.new_empty((saved_bytes,), dtype=torch.uint8))


@torch.library.custom_op("ulysses::attention_backward", mutates_args=(), schema=(
    "(Tensor d_o, Tensor? q, Tensor? k, Tensor? v, Tensor? o, Tensor saved, Tensor? sinks, "
    "Tensor? cu_seqlens, int module_id) -> (Tensor, Tensor, Tensor, Tensor)"))
def _backward_op(d_o, q, k, v, o, saved, sinks, cu_seqlens, module_id):
    return _run_backward(_module(module_id), d_o, q, k, v, o, saved, sinks,
                         _cu_pair(cu_seqlens, d_o.device))


@_backward_op.register_fake
def _(d_o, q, k, v, o, saved, sinks, cu_seqlens, module_id):
    return _grads_like(_module(module_id), d_o, sinks)


def _setup_context(ctx, inputs, output):
    q, k, v, sinks, cu_seqlens, module_id, _ = inputs
    o, saved = output
    ctx.save_for_backward(*_for_backward(_module(module_id), q, k, v, o), saved, sinks,
                          cu_seqlens)
    ctx.module_id = module_id


def _backward(ctx, d_o, _d_saved):
    q, k, v, o, saved, sinks, cu_seqlens = ctx.saved_tensors
    dq, dk, dv, dsinks = _backward_op(d_o, q, k, v, o, saved, sinks, cu_seqlens, ctx.module_id)
    return dq, dk, dv, (dsinks if sinks is not None else None), None, None, None


_forward_op.register_autograd(_backward, setup_context=_setup_context)


class UlyssesAttention(torch.nn.Module):
    """Context-parallel attention on this rank's shard. Collective: every rank of the
    communicator constructs it with the same config and calls it in the same order.

    `comm`: a ulysses Communicator, or a torch.distributed process group of the NCCL backend, whose
    NCCL communicator then carries the exchanges (communicator_from_process_group, on the current
    CUDA device; one Communicator for every module on the group). `kernel`: None takes cuDNN on
    the communicator's device (the host reference kernel on a host communicator), one kernel for
    every module on that communicator.

    Under torch.compile forward and backward are the custom operators
    torch.ops.ulysses.attention_forward and attention_backward, so a model compiles around the
    module without a graph break (fullgraph=True too), and the layers of a model (modules of one
    config, communicator and kernel: give them the same Kernel, or none) compile once between
    them.

    At cp = 1 a training module saves as saved_activations "lse" whatever the config says (its
    plan.config tells): with nothing exchanged, the caller's q, k, v and O are what backward
    needs, and copying them into head-sharded rows would cost time and memory for the same
    bits."""

    def __init__(self, config: PlanConfig, comm, kernel: Kernel = None):
        super().__init__()
        if not isinstance(comm, Communicator):
            comm = _group_communicator(comm)
        if kernel is None:  # one per communicator, so that the layers' ops share an id
            with _registry:
                kernel = _default_kernels.get(comm)
                if kernel is None:
                    kernel = cudnn_kernel(comm.device) if comm.device >= 0 else reference_kernel()
                    _default_kernels[comm] = kernel
        if config.cp == 1 and config.training and config.saved_activations == "heads":
            # One rank exchanges nothing: the caller's q, k, v and O are the very rows a
            # head-sharded save would copy, so keep them instead (the same bits, no copies, and
            # O's copy less memory: 0.12 ms and 256 MiB at 8k / 32k on one H100, docs/PERF.md).
            config = dataclasses.replace(config, saved_activations="lse")
        self.plan = Plan(config, comm, kernel)
        # (a plain int: torch.compile reads it while tracing, where a library call cannot run)
        self._saved_bytes = max(self.plan.saved_bytes, 1) if config.training else 0
        # The workspace is made with the plan, outside any CUDA graph's memory pool (Inductor's
        # CUDA graphs refuse a tensor that outlives a recorded call without being its output).
        self._ws = None
        if comm.device >= 0:
            self._workspace(torch.device("cuda", comm.device))
        self._id = _op_id(self)

    def _workspace(self, device):
        n = self.plan.workspace_bytes
        if self._ws is None or self._ws.numel() < n or self._ws.device != device:
            self._ws = torch.empty(max(n, 1), dtype=torch.uint8, device=device)
        return self._ws

    def _saved_len(self) -> int:
        """Bytes of each forward's `saved` output (none in inference)."""
        return self._saved_bytes

    def _saved_buffer(self, device):
        return torch.empty(self._saved_len(), dtype=torch.uint8, device=device)

    @staticmethod
    def _stream(device):
        return torch.cuda.current_stream(device) if device.type == "cuda" else None

    def forward(self, q, k, v, sinks=None, cu_seqlens=None):
        """q [B, S/cp, Hq, D] (or [T/cp, Hq, D] for layout thd), k, v likewise with Hkv heads;
        sinks [Hq] fp32 when config.sinks; cu_seqlens (thd): the global cumulative lengths, a
        list of ints or an integer tensor (under torch.compile give a CPU tensor: a list's values
        are compiled in, so each new list compiles again; a GPU tensor is copied to the host)."""
        if not torch.compiler.is_compiling():
            return _Eager.apply(_module(self._id), q, k, v, sinks, _cu_pair(cu_seqlens, q.device))
        if cu_seqlens is not None and not isinstance(cu_seqlens, torch.Tensor):
            cu_seqlens = torch.tensor(_whole_ints(cu_seqlens, "cu_seqlens"), dtype=torch.int32)
        return _forward_op(q, k, v, sinks, cu_seqlens, self._id, self._saved_len())[0]


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
