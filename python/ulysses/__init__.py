"""ulysses: sequence-parallel (context-parallel) attention, from Python.

A thin layer over the C API (include/ulysses/c_api.h, loaded with ctypes): the same plans,
communicators and kernels as the C++ library, no framework needed. Tensors are passed as PyTorch
tensors or NumPy arrays (any strides with head_dim contiguous; the library checks shapes, dtypes and
devices and says what is wrong). Errors raise UlyssesError, which keeps the library's status code.

    import ulysses
    comms = ulysses.loopback_group(2)                  # or nccl_communicator(...) per GPU
    cfg = ulysses.PlanConfig(num_heads_q=8, num_heads_kv=2, head_dim=64, causal=True,
                             cp=2, seqlen=4096, dtype="fp32")
    plan = ulysses.Plan(cfg, comms[rank], ulysses.reference_kernel())   # on every rank
    plan.forward(q, k, v, o, workspace=ws, saved=saved)                 # this rank's shard

ulysses.torch has an autograd module for PyTorch users.
"""

from __future__ import annotations

import ctypes
import dataclasses
from typing import Optional, Sequence

from . import _capi

__all__ = [
    "UlyssesError",
    "PlanConfig",
    "Communicator",
    "Kernel",
    "Plan",
    "DecodeConfig",
    "Decode",
    "loopback_group",
    "device_loopback_group",
    "peer_copy_group",
    "nccl_unique_id",
    "nccl_communicator",
    "wrap_nccl_communicator",
    "reference_kernel",
    "cudnn_kernel",
    "shard_token_ranges",
    "shard_indices",
    "shard_position_ids",
    "packed_sequence_offsets",
    "attention_pairs_by_rank",
    "balance_packed_sequences",
    "packed_token_order",
    "cuda_device_count",
    "built_with_cuda",
    "cudnn_version",
]


def _refuse(message: str):
    raise UlyssesError(1, message)


_lib = _capi.load(_refuse)

_CODES = {
    1: "INVALID_ARGUMENT",
    2: "CONFIG_MISMATCH",
    3: "UNSUPPORTED",
    4: "COMM_ERROR",
    5: "TIMEOUT",
    6: "OUT_OF_MEMORY",
    7: "INTERNAL",
}
_DECODE_KERNELS = {"auto": 0, "local": 1, "built_in": 2}
_DTYPES = {"fp64": 0, "fp32": 1, "fp16": 2, "bf16": 3, "fp8e4m3": 4, "fp8e5m2": 5}
_STRATEGIES = {"ulysses": 0, "ring": 1, "hybrid": 2, "allgather": 3}
_LAYOUTS = {"bshd": 0, "thd": 1}
_SAVED = {"heads": 0, "lse": 1}
_PAYLOADS = {"native": 0, "fp8": 1}
_PACKED_SHARDINGS = {"default": 0, "per_sequence": 1, "stream": 2}


class UlyssesError(RuntimeError):
    """A non-OK Status: `code` is its name ("INVALID_ARGUMENT", ...), str(e) the full message."""

    def __init__(self, code: int, message: str):
        self.code = _CODES.get(code, f"CODE_{code}")
        self.message = message
        super().__init__(message)


def _check(code: int) -> None:
    if code != 0:
        raise UlyssesError(code, _lib.ulysses_last_error().decode(errors="replace"))


def _enum(table: dict, value, name: str) -> int:
    if isinstance(value, int):
        return value  # passed through: the library names a value it does not know
    if value not in table:
        raise UlyssesError(1, f"ulysses: {name} is not known (got {value!r}, expected one of "
                              f"{', '.join(table)})")
    return table[value]


def _whole(value) -> Optional[int]:
    """value as an int if it is a whole number (3, 3.0, NumPy's ints), else None (3.5, "3",
    None): what int() alone would floor or parse."""
    try:
        i = int(value)
    except (TypeError, ValueError):
        return None
    return i if i == value else None


def _set_int(c, field: str, value) -> None:
    """c.field = value, a whole number its C type holds (ctypes would truncate or wrap it)."""
    i = _whole(value)
    if i is not None:
        setattr(c, field, i)
        if getattr(c, field) == i:
            return
    raise UlyssesError(1, f"ulysses: {field} is {value!r}, which is not a whole number the C "
                          "API's field holds")


def _flag(value, name: str) -> int:
    """1 or 0 for True or False (NumPy's bools, 0 and 1 too); a string such as "false", which is
    truthy, or anything else is refused."""
    if isinstance(value, str) or value not in (0, 1):
        raise UlyssesError(1, f"ulysses: {name} is {value!r}, expected True or False")
    return 1 if value else 0


def _fill(c, config, ints, flags) -> None:
    """The attention fields and the named int and bool fields of a config struct."""
    for f in ("num_heads_q", "num_heads_kv", "head_dim", "window_left", "window_right") + ints:
        _set_int(c, f, getattr(config, f))
    for f in ("causal", "sinks") + flags:
        setattr(c, f, _flag(getattr(config, f), f))
    # None: the default (0 in the C struct); an explicit value goes to validate() as it is.
    if config.softmax_scale is not None and float(config.softmax_scale) == 0.0:
        raise UlyssesError(1, "ulysses: softmax_scale must be finite and positive (got 0.0; "
                              "None: 1/sqrt(head_dim))")
    c.softmax_scale = 0.0 if config.softmax_scale is None else float(config.softmax_scale)


@dataclasses.dataclass
class _Attention:
    """ulysses::AttentionConfig's fields (config.h), first in both configs. softmax_scale None:
    1/sqrt(head_dim)."""

    num_heads_q: int = 0
    num_heads_kv: int = 0
    head_dim: int = 0
    softmax_scale: Optional[float] = None
    causal: bool = False
    window_left: int = -1
    window_right: int = -1
    sinks: bool = False


@dataclasses.dataclass
class PlanConfig(_Attention):
    """ulysses::PlanConfig (attention.h documents every field). Enums by name: strategy "ulysses" |
    "ring" | "hybrid" | "allgather", layout "bshd" | "thd", dtype "bf16" | "fp16" | "fp32" | "fp64",
    saved_activations "heads" | "lse", payload "native" | "fp8", packed_sharding "default" |
    "per_sequence" | "stream" (how ring and hybrid cut packed batches)."""

    strategy: str = "ulysses"
    cp: int = 1
    ulysses_degree: int = 0
    layout: str = "bshd"
    dtype: str = "bf16"
    batch: int = 1
    seqlen: int = 0
    training: bool = True
    overlap_chunks: int = 1
    backward_keeps_saved: bool = False
    saved_activations: str = "heads"
    chunks_in_flight: int = 2
    payload: str = "native"
    packed_sharding: str = "default"
    head_dim_v: int = 0  # of V and O when it differs from head_dim (MLA); 0: head_dim

    def _c(self) -> _capi.PlanConfig:
        c = _capi.PlanConfig()
        _lib.ulysses_plan_config_init(ctypes.byref(c))
        _fill(c, self, ("cp", "ulysses_degree", "batch", "seqlen", "overlap_chunks",
                        "chunks_in_flight", "head_dim_v"), ("training", "backward_keeps_saved"))
        for field, table in (("strategy", _STRATEGIES), ("layout", _LAYOUTS), ("dtype", _DTYPES),
                             ("saved_activations", _SAVED), ("payload", _PAYLOADS),
                             ("packed_sharding", _PACKED_SHARDINGS)):
            _set_int(c, field, _enum(table, getattr(self, field), field))
        return c


@dataclasses.dataclass
class DecodeConfig(_Attention):
    """ulysses::DecodeConfig (decode.h documents every field): decoding against a KV cache sharded
    by sequence over `cp` ranks. dtype "bf16" | "fp16" | "fp32" | "fp64"."""

    cp: int = 1
    dtype: str = "bf16"
    batch: int = 1
    query_tokens: int = 1
    cache_rows: int = 0
    max_segments: int = 2
    max_splits: int = 16
    min_split_rows: int = 1024
    head_dim_v: int = 0  # of V and O when it differs from head_dim (MLA); 0: head_dim
    split_kernel: str = "auto"  # what runs the pieces: "auto" | "local" | "built_in"
    page_size: int = 0  # rows per page of a paged KV cache (forward's page_table); 0: unpaged
    # The layout read on the device when a step runs (forward's segments_device and
    # query_positions_device), so that a captured step replays while the caches grow
    device_layout: bool = False

    def _c(self) -> _capi.DecodeConfig:
        c = _capi.DecodeConfig()
        _lib.ulysses_decode_config_init(ctypes.byref(c))
        _fill(c, self, ("cp", "batch", "query_tokens", "cache_rows", "max_segments", "max_splits",
                        "min_split_rows", "head_dim_v", "page_size"), ("device_layout",))
        _set_int(c, "dtype", _enum(_DTYPES, self.dtype, "dtype"))
        _set_int(c, "split_kernel", _enum(_DECODE_KERNELS, self.split_kernel, "split_kernel"))
        return c


# --- tensors ---

_TORCH_DTYPES = {"float64": 0, "float32": 1, "float16": 2, "bfloat16": 3,
                 "float8_e4m3fn": 4, "float8_e5m2": 5}
_NUMPY_DTYPES = {"<f8": 0, "<f4": 1, "<f2": 2}


def _tensor(x, name: str) -> _capi.Tensor:
    """A view of a PyTorch tensor or NumPy array (None: absent)."""
    t = _capi.Tensor()
    if x is None:
        return t
    if hasattr(x, "data_ptr") and hasattr(x, "stride"):  # torch.Tensor
        dtype = str(x.dtype).replace("torch.", "")
        if dtype not in _TORCH_DTYPES:
            raise UlyssesError(1, f"ulysses: {name} has an unsupported dtype (got {dtype})")
        t.data, t.dtype = x.data_ptr(), _TORCH_DTYPES[dtype]
        t.device = x.device.index if x.device.type == "cuda" else -1
        shape, strides = tuple(x.shape), tuple(x.stride())
    elif hasattr(x, "__array_interface__"):  # numpy.ndarray
        ai = x.__array_interface__
        if ai["typestr"] not in _NUMPY_DTYPES:
            raise UlyssesError(1, f"ulysses: {name} has an unsupported dtype (got {ai['typestr']})")
        t.data, t.dtype, t.device = ai["data"][0], _NUMPY_DTYPES[ai["typestr"]], -1
        shape, itemsize = tuple(x.shape), x.itemsize
        if any(s % itemsize for s in x.strides):  # (a view no element stride can describe)
            raise UlyssesError(1, f"ulysses: {name} has byte strides {tuple(x.strides)} that are "
                                  f"not multiples of its {itemsize}-byte elements")
        strides = tuple(s // itemsize for s in x.strides)
    else:
        raise UlyssesError(1, f"ulysses: {name} is neither a torch.Tensor nor a numpy.ndarray "
                              f"(got {type(x).__name__})")
    if not 1 <= len(shape) <= 4:
        raise UlyssesError(1, f"ulysses: {name} has {len(shape)} dimensions, expected 1..4")
    t.ndim = len(shape)
    for d, (n, s) in enumerate(zip(shape, strides)):
        t.shape[d], t.strides[d] = n, s
    return t


def _address(x: int, what: str) -> int:
    """An int given as an address: one a pointer holds (ctypes would wrap -1 to 2^64 - 1)."""
    if not 0 <= x < (1 << 64):
        raise UlyssesError(1, f"ulysses: {what} is {x}, which is not an address")
    return x


def _pointer(x) -> Optional[int]:
    """The address of a buffer: a tensor, an array, or an int (None: NULL)."""
    if x is None:
        return x
    if isinstance(x, int):
        return _address(x, "a buffer address")
    if hasattr(x, "data_ptr"):
        return x.data_ptr()
    if hasattr(x, "__array_interface__"):
        return x.__array_interface__["data"][0]
    raise UlyssesError(1, f"ulysses: expected a buffer (tensor, array or address), got "
                          f"{type(x).__name__}")


def _stream(stream) -> Optional[int]:
    """A cudaStream_t: None (the legacy default stream), an int, or a torch.cuda.Stream."""
    if stream is None:
        return stream
    if isinstance(stream, int):
        return _address(stream, "stream")
    return stream.cuda_stream


def _fill_common(a, cu_seqlens, cu_seqlens_device, workspace, saved) -> None:
    """The fields ForwardArgs and BackwardArgs share (ctypes keeps the cu_seqlens array alive with
    the struct)."""
    cu, a.num_cu_seqlens = _cu(cu_seqlens)
    if cu is not None:
        a.cu_seqlens = cu
    a.cu_seqlens_device = _pointer(cu_seqlens_device)
    a.workspace, a.saved = _pointer(workspace), _pointer(saved)


def _int32_host(x, name: str, count: Optional[int]):
    """A host int32 array of `count` entries (None: any) for the C API, which reads that many: a
    contiguous int32 NumPy array or CPU tensor as it is (no copy), anything else iterable copied.
    Returns (pointer, keep-alive)."""
    int32_p = ctypes.POINTER(ctypes.c_int32)

    def sized(n):
        if count is not None and n != count:
            raise UlyssesError(1, f"ulysses: {name} has {n} entries, expected {count}")

    if hasattr(x, "data_ptr") and hasattr(x, "is_contiguous"):  # torch.Tensor
        if str(x.dtype) != "torch.int32" or x.device.type != "cpu" or not x.is_contiguous():
            raise UlyssesError(1, f"ulysses: {name} must be a contiguous int32 CPU tensor (got "
                                  f"{x.dtype} on {x.device})")
        sized(x.numel())
        return ctypes.cast(x.data_ptr(), int32_p), x
    ai = getattr(x, "__array_interface__", None)
    if ai is not None and ai["typestr"] == "<i4" and ai.get("strides") is None:
        sized(x.size)
        return ctypes.cast(ai["data"][0], int32_p), x
    def flat(v):  # nested lists ([B][pages]) row by row
        for e in (v.ravel() if hasattr(v, "ravel") else v):
            if hasattr(e, "__len__"):
                yield from flat(e)
            else:
                yield e

    values = _whole_ints(flat(x), name)
    sized(len(values))
    arr = (ctypes.c_int32 * max(1, len(values)))(*values)
    return ctypes.cast(arr, int32_p), arr


def _whole_ints(values, name: str, bits: int = 32) -> list:
    """`values` as Python ints, each a whole number that int`bits` holds (never
    truncated or wrapped)."""
    out = []
    for v in values:
        i = _whole(v)
        if i is None or not -(1 << (bits - 1)) <= i < (1 << (bits - 1)):
            raise UlyssesError(1, f"ulysses: {name} holds {v!r}, which is not an int{bits} value")
        out.append(i)
    return out


def _cu(cu_seqlens):
    if cu_seqlens is None:
        return None, 0
    values = _whole_ints(cu_seqlens, "cu_seqlens")
    return (ctypes.c_int32 * len(values))(*values), len(values)


# --- communicators and kernels ---

class _Handle:
    """Owns one handle of the C API; `_destroy` names the function that frees it."""

    _destroy = ""

    def __init__(self, handle: Optional[int]):
        self._h = ctypes.c_void_p(handle)

    def __del__(self):
        h = getattr(self, "_h", None)
        if h and h.value and _lib is not None:
            getattr(_lib, self._destroy)(h)
            self._h = None


class Communicator(_Handle):
    """One rank's communicator. Use it from one thread at a time (one thread per rank when a
    process drives several)."""

    _destroy = "ulysses_comm_destroy"

    @property
    def rank(self) -> int:
        return _lib.ulysses_comm_rank(self._h)

    @property
    def size(self) -> int:
        return _lib.ulysses_comm_size(self._h)

    @property
    def device(self) -> int:
        """-1 for the host, else the CUDA device."""
        return _lib.ulysses_comm_device(self._h)

    def synchronize(self, stream=None) -> None:
        _check(_lib.ulysses_comm_synchronize(self._h, _stream(stream)))


def _group(create, size: int):
    handles = (ctypes.c_void_p * size)()
    _check(create(handles))
    return [Communicator(h) for h in handles]


def loopback_group(size: int) -> list:
    """`size` host ranks talking through shared memory (CPU; give each to its own thread)."""
    return _group(lambda out: _lib.ulysses_loopback_group(size, out), size)


def device_loopback_group(size: int, device: int = 0) -> list:
    """`size` virtual ranks on one GPU (for testing P ranks on one device)."""
    return _group(lambda out: _lib.ulysses_device_loopback_group(size, device, out), size)


def peer_copy_group(devices: Sequence[int]) -> list:
    """Rank r on devices[r], transfers as copy-engine copies (one process, several GPUs)."""
    arr = (ctypes.c_int * len(devices))(*devices)
    return _group(lambda out: _lib.ulysses_peer_copy_group(arr, len(devices), out), len(devices))


def nccl_unique_id() -> bytes:
    """NCCL's 128-byte unique id: create on one rank, send to the others (e.g. with
    torch.distributed.broadcast_object_list)."""
    buf = ctypes.create_string_buffer(128)
    _check(_lib.ulysses_nccl_unique_id(buf))
    return buf.raw


def nccl_communicator(unique_id: bytes, size: int, rank: int, device: int,
                      timeout_ms: int = 0) -> Communicator:
    """An NCCL communicator ulysses owns (collective: every rank calls it with the same id)."""
    if len(unique_id) != 128:
        raise UlyssesError(1, f"ulysses: unique_id has {len(unique_id)} bytes, expected 128")
    out = ctypes.c_void_p()
    _check(_lib.ulysses_nccl_communicator(unique_id, size, rank, device, timeout_ms,
                                          ctypes.byref(out)))
    return Communicator(out.value)


def wrap_nccl_communicator(nccl_comm: int, device: int, timeout_ms: int = 0,
                           owner: object = None) -> Communicator:
    """A communicator over an NCCL communicator the caller already has: `nccl_comm` is its
    ncclComm_t as an integer, created on CUDA device `device` (ulysses.torch's
    communicator_from_process_group() takes PyTorch's). ulysses never destroys it: keep it alive
    as long as the Communicator and its plans (`owner`, if given, is kept alive by the
    Communicator for that)."""
    if not isinstance(nccl_comm, int) or isinstance(nccl_comm, bool):
        raise UlyssesError(1, "ulysses.wrap_nccl_communicator: nccl_comm is "
                              f"{type(nccl_comm).__name__}, expected an int (the ncclComm_t)")
    out = ctypes.c_void_p()
    _check(_lib.ulysses_nccl_wrap(ctypes.c_void_p(_address(nccl_comm, "nccl_comm")), device,
                                  timeout_ms, ctypes.byref(out)))
    comm = Communicator(out.value)
    comm._owner = owner
    return comm


class Kernel(_Handle):
    """A local attention kernel (the reference or cuDNN). One per rank."""

    _destroy = "ulysses_kernel_destroy"

    @property
    def held_bytes(self) -> int:
        """Memory the kernel keeps outside its callers' workspaces now (grow-only buffers a call
        needed, e.g. a packed batch's larger cuDNN workspace): not seen by a framework's
        allocator."""
        return _lib.ulysses_kernel_held_bytes(self._h)

    def release_held(self, stream=None) -> None:
        """Frees what held_bytes counts, in stream order on `stream` (after the calls that used
        it); a later call that needs it allocates again."""
        _check(_lib.ulysses_kernel_release_held(self._h, _stream(stream)))

    def cudnn_graph_stats(self) -> dict:
        """A cuDNN kernel's graph builds so far: {"graphs", "failed", "build_seconds"} (graphs are
        built on first use of each shape, which is why a first step is slower). UlyssesError
        (INVALID_ARGUMENT) for the reference kernel."""
        graphs, failed, seconds = ctypes.c_int64(), ctypes.c_int64(), ctypes.c_double()
        _check(_lib.ulysses_kernel_cudnn_graph_stats(self._h, ctypes.byref(graphs),
                                                     ctypes.byref(failed), ctypes.byref(seconds)))
        return {"graphs": graphs.value, "failed": failed.value, "build_seconds": seconds.value}


def reference_kernel() -> Kernel:
    """The host reference kernel (CPU, any float dtype)."""
    out = ctypes.c_void_p()
    _check(_lib.ulysses_reference_kernel(ctypes.byref(out)))
    return Kernel(out.value)


def cudnn_kernel(device: int, deterministic: bool = False) -> Kernel:
    """cuDNN's fused attention on `device` (bf16/fp16)."""
    out = ctypes.c_void_p()
    _check(_lib.ulysses_cudnn_kernel(device, _flag(deterministic, "deterministic"),
                                     ctypes.byref(out)))
    return Kernel(out.value)


# --- plans ---

class _Collective(_Handle):
    """A plan handle created collectively from a config, a communicator and a kernel (`_create`
    names the C function); keeps the communicator and kernel alive."""

    _create = ""

    def __init__(self, config, comm: Communicator, kernel: Kernel):
        super().__init__(None)
        self.config = config
        self._comm, self._kernel = comm, kernel
        c = config._c()
        _check(getattr(_lib, self._create)(ctypes.byref(c), comm._h, kernel._h,
                                           ctypes.byref(self._h)))


class Plan(_Collective):
    """ulysses::DistributedAttention for one rank. Creating it is collective (every rank, same
    config); so are forward() and backward(). Keeps its communicator and kernel alive."""

    _create, _destroy = "ulysses_plan_create", "ulysses_plan_destroy"

    @property
    def workspace_bytes(self) -> int:
        return _lib.ulysses_plan_workspace_bytes(self._h)

    @property
    def saved_bytes(self) -> int:
        return _lib.ulysses_plan_saved_bytes(self._h)

    @property
    def held_bytes(self) -> int:
        """Memory the plan itself keeps outside workspace and saved (one-rank copy buffers for
        unaligned views); its kernel's is Kernel.held_bytes."""
        return _lib.ulysses_plan_held_bytes(self._h)

    def release_held(self, stream=None) -> None:
        """Frees what held_bytes counts, in stream order on `stream`; not collective."""
        _check(_lib.ulysses_plan_release_held(self._h, _stream(stream)))

    def forward(self, q, k, v, o, *, lse=None, sinks=None, cu_seqlens=None,
                cu_seqlens_device=None, workspace=None, saved=None, stream=None) -> None:
        """This rank's shard: q, k, v in, o (and lse) out; `saved` kept for backward.
        cu_seqlens: packed (thd) batches, host ints (ulysses and allgather: offsets in the packed
        stream; ring and hybrid: real lengths, each sequence at packed_sequence_offsets()); with a
        GPU kernel also cu_seqlens_device, the same values as an int32 device buffer."""
        a = _capi.ForwardArgs()
        for n, x in (("q", q), ("k", k), ("v", v), ("o", o), ("lse", lse), ("sinks", sinks)):
            setattr(a, n, _tensor(x, n))
        _fill_common(a, cu_seqlens, cu_seqlens_device, workspace, saved)
        _check(_lib.ulysses_plan_forward(self._h, ctypes.byref(a), _stream(stream)))

    def backward(self, d_o, dq, dk, dv, *, dsinks=None, sinks=None, cu_seqlens=None,
                 cu_seqlens_device=None, workspace=None, saved=None, q=None, k=None, v=None,
                 o=None, stream=None) -> None:
        """After forward() with the same `saved`: dq, dk, dv (and dsinks) out. q, k, v, o are read
        with saved_activations = "lse" only."""
        a = _capi.BackwardArgs()
        for n, x in (("d_o", d_o), ("dq", dq), ("dk", dk), ("dv", dv), ("dsinks", dsinks),
                     ("sinks", sinks), ("q", q), ("k", k), ("v", v), ("o", o)):
            setattr(a, n, _tensor(x, n))
        _fill_common(a, cu_seqlens, cu_seqlens_device, workspace, saved)
        _check(_lib.ulysses_plan_backward(self._h, ctypes.byref(a), _stream(stream)))


class Decode(_Collective):
    """ulysses::DistributedDecode for one rank: decode steps against a KV cache sharded by
    sequence. Creating it is collective (every rank, same config); so is forward()."""

    _create, _destroy = "ulysses_decode_create", "ulysses_decode_destroy"

    @property
    def workspace_bytes(self) -> int:
        return _lib.ulysses_decode_workspace_bytes(self._h)

    def forward(self, q, k_cache, v_cache, o, *, segments=None, query_position=None, lse=None,
                sinks=None, workspace=None, stream=None, page_table=None,
                page_table_device=None, segments_device=None,
                query_positions_device=None) -> None:
        """q [B, T, Hq, D] (the same on every rank) against this rank's cache [B, cache_rows,
        Hkv, D]; o (and lse [B, Hq, T]) out, the same on every rank. segments: (row, rows,
        position) triples, the cache rows that hold keys and their global positions, shared by
        every sequence; or, with query_position a list of B positions (sequences of different
        lengths), a list of B such lists, sequence b's in the rows of its own cache.

        Paged caches (config page_size > 0): k_cache and v_cache are pools [pages, page_size,
        Hkv, D]; page_table [B, cache_rows / page_size] int32 on the host maps sequence b's row r
        to page page_table[b][r // page_size]; page_table_device, optional, the same table on
        the GPU (a tensor or an address; None: the library copies page_table each step).

        config device_layout: no segments, query_position or page_table; instead
        segments_device, int64 [B, max_segments, 3] of (row, rows, position) (rows 0: unused),
        query_positions_device, int64 [B], and a paged cache's page_table_device, all on the
        device and read when the step runs: a step captured in a CUDA graph (torch.cuda.graph)
        follows what they hold at each replay."""
        a, keep = self._args(q, k_cache, v_cache, o, segments, query_position, lse, sinks,
                             workspace, page_table, page_table_device, segments_device,
                             query_positions_device)
        _check(_lib.ulysses_decode_forward(self._h, ctypes.byref(a), _stream(stream)))
        del keep

    def check_device_layout(self, q, k_cache, v_cache, o, *, lse=None, sinks=None,
                            workspace=None, stream=None, page_table_device=None,
                            segments_device=None, query_positions_device=None) -> None:
        """config device_layout: waits for `stream`, reads the device layout back and raises
        UlyssesError naming its first bad entry where forward() would refuse it as a host
        layout. For tests and debugging, not inside a captured step; local (no other rank)."""
        a, keep = self._args(q, k_cache, v_cache, o, None, None, lse, sinks, workspace, None,
                             page_table_device, segments_device, query_positions_device)
        _check(_lib.ulysses_decode_check_device_layout(self._h, ctypes.byref(a),
                                                       _stream(stream)))
        del keep

    def _args(self, q, k_cache, v_cache, o, segments, query_position, lse, sinks, workspace,
              page_table, page_table_device, segments_device, query_positions_device):
        """The C arguments of a step, and what must stay alive while the library reads them."""
        a = _capi.DecodeArgs()
        for n, x in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache), ("o", o), ("lse", lse),
                     ("sinks", sinks)):
            setattr(a, n, _tensor(x, n))
        keep = []
        if segments is not None or query_position is not None:
            if segments is None or query_position is None:
                raise UlyssesError(1, "ulysses: segments and query_position go together (a "
                                      "device layout passes neither)")
            ragged = isinstance(query_position, (list, tuple))
            per_seq = [list(s) for s in segments] if ragged else [list(segments)]
            segs = [tuple(_whole_ints(s, "segments", 64)) for seq in per_seq for s in seq]
            arr = (_capi.CacheSegment * max(1, len(segs)))(
                *[_capi.CacheSegment(*s) for s in segs])
            a.segments = arr
            a.num_segments = len(segs)
            if ragged:
                offsets = [0]
                for seq in per_seq:
                    offsets.append(offsets[-1] + len(seq))
                offs = (ctypes.c_int64 * len(offsets))(*offsets)
                pos = (ctypes.c_int64 * max(1, len(query_position)))(
                    *_whole_ints(query_position, "query_position", 64))
                a.segment_offsets, a.query_positions = offs, pos
            else:
                (a.query_position,) = _whole_ints([query_position], "query_position", 64)
        a.workspace = _pointer(workspace)
        if page_table is not None:
            c = self.config
            # (Unpaged, the library refuses a table before reading more than its first entry.)
            count = c.batch * c.cache_rows // c.page_size if c.page_size > 0 else None
            a.page_table, table = _int32_host(page_table, "page_table", count)
            keep.append(table)
        a.page_table_device = _pointer(page_table_device)
        a.segments_device = _pointer(segments_device)
        a.query_positions_device = _pointer(query_positions_device)
        return a, keep


def shard_token_ranges(config: PlanConfig, rank: int, cu_seqlens=None) -> list:
    """The global token ranges [begin, end) rank `rank` holds (strategy, cp, ulysses_degree and
    seqlen of `config`; cu_seqlens for packed ring/hybrid batches, which pad every sequence;
    allgather shards the packed stream like one sequence)."""
    c = config._c()
    cu, n_cu = _cu(cu_seqlens)
    cap = 2 * max(1, n_cu) + 8
    ranges = (ctypes.c_int64 * (2 * cap))()
    count = ctypes.c_int64()
    _check(_lib.ulysses_shard_token_ranges(ctypes.byref(c), rank, cu, n_cu, ranges, cap,
                                           ctypes.byref(count)))
    return [(ranges[2 * i], ranges[2 * i + 1]) for i in range(count.value)]


def shard_indices(config: PlanConfig, rank: int, cu_seqlens=None) -> list:
    """The global token indices rank `rank` holds, in shard order (for index_select / take)."""
    return [i for b, e in shard_token_ranges(config, rank, cu_seqlens) for i in range(b, e)]


def shard_position_ids(config: PlanConfig, rank: int, cu_seqlens=None) -> list:
    """Position ids of rank `rank`'s tokens in shard order, e.g. for rotary embeddings: global
    positions, or with cu_seqlens the position inside each token's packed sequence (0: padding)."""
    c = config._c()
    cu, n_cu = _cu(cu_seqlens)
    cap = max(1, int(config.seqlen) // max(1, int(config.cp)))
    ids = (ctypes.c_int32 * cap)()
    count = ctypes.c_int64()
    _check(_lib.ulysses_shard_position_ids(ctypes.byref(c), rank, cu, n_cu, ids, cap,
                                           ctypes.byref(count)))
    return list(ids[:count.value])


def packed_sequence_offsets(config: PlanConfig, cu_seqlens) -> list:
    """Where each packed sequence starts once laid out for config's strategy (ring and hybrid pad
    every sequence to a multiple of 2 x ring size; ulysses and allgather: cu_seqlens itself)."""
    c = config._c()
    cu, n_cu = _cu(cu_seqlens)
    out = (ctypes.c_int32 * max(1, n_cu))()
    _check(_lib.ulysses_packed_sequence_offsets(ctypes.byref(c), cu, n_cu, out))
    return list(out[:n_cu])


def attention_pairs_by_rank(config: PlanConfig, cu_seqlens=None) -> list:
    """The attention work of each rank: the (query, key) pairs its kernel calls see under config's
    masks for config.seqlen tokens laid out by config's strategy (cu_seqlens: a packed batch).
    Only the masks of config's attention fields are read. max / mean is what the slowest rank
    costs: the packed stream in zigzag chunks (allgather, packed_sharding="stream") is uneven for
    documents; balance_packed_sequences() evens it."""
    c = config._c()
    cu, n_cu = _cu(cu_seqlens)
    out = (ctypes.c_double * max(1, int(config.cp)))()
    _check(_lib.ulysses_attention_pairs_by_rank(ctypes.byref(c), cu, n_cu, out))
    return list(out[:int(config.cp)])


def balance_packed_sequences(config: PlanConfig, cu_seqlens) -> tuple:
    """An order of a packed batch's sequences that evens out the ranks' attention work (returns
    (order, reordered_cu_seqlens); order[k] is the sequence placed k-th). Sequences of a packed
    batch are independent: build the batch in this order on every rank (packed_token_order()
    gives the token indices). Deterministic; the given order where order changes nothing."""
    c = config._c()
    cu, n_cu = _cu(cu_seqlens)
    order = (ctypes.c_int32 * max(1, n_cu - 1))()
    reordered = (ctypes.c_int32 * max(1, n_cu))()
    _check(_lib.ulysses_balance_packed_sequences(ctypes.byref(c), cu, n_cu, order, reordered))
    return list(order[:max(0, n_cu - 1)]), list(reordered[:n_cu])


def packed_token_order(cu_seqlens, order, total_tokens=None) -> list:
    """Token indices that put a packed batch's sequences in `order`: x[indices] (NumPy) or
    x.index_select(0, torch.tensor(indices)) is the reordered batch (tokens, labels, any per-token
    tensor). With total_tokens, the padding after cu_seqlens[-1] follows, in place."""
    cu = [int(v) for v in cu_seqlens]
    if sorted(int(s) for s in order) != list(range(len(cu) - 1)):
        raise ValueError(f"order {list(order)} is not a permutation of the {len(cu) - 1} sequences")
    tail = range(cu[-1], cu[-1] if total_tokens is None else int(total_tokens))
    return [t for s in order for t in range(cu[s], cu[s + 1])] + list(tail)


def cuda_device_count() -> int:
    return _lib.ulysses_cuda_device_count()


def built_with_cuda() -> bool:
    return bool(_lib.ulysses_built_with_cuda())


def cudnn_version() -> int:
    return _lib.ulysses_cudnn_version()
