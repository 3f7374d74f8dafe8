"""ctypes declarations of include/ulysses/c_api.h (keep the two in step: ULYSSES_C_API_VERSION)."""

import ctypes
import os
import pathlib

API_VERSION = 7


class Tensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("dtype", ctypes.c_int32),
        ("device", ctypes.c_int32),
        ("ndim", ctypes.c_int32),
        ("shape", ctypes.c_int64 * 4),
        ("strides", ctypes.c_int64 * 4),
    ]


# The AttentionConfig fields both config structs start with.
_ATTENTION = [
    ("num_heads_q", ctypes.c_int32),
    ("num_heads_kv", ctypes.c_int32),
    ("head_dim", ctypes.c_int32),
    ("softmax_scale", ctypes.c_float),
    ("causal", ctypes.c_int32),
    ("window_left", ctypes.c_int32),
    ("window_right", ctypes.c_int32),
    ("sinks", ctypes.c_int32),
]


class PlanConfig(ctypes.Structure):
    _fields_ = _ATTENTION + [
        ("strategy", ctypes.c_int32),
        ("cp", ctypes.c_int32),
        ("ulysses_degree", ctypes.c_int32),
        ("layout", ctypes.c_int32),
        ("dtype", ctypes.c_int32),
        ("batch", ctypes.c_int64),
        ("seqlen", ctypes.c_int64),
        ("training", ctypes.c_int32),
        ("overlap_chunks", ctypes.c_int32),
        ("backward_keeps_saved", ctypes.c_int32),
        ("saved_activations", ctypes.c_int32),
        ("chunks_in_flight", ctypes.c_int32),
        ("payload", ctypes.c_int32),
        ("packed_sharding", ctypes.c_int32),
        ("head_dim_v", ctypes.c_int32),
    ]


class DecodeConfig(ctypes.Structure):
    _fields_ = _ATTENTION + [
        ("cp", ctypes.c_int32),
        ("dtype", ctypes.c_int32),
        ("batch", ctypes.c_int64),
        ("query_tokens", ctypes.c_int64),
        ("cache_rows", ctypes.c_int64),
        ("max_segments", ctypes.c_int32),
        ("max_splits", ctypes.c_int32),
        ("min_split_rows", ctypes.c_int64),
        ("head_dim_v", ctypes.c_int32),
        ("split_kernel", ctypes.c_int32),
        ("page_size", ctypes.c_int64),
        ("device_layout", ctypes.c_int32),
    ]


class CacheSegment(ctypes.Structure):
    _fields_ = [("row", ctypes.c_int64), ("rows", ctypes.c_int64), ("position", ctypes.c_int64)]


class DecodeArgs(ctypes.Structure):
    _fields_ = [(n, Tensor) for n in ("q", "k_cache", "v_cache", "sinks", "o", "lse")] + [
        ("segments", ctypes.POINTER(CacheSegment)),
        ("num_segments", ctypes.c_int64),
        ("query_position", ctypes.c_int64),
        ("workspace", ctypes.c_void_p),
        ("segment_offsets", ctypes.POINTER(ctypes.c_int64)),
        ("query_positions", ctypes.POINTER(ctypes.c_int64)),
        ("page_table", ctypes.POINTER(ctypes.c_int32)),
        ("page_table_device", ctypes.c_void_p),
        ("segments_device", ctypes.c_void_p),
        ("query_positions_device", ctypes.c_void_p),
    ]


_CU = [
    ("cu_seqlens", ctypes.POINTER(ctypes.c_int32)),
    ("num_cu_seqlens", ctypes.c_int64),
    ("cu_seqlens_device", ctypes.c_void_p),
    ("workspace", ctypes.c_void_p),
    ("saved", ctypes.c_void_p),
]


class ForwardArgs(ctypes.Structure):
    _fields_ = [(n, Tensor) for n in ("q", "k", "v", "sinks", "o", "lse")] + _CU


class BackwardArgs(ctypes.Structure):
    _fields_ = (
        [(n, Tensor) for n in ("d_o", "sinks", "dq", "dk", "dv", "dsinks")]
        + _CU
        + [(n, Tensor) for n in ("q", "k", "v", "o")]
    )


def _find_library():
    """ULYSSES_LIBRARY, else libulysses_c.so next to this package or in the repository's build/."""
    env = os.environ.get("ULYSSES_LIBRARY")
    if env:
        return env
    here = pathlib.Path(__file__).resolve().parent
    for candidate in (here / "libulysses_c.so", here.parents[1] / "build" / "libulysses_c.so"):
        if candidate.exists():
            return str(candidate)
    raise OSError(
        "ulysses: libulysses_c.so not found; build it (scripts/build.sh) or set ULYSSES_LIBRARY"
    )


_INTS = (ctypes.c_int, ctypes.c_int32, ctypes.c_int64, ctypes.c_size_t)


class _Functions:
    """The library's functions by name. One that takes integers refuses (`refuse(message)`
    raises) an int its C parameter cannot hold, which ctypes would wrap without a word (rank
    2^32 + 1 becoming rank 1)."""

    def __init__(self, lib, sig, refuse):
        for name, (restype, argtypes) in sig.items():
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
            ints = [(i, t) for i, t in enumerate(argtypes) if t in _INTS]
            setattr(self, name, _checked(fn, name, ints, refuse) if ints else fn)


def _checked(fn, name, ints, refuse):
    def call(*args):
        for i, t in ints:
            a = args[i]
            if isinstance(a, int) and t(a).value != a:
                refuse(f"ulysses: {name}'s argument {i + 1} is {a}, which its C type "
                       f"({t.__name__}) cannot hold")
        return fn(*args)

    return call


def load(refuse):
    lib = ctypes.CDLL(_find_library())
    c_int, c_void_p, c_size_t = ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t
    p_comm = ctypes.POINTER(c_void_p)
    sig = {
        "ulysses_c_api_version": (c_int, []),
        "ulysses_last_error": (ctypes.c_char_p, []),
        "ulysses_cuda_device_count": (c_int, []),
        "ulysses_built_with_cuda": (c_int, []),
        "ulysses_cudnn_version": (c_int, []),
        "ulysses_loopback_group": (c_int, [c_int, p_comm]),
        "ulysses_device_loopback_group": (c_int, [c_int, c_int, p_comm]),
        "ulysses_peer_copy_group": (c_int, [ctypes.POINTER(c_int), c_int, p_comm]),
        "ulysses_nccl_unique_id": (c_int, [ctypes.c_char_p]),
        "ulysses_nccl_communicator": (
            c_int,
            [ctypes.c_char_p, c_int, c_int, c_int, ctypes.c_int64, p_comm],
        ),
        "ulysses_nccl_wrap": (c_int, [c_void_p, c_int, ctypes.c_int64, p_comm]),
        "ulysses_comm_rank": (c_int, [c_void_p]),
        "ulysses_comm_size": (c_int, [c_void_p]),
        "ulysses_comm_device": (c_int, [c_void_p]),
        "ulysses_comm_synchronize": (c_int, [c_void_p, c_void_p]),
        "ulysses_comm_destroy": (None, [c_void_p]),
        "ulysses_reference_kernel": (c_int, [p_comm]),
        "ulysses_cudnn_kernel": (c_int, [c_int, c_int, p_comm]),
        "ulysses_kernel_held_bytes": (c_size_t, [c_void_p]),
        "ulysses_kernel_release_held": (c_int, [c_void_p, c_void_p]),
        "ulysses_kernel_cudnn_graph_stats": (
            c_int, [c_void_p, ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int64),
                    ctypes.POINTER(ctypes.c_double)]),
        "ulysses_kernel_destroy": (None, [c_void_p]),
        "ulysses_plan_config_init": (None, [ctypes.POINTER(PlanConfig)]),
        "ulysses_plan_create": (
            c_int,
            [ctypes.POINTER(PlanConfig), c_void_p, c_void_p, p_comm],
        ),
        "ulysses_plan_workspace_bytes": (c_size_t, [c_void_p]),
        "ulysses_plan_saved_bytes": (c_size_t, [c_void_p]),
        "ulysses_plan_held_bytes": (c_size_t, [c_void_p]),
        "ulysses_plan_release_held": (c_int, [c_void_p, c_void_p]),
        "ulysses_plan_forward": (c_int, [c_void_p, ctypes.POINTER(ForwardArgs), c_void_p]),
        "ulysses_plan_backward": (c_int, [c_void_p, ctypes.POINTER(BackwardArgs), c_void_p]),
        "ulysses_plan_destroy": (None, [c_void_p]),
        "ulysses_decode_config_init": (None, [ctypes.POINTER(DecodeConfig)]),
        "ulysses_decode_create": (
            c_int,
            [ctypes.POINTER(DecodeConfig), c_void_p, c_void_p, p_comm],
        ),
        "ulysses_decode_workspace_bytes": (c_size_t, [c_void_p]),
        "ulysses_decode_forward": (c_int, [c_void_p, ctypes.POINTER(DecodeArgs), c_void_p]),
        "ulysses_decode_check_device_layout": (
            c_int,
            [c_void_p, ctypes.POINTER(DecodeArgs), c_void_p],
        ),
        "ulysses_decode_destroy": (None, [c_void_p]),
        "ulysses_shard_token_ranges": (
            c_int,
            [
                ctypes.POINTER(PlanConfig),
                c_int,
                ctypes.POINTER(ctypes.c_int32),
                ctypes.c_int64,
                ctypes.POINTER(ctypes.c_int64),
                ctypes.c_int64,
                ctypes.POINTER(ctypes.c_int64),
            ],
        ),
        "ulysses_shard_position_ids": (
            c_int,
            [
                ctypes.POINTER(PlanConfig),
                c_int,
                ctypes.POINTER(ctypes.c_int32),
                ctypes.c_int64,
                ctypes.POINTER(ctypes.c_int32),
                ctypes.c_int64,
                ctypes.POINTER(ctypes.c_int64),
            ],
        ),
        "ulysses_attention_pairs_by_rank": (
            c_int,
            [
                ctypes.POINTER(PlanConfig),
                ctypes.POINTER(ctypes.c_int32),
                ctypes.c_int64,
                ctypes.POINTER(ctypes.c_double),
            ],
        ),
        "ulysses_balance_packed_sequences": (
            c_int,
            [
                ctypes.POINTER(PlanConfig),
                ctypes.POINTER(ctypes.c_int32),
                ctypes.c_int64,
                ctypes.POINTER(ctypes.c_int32),
                ctypes.POINTER(ctypes.c_int32),
            ],
        ),
        "ulysses_packed_sequence_offsets": (
            c_int,
            [
                ctypes.POINTER(PlanConfig),
                ctypes.POINTER(ctypes.c_int32),
                ctypes.c_int64,
                ctypes.POINTER(ctypes.c_int32),
            ],
        ),
    }
    lib = _Functions(lib, sig, refuse)
    version = lib.ulysses_c_api_version()
    if version != API_VERSION:
        raise OSError(
            f"ulysses: {_find_library()} has C API version {version}, this package expects "
            f"{API_VERSION}"
        )
    return lib
