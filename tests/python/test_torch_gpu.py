"""The Python package with PyTorch on a GPU, cuDNN as the kernel: P virtual ranks on one device
(device loopback, one thread and one stream per rank) calling their plans on torch tensors, against
one rank running the whole sequence through the autograd module (ulysses.torch), and that against
PyTorch's own scaled_dot_product_attention. Skips without PyTorch or a GPU.

The virtual ranks call Plan.forward/backward directly: PyTorch runs every backward of one device on
that device's single autograd thread, so two ranks sharing a GPU in one process would wait for each
other there (one process per GPU, the real use, has no such problem)."""

import contextlib
import unittest

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the CPU machines have no PyTorch
    torch = None

import rank_threads
import ulysses

GPU = torch is not None and torch.cuda.is_available() and ulysses.cuda_device_count() > 0
if GPU:
    import ulysses.torch as ut


@contextlib.contextmanager
def own_stream():
    """A CUDA stream of the rank's own, waited for at the end."""
    with torch.cuda.stream(torch.cuda.Stream()):
        yield
        torch.cuda.current_stream().synchronize()


def run_ranks(comms, fn):
    """fn(rank, comm) on every rank, one thread and one CUDA stream each."""
    return rank_threads.results_or_raise(comms, fn, own_stream)


def step_module(cfg, comm, q, k, v, d_o):
    """Forward and backward through the autograd module (one rank: the whole sequence)."""
    return step_attn(ut.UlyssesAttention(cfg, comm, ulysses.cudnn_kernel(0, deterministic=True)),
                     q, k, v, d_o)


def step_attn(attn, q, k, v, d_o):
    """Forward and backward through a module: O, dQ, dK, dV."""
    q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    o = attn(q, k, v)
    o.backward(d_o)
    return o.detach(), q.grad, k.grad, v.grad


def seq_major(x):
    """x's values in [s, b, h, d] memory, seen as [b, s, h, d] (Megatron's sbhd tensors, passed
    as x.transpose(0, 1))."""
    return x.transpose(0, 1).contiguous().transpose(0, 1)


def step_plan(cfg, comm, q, k, v, d_o, arrange=lambda x: x):
    """Forward and backward of the plan on this rank's shard of the inputs (ulysses.torch.shard:
    contiguous for ulysses, zigzag for ring), each shard and O laid out by `arrange`."""
    plan = ulysses.Plan(cfg, comm, ulysses.cudnn_kernel(0, deterministic=True))
    q, k, v, d_o = (arrange(ut.shard(x, cfg, comm.rank)) for x in (q, k, v, d_o))
    ws = torch.empty(max(plan.workspace_bytes, 1), dtype=torch.uint8, device="cuda")
    saved = torch.empty(max(plan.saved_bytes, 1), dtype=torch.uint8, device="cuda")
    stream = torch.cuda.current_stream()
    o = arrange(torch.full(q.shape[:-1] + v.shape[-1:], float("nan"), dtype=q.dtype,
                           device=q.device))
    plan.forward(q, k, v, o, workspace=ws, saved=saved, stream=stream)
    dq, dk, dv = (torch.full_like(x, float("nan")) for x in (q, k, v))
    plan.backward(d_o, dq, dk, dv, workspace=ws, saved=saved, q=q, k=k, v=v, o=o, stream=stream)
    return o, dq, dk, dv


def unshard_all(shards, cfg):
    """O, dQ, dK, dV of every rank back into global tensors (ulysses.torch.unshard)."""
    return [ut.unshard([s[i] for s in shards], cfg) for i in range(4)]


@unittest.skipUnless(GPU, "needs PyTorch with CUDA and a GPU")
class TorchModuleOnDeviceLoopback(unittest.TestCase):
    B, S, Hq, Hkv, D = 1, 1024, 8, 2, 128

    def inputs(self):
        g = torch.Generator(device="cuda").manual_seed(torch.seed() % (1 << 62))
        shape = lambda h: (self.B, self.S, h, self.D)  # noqa: E731
        make = lambda h: (torch.rand(shape(h), generator=g, device="cuda") * 2 - 1).to(  # noqa
            torch.bfloat16)
        return make(self.Hq), make(self.Hkv), make(self.Hkv), make(self.Hq)

    def config(self, **kw):
        return ulysses.PlanConfig(num_heads_q=self.Hq, num_heads_kv=self.Hkv, head_dim=self.D,
                                  causal=True, batch=self.B, seqlen=self.S, dtype="bf16", **kw)

    def test_ulysses_cp2_bitwise_one_gpu_and_close_to_pytorch(self):
        q, k, v, d_o = self.inputs()
        (want,) = run_ranks(ulysses.device_loopback_group(1),
                            lambda r, c: step_module(self.config(cp=1), c, q, k, v, d_o))
        groups = {"device_loopback": lambda: ulysses.device_loopback_group(2),
                  "peer_copy": lambda: ulysses.peer_copy_group([0, 0])}  # copy-engine transfers
        for (group, make), saved in ((g, s) for g in groups.items() for s in ("heads", "lse")):
            with self.subTest(group=group, saved=saved):
                cfg = self.config(cp=2, saved_activations=saved)
                got = run_ranks(make(), lambda r, c: step_plan(cfg, c, q, k, v, d_o))
                whole = unshard_all(got, cfg)
                for name, g, w in zip(("O", "dQ", "dK", "dV"), whole, want):
                    self.assertTrue(torch.equal(g, w), f"{name} differs from one rank")
        # One rank against PyTorch's SDPA (another implementation; bf16, so a tolerance).
        self.assert_close_to_sdpa(want, q, k, v, d_o)

    def assert_close_to_sdpa(self, want, q, k, v, d_o):
        """O, dQ, dK, dV in `want` within 4 bf16 ulps of PyTorch's causal SDPA on q, k, v, d_o."""
        qt, kt, vt = (x.detach().clone().transpose(1, 2).requires_grad_() for x in (q, k, v))
        ot = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=True)
        ot.backward(d_o.transpose(1, 2))
        for name, mine, theirs in (("O", want[0], ot), ("dQ", want[1], qt.grad),
                                   ("dK", want[2], kt.grad), ("dV", want[3], vt.grad)):
            theirs = theirs.transpose(1, 2).float()
            err = (mine.float() - theirs).abs().max().item()
            self.assertLess(err, 4 * 2**-8 * max(1.0, theirs.abs().max().item()), name)

    def test_sequence_major_tensors_give_the_contiguous_bits(self):
        """Megatron's [s, b, h, d] tensors passed as x.transpose(0, 1), two batch entries: one
        rank's module, whose plan hands them to cuDNN in place, gives the bits of contiguous
        tensors and hands O and the gradients back sequence-major; so do two virtual ranks'
        plans, whose packs read them and whose unpacks write them."""
        B = 2
        g = torch.Generator(device="cuda").manual_seed(torch.seed() % (1 << 62))
        make = lambda h: (torch.rand((B, self.S, h, self.D), generator=g,  # noqa: E731
                                     device="cuda") * 2 - 1).to(torch.bfloat16)
        q, k, v, d_o = make(self.Hq), make(self.Hkv), make(self.Hkv), make(self.Hq)
        cfg = lambda cp: ulysses.PlanConfig(  # noqa: E731
            num_heads_q=self.Hq, num_heads_kv=self.Hkv, head_dim=self.D, causal=True, batch=B,
            seqlen=self.S, dtype="bf16", cp=cp)
        (want,) = run_ranks(ulysses.device_loopback_group(1),
                            lambda r, c: step_module(cfg(1), c, q, k, v, d_o))
        (got,) = run_ranks(ulysses.device_loopback_group(1), lambda r, c: step_module(
            cfg(1), c, *(seq_major(x) for x in (q, k, v, d_o))))
        for name, gg, w in zip(("O", "dQ", "dK", "dV"), got, want):
            self.assertTrue(gg.transpose(0, 1).is_contiguous(), f"{name} {gg.stride()}")
            self.assertTrue(torch.equal(gg, w), f"{name} differs from contiguous tensors")
        got = run_ranks(ulysses.device_loopback_group(2),
                        lambda r, c: step_plan(cfg(2), c, q, k, v, d_o, seq_major))
        for name, gg, w in zip(("O", "dQ", "dK", "dV"), unshard_all(got, cfg(2)), want):
            self.assertTrue(torch.equal(gg, w), f"{name} differs from one rank (cp = 2)")

    def test_mla_head_dims_cp2_bitwise_one_gpu_and_close_to_pytorch(self):
        """head_dim 192 with head_dim_v 128 (MLA): the module's O takes V's width; two virtual
        ranks bitwise one rank (O, dK, dV; dQ too with deterministic cuDNN), one rank close to
        PyTorch's SDPA, which takes V of another width as well."""
        g = torch.Generator(device="cuda").manual_seed(torch.seed() % (1 << 62))
        make = lambda h, d: (torch.rand((self.B, self.S, h, d), generator=g,  # noqa: E731
                                        device="cuda") * 2 - 1).to(torch.bfloat16)
        q, k, v, d_o = make(self.Hq, 192), make(self.Hkv, 192), make(self.Hkv, 128), make(
            self.Hq, 128)
        cfg = lambda cp: ulysses.PlanConfig(  # noqa: E731
            num_heads_q=self.Hq, num_heads_kv=self.Hkv, head_dim=192, head_dim_v=128, causal=True,
            batch=self.B, seqlen=self.S, dtype="bf16", cp=cp)
        (want,) = run_ranks(ulysses.device_loopback_group(1),
                            lambda r, c: step_module(cfg(1), c, q, k, v, d_o))
        self.assertEqual(tuple(want[0].shape), (self.B, self.S, self.Hq, 128))
        got = run_ranks(ulysses.device_loopback_group(2),
                        lambda r, c: step_plan(cfg(2), c, q, k, v, d_o))
        for name, gg, w in zip(("O", "dQ", "dK", "dV"), unshard_all(got, cfg(2)), want):
            self.assertTrue(torch.equal(gg, w), f"{name} differs from one rank")
        self.assert_close_to_sdpa(want, q, k, v, d_o)

    def test_packed_batch_with_sinks_and_a_window(self):
        """Layout thd through the module (host and device cu_seqlens, sinks' gradient), one rank,
        against two virtual ranks calling their plans, and against attention written out in
        PyTorch (fp32, masks and sinks by hand: another implementation, so a tolerance)."""
        T, cu = 1024, [0, 300, 301, 1000]  # rows 1000.. are padding
        g = torch.Generator(device="cuda").manual_seed(torch.seed() % (1 << 62))

        def make(h):
            return (torch.rand((T, h, self.D), generator=g, device="cuda") * 2 - 1).to(
                torch.bfloat16)

        clean = [make(self.Hq), make(self.Hkv), make(self.Hkv), make(self.Hq)]
        q, k, v, d_o = (x.clone() for x in clean)
        for x in (q, k, v, d_o):  # padding as torch.empty may leave it: no output may read it
            x[cu[-1]:] = float("nan")
        base = dict(num_heads_q=self.Hq, num_heads_kv=self.Hkv, head_dim=self.D, causal=True,
                    window_left=100, sinks=True, layout="thd", seqlen=T, dtype="bf16")
        sinks = torch.rand(self.Hq, generator=g, device="cuda") * 2 - 1

        def one_rank(r, comm):
            attn = ut.UlyssesAttention(ulysses.PlanConfig(cp=1, **base), comm,
                                       ulysses.cudnn_kernel(0, deterministic=True))
            xs = [x.detach().clone().requires_grad_() if x is not None else None
                  for x in (q, k, v, sinks)]
            o = attn(*xs[:3], sinks=xs[3], cu_seqlens=cu)
            o.backward(d_o)
            return o.detach(), xs[0].grad, xs[1].grad, xs[2].grad, xs[3].grad

        cfg = ulysses.PlanConfig(cp=2, **base)
        cu_dev = torch.tensor(cu, dtype=torch.int32, device="cuda")

        def two_ranks(r, comm):
            plan = ulysses.Plan(cfg, comm, ulysses.cudnn_kernel(0, deterministic=True))
            mq, mk, mv, mdo = (ut.shard(x, cfg, r, dim=0) for x in (q, k, v, d_o))
            ws = torch.empty(plan.workspace_bytes, dtype=torch.uint8, device="cuda")
            saved = torch.empty(plan.saved_bytes, dtype=torch.uint8, device="cuda")
            common = dict(sinks=sinks, cu_seqlens=cu, cu_seqlens_device=cu_dev, workspace=ws,
                          saved=saved, stream=torch.cuda.current_stream())
            o = torch.full_like(mq, float("nan"))
            plan.forward(mq, mk, mv, o, **common)
            dq, dk, dv = (torch.full_like(x, float("nan")) for x in (mq, mk, mv))
            dsinks = torch.full_like(sinks, float("nan"))
            plan.backward(mdo, dq, dk, dv, dsinks=dsinks, **common)
            return o, dq, dk, dv, dsinks

        (want,) = run_ranks(ulysses.device_loopback_group(1), one_rank)
        got = run_ranks(ulysses.device_loopback_group(2), two_ranks)
        for i, name in enumerate(("O", "dQ", "dK", "dV")):
            whole = ut.unshard([x[i] for x in got], cfg, dim=0)
            self.assertFalse(whole.isnan().any(), name + ": elements never written")
            self.assertTrue(torch.equal(whole, want[i]), f"{name} differs from one rank")
        for r in range(2):
            err = (got[r][4] - want[4]).abs().max().item()
            self.assertLessEqual(err, 2 * 2**-7 * want[4].abs().max().item(), f"dSinks rank {r}")
            self.assertGreater(want[4].abs().max().item(), 0.0)
        # PyTorch, fp32: scores [Hq, T, T] masked per document (causal, window 100, padding rows
        # see no key), the sink as one more logit per row with no value (a padding row then
        # gives O = 0 and no gradient, as ulysses' rows of no sequence do).
        x32 = [x.detach().float().requires_grad_() for x in clean[:3] + [sinks]]
        rep = self.Hq // self.Hkv
        kr, vr = (x.repeat_interleave(rep, dim=1) for x in x32[1:3])
        scores = torch.einsum("qhd,khd->hqk", x32[0], kr) * self.D**-0.5
        pos = torch.arange(T, device="cuda")
        doc = torch.bucketize(pos, torch.tensor(cu[1:], device="cuda"), right=True)
        i, j = pos[:, None], pos[None, :]
        seen = (doc[:, None] == doc[None, :]) & (j <= i) & (j >= i - 100) & (doc[:, None] < 3)
        scores = scores.masked_fill(~seen, float("-inf"))
        sink_col = x32[3][:, None, None].expand(-1, T, 1)
        p = torch.softmax(torch.cat([scores, sink_col], dim=2), dim=2)[..., :T]
        ref_o = torch.einsum("hqk,khd->qhd", p, vr)
        ref_o.backward(clean[3].float())
        for name, mine, theirs in zip(("O", "dQ", "dK", "dV", "dSinks"), want,
                                      [ref_o.detach()] + [x.grad for x in x32]):
            err = (mine.float() - theirs).abs().max().item()
            self.assertLess(err, 4 * 2**-8 * max(1.0, theirs.abs().max().item()), name)

    def test_cudnn_graph_stats_count_the_plans_builds(self):
        kernel = ulysses.cudnn_kernel(0)
        self.assertEqual(kernel.cudnn_graph_stats(),
                         {"graphs": 0, "failed": 0, "build_seconds": 0.0})
        (comm,) = ulysses.device_loopback_group(1)
        plan = ulysses.Plan(self.config(cp=1), comm, kernel)  # sizes its workspace: builds
        stats = kernel.cudnn_graph_stats()
        self.assertGreater(stats["graphs"], 0)
        self.assertGreater(stats["build_seconds"], 0)
        self.assertEqual(stats["failed"], 0)
        self.assertGreater(plan.workspace_bytes, 0)

    def test_module_on_a_one_rank_nccl_communicator(self):
        q, k, v, d_o = self.inputs()
        (want,) = run_ranks(ulysses.device_loopback_group(1),
                            lambda r, c: step_module(self.config(cp=1), c, q, k, v, d_o))
        comm = ulysses.nccl_communicator(ulysses.nccl_unique_id(), 1, 0, 0)
        self.assertEqual((comm.rank, comm.size, comm.device), (0, 1, 0))
        (got,) = run_ranks([comm], lambda r, c: step_module(self.config(cp=1), c, q, k, v, d_o))
        for name, g, w in zip(("O", "dQ", "dK", "dV"), got, want):
            self.assertTrue(torch.equal(g, w), f"{name} differs from the loopback run")

    def test_module_on_pytorchs_own_nccl_communicator(self):
        """A one-rank NCCL process group's communicator through
        ulysses.torch.communicator_from_process_group (PyTorch's blocking one, not a second of
        ulysses' own): the same bits as the loopback's; a group without NCCL refused by name."""
        import os
        import tempfile

        import torch.distributed as dist

        q, k, v, d_o = self.inputs()
        (want,) = run_ranks(ulysses.device_loopback_group(1),
                            lambda r, c: step_module(self.config(cp=1), c, q, k, v, d_o))
        with self.assertRaises(ulysses.UlyssesError) as e:  # before init_process_group
            ut.communicator_from_process_group()
        self.assertIn("not initialised", str(e.exception))
        os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # PyTorch's communicator: no multicast
        with tempfile.TemporaryDirectory() as tmp:
            store = dist.FileStore(os.path.join(tmp, "store"), 1)
            dist.init_process_group("nccl", store=store, rank=0, world_size=1)
            try:
                comm = ut.communicator_from_process_group()
                self.assertEqual((comm.rank, comm.size, comm.device), (0, 1, 0))
                (got,) = run_ranks([comm], lambda r, c: step_module(self.config(cp=1), c, q, k, v,
                                                                    d_o))
                for name, g, w in zip(("O", "dQ", "dK", "dV"), got, want):
                    self.assertTrue(torch.equal(g, w), f"{name} differs from the loopback run")
                # The group itself in place of a Communicator: the same bits.
                deterministic = ulysses.cudnn_kernel(0, deterministic=True)
                got = step_attn(ut.UlyssesAttention(self.config(cp=1), dist.group.WORLD,
                                                    deterministic), q, k, v, d_o)
                for name, g, w in zip(("O", "dQ", "dK", "dV"), got, want):
                    self.assertTrue(torch.equal(g, w), f"{name} differs (group as comm)")
                # And no kernel: cuDNN's by default (its backward need not be deterministic).
                o = ut.UlyssesAttention(self.config(cp=1), dist.group.WORLD)(q, k, v)
                self.assertTrue(torch.equal(o, want[0]), "O differs (cuDNN by default)")
                # Layers built from one group: one Communicator, one op id (one compiled graph).
                a, b = (ut.UlyssesAttention(self.config(cp=1), dist.group.WORLD) for _ in "ab")
                self.assertIs(a.plan._comm, b.plan._comm)
                self.assertEqual(a._id, b._id)
                del a, b
                gloo = dist.new_group([0], backend="gloo")
                with self.assertRaises(ulysses.UlyssesError) as e:
                    ut.communicator_from_process_group(gloo)
                self.assertIn("communicator_from_process_group", str(e.exception))
                del comm
            finally:
                import gc

                gc.collect()  # every Communicator over the group before PyTorch frees its comm
                dist.destroy_process_group()

    def test_compiled_layers_give_the_eager_bits_in_one_graph(self):
        """torch.compile with Inductor and fullgraph=True around two layers of one config on a
        one-rank NCCL communicator, cuDNN's deterministic backward: one graph for both layers,
        and O, dQ, dK, dV bitwise the eager run's (the ops around the calls, scalings by powers
        of two, are exact in bf16)."""
        import torch._dynamo.testing

        q, k, v, d_o = self.inputs()
        comm = ulysses.nccl_communicator(ulysses.nccl_unique_id(), 1, 0, 0)
        kernel = ulysses.cudnn_kernel(0, deterministic=True)
        layers = [ut.UlyssesAttention(self.config(cp=1), comm, kernel) for _ in range(2)]
        self.assertEqual(layers[0]._id, layers[1]._id)

        def model(q, k, v):
            for attn in layers:
                q = attn(q * 2, k, v) * 0.5
            return q

        counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
        compiled = torch.compile(model, backend=counter, fullgraph=True)

        def step(r, c):
            out = []
            for fn in (model, compiled, compiled):  # the second compiled call: no recompile
                xs = [x.detach().clone().requires_grad_() for x in (q, k, v)]
                y = fn(*xs)
                y.backward(d_o)
                out.append((y.detach(), *(x.grad for x in xs)))
            return out

        (results,) = run_ranks([comm], step)
        for got in results[1:]:
            for name, g, w in zip(("O", "dQ", "dK", "dV"), got, results[0]):
                self.assertTrue(torch.equal(g, w), f"{name}: compiled differs from eager")
        self.assertEqual(counter.frame_count, 1)

    def nccl_module(self, cfg):
        """A module on a one-rank NCCL communicator of ulysses' own (the communicator a CUDA graph
        can capture; the loopback's ranks hand events between threads) with cuDNN's deterministic
        backward, so that eager steps give the expected bits."""
        comm = ulysses.nccl_communicator(ulysses.nccl_unique_id(), 1, 0, 0)
        return ut.UlyssesAttention(cfg, comm, ulysses.cudnn_kernel(0, deterministic=True))

    def assert_same_bits(self, got, want, what):
        for name, g, w in zip(("O", "dQ", "dK", "dV", "dSinks"), got, want):
            self.assertFalse(g.isnan().any(), f"{what}: {name} has elements never written")
            self.assertTrue(torch.equal(g, w), f"{what}: {name} differs from the eager step")

    def test_cuda_graph_replays_give_the_eager_bits(self):
        """A whole step (forward + backward) captured with torch.cuda.graph after a warm-up on a
        side stream, replayed on new inputs copied into the captured ones, outputs poisoned
        before each replay: the eager step's bits. Packed batches too (layout thd, window,
        sinks, cu_seqlens as a list), whose device copy of cu_seqlens the warm-up made."""
        T, cu = 1024, [0, 300, 301, 1000]
        packed = dict(layout="thd", window_left=100, sinks=True, seqlen=T)
        for name, cfg, kw in (("dense", self.config(cp=1), {}),
                              ("packed", ulysses.PlanConfig(
                                  num_heads_q=self.Hq, num_heads_kv=self.Hkv, head_dim=self.D,
                                  causal=True, cp=1, dtype="bf16", **packed),
                               {"cu_seqlens": cu})):
            with self.subTest(name):
                attn = self.nccl_module(cfg)

                def fresh():
                    q, k, v, d_o = self.inputs()
                    if cfg.layout == "thd":
                        q, k, v, d_o = (x[0, :T] for x in (q, k, v, d_o))
                    sinks = (torch.rand(self.Hq, device="cuda") * 2 - 1 if cfg.sinks else None)
                    return [q, k, v, sinks], d_o

                def leaves(xs):
                    return [x.detach().clone().requires_grad_() if x is not None else None
                            for x in xs]

                def step(xs, d_o):
                    o = attn(*xs[:3], sinks=xs[3], **kw)
                    o.backward(d_o)
                    return o

                def eager(xs, d_o):
                    xs = leaves(xs)
                    o = step(xs, d_o)
                    return [o.detach()] + [x.grad for x in xs if x is not None]

                xs, d_o = fresh()
                static, static_d_o = leaves(xs), d_o.clone()
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):  # warm-up: cuDNN's graphs, cu_seqlens' copy
                    for _ in range(2):
                        step(static, static_d_o)
                torch.cuda.current_stream().wait_stream(side)
                for x in static:
                    if x is not None:
                        x.grad = None  # the graph's own gradient buffers, written each replay
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    static_o = step(static, static_d_o)
                outs = [static_o] + [x.grad for x in static if x is not None]
                for replay in range(2):
                    xs, d_o = fresh()
                    for dst, src in zip(static + [static_d_o], xs + [d_o]):
                        if dst is not None:
                            dst.detach().copy_(src)
                    for out in outs:
                        out.detach().fill_(float("nan"))
                    graph.replay()
                    self.assert_same_bits([x.detach() for x in outs], eager(xs, d_o),
                                          f"{name} replay {replay}")

    def test_graphed_callables_and_reduce_overhead_give_the_eager_bits(self):
        """The module as torch.cuda.make_graphed_callables' callable (forward and backward each a
        graph) and under torch.compile(mode="reduce-overhead") (CUDA graphs by Inductor, none
        skipped): the eager step's bits, call after call on new inputs."""
        from torch._dynamo.utils import counters

        # (make_graphed_callables replaces a module's forward: three modules.)
        attn, graphed, compiled = (self.nccl_module(self.config(cp=1)) for _ in range(3))
        sample = [x.requires_grad_() for x in self.inputs()[:3]]
        graphed = torch.cuda.make_graphed_callables(graphed, tuple(sample))
        counters.clear()
        compiled = torch.compile(compiled, mode="reduce-overhead", fullgraph=True)

        def step(fn, q, k, v, d_o):
            xs = [x.detach().clone().requires_grad_() for x in (q, k, v)]
            o = fn(*xs)
            o.backward(d_o)
            return [t.detach().clone() for t in [o] + [x.grad for x in xs]]

        for call in range(3):
            q, k, v, d_o = self.inputs()
            want = step(attn, q, k, v, d_o)
            self.assert_same_bits(step(graphed, q, k, v, d_o), want, f"graphed call {call}")
            self.assert_same_bits(step(compiled, q, k, v, d_o), want, f"compiled call {call}")
        self.assertEqual(counters["inductor"]["cudagraph_skips"], 0,
                         "Inductor skipped CUDA graphs")

    def test_cuda_graph_capture_refuses_cu_seqlens_it_cannot_copy(self):
        """During capture, cu_seqlens on the GPU (values cannot be read back) and lengths not seen
        before (no copy can be made) are refused with an error that says what to do, not a
        failed capture; lengths seen before are taken, and keep their copy."""
        T = 1024
        cfg = ulysses.PlanConfig(num_heads_q=self.Hq, num_heads_kv=self.Hkv, head_dim=self.D,
                                 causal=True, cp=1, dtype="bf16", layout="thd", seqlen=T)
        attn = self.nccl_module(cfg)
        q, k, v = (x[0, :T] for x in self.inputs()[:3])
        seen, unseen = [0, 512, 1024], [0, 100, 1024]
        attn(q, k, v, cu_seqlens=seen)
        attn(q, k, v, cu_seqlens=seen)
        copies = [p for p in ut._cu_copies if p[1] == tuple(seen)]
        self.assertEqual(len(copies), 1, "one device copy for lengths seen twice")
        on_gpu = torch.tensor(seen, dtype=torch.int32, device="cuda")
        errors = []
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for cu in (unseen, on_gpu):
                try:
                    attn(q, k, v, cu_seqlens=cu)
                except ulysses.UlyssesError as e:
                    errors.append(str(e))
            o = attn(q, k, v, cu_seqlens=seen)
        self.assertEqual(len(errors), 2)
        self.assertIn("before capturing", errors[0])
        self.assertIn("pass them as a list or a CPU tensor", errors[1])
        self.assertIn(copies[0], ut._cu_captured, "the captured copy is kept")
        o.fill_(float("nan"))
        graph.replay()
        want = attn(q, k, v, cu_seqlens=seen)
        torch.cuda.synchronize()
        self.assertTrue(torch.equal(o, want), "replay differs from the eager call")

    def test_ring_cp2_zigzag_close_to_one_rank(self):
        q, k, v, d_o = self.inputs()
        (want,) = run_ranks(ulysses.device_loopback_group(1),
                            lambda r, c: step_module(self.config(cp=1), c, q, k, v, d_o))
        cfg = self.config(cp=2, strategy="ring")
        self.assertEqual(ulysses.shard_indices(cfg, 0)[:2], [0, 1])  # zigzag: chunks 0 and 3
        self.assertEqual(ulysses.shard_indices(cfg, 0)[self.S // 4], 3 * self.S // 4)
        got = run_ranks(ulysses.device_loopback_group(2),
                        lambda r, c: step_plan(cfg, c, q, k, v, d_o))
        for name, g, w in zip(("O", "dQ", "dK", "dV"), unshard_all(got, cfg), want):
            err = (g.float() - w.float()).abs().max().item()
            self.assertLess(err, 2 * 2**-7 * max(1.0, w.float().abs().max().item()), name)


@unittest.skipUnless(GPU, "needs PyTorch with CUDA and a GPU")
class DecodeOnDeviceLoopback(unittest.TestCase):
    """ulysses.Decode with cuDNN on torch tensors: 2 virtual ranks each holding half of a bf16
    cache, one new token, against PyTorch's SDPA over the whole cache (STYLE.md's 2x rule: truth
    in fp64, plain = SDPA in bf16); both ranks' O the same bits."""

    def test_two_ranks_match_sdpa(self):
        B, N, Hq, Hkv, D, cp = 1, 6000, 8, 2, 128, 2
        g = torch.Generator(device="cuda").manual_seed(torch.seed() % (1 << 62))
        rand = lambda *s: (torch.rand(s, generator=g, device="cuda") * 2 - 1).to(  # noqa: E731
            torch.bfloat16)
        q, k, v = rand(B, 1, Hq, D), rand(B, N, Hkv, D), rand(B, N, Hkv, D)
        cap = N // cp + 1
        cfg = ulysses.DecodeConfig(num_heads_q=Hq, num_heads_kv=Hkv, head_dim=D, causal=True,
                                   cp=cp, dtype="bf16", batch=B, cache_rows=cap,
                                   max_segments=1, min_split_rows=512)

        def rank(r, comm):
            lo, hi = N * r // cp, N * (r + 1) // cp
            kc = torch.full((B, cap, Hkv, D), float("nan"), dtype=torch.bfloat16, device="cuda")
            vc = torch.full_like(kc, float("nan"))
            kc[:, 1:1 + hi - lo], vc[:, 1:1 + hi - lo] = k[:, lo:hi], v[:, lo:hi]
            dec = ulysses.Decode(cfg, comm, ulysses.cudnn_kernel(0))
            ws = torch.empty(max(dec.workspace_bytes, 1), dtype=torch.uint8, device="cuda")
            o = torch.full_like(q, float("nan"))
            dec.forward(q, kc, vc, o, segments=[(1, hi - lo, lo)], query_position=N - 1,
                        workspace=ws, stream=torch.cuda.current_stream())
            return o

        outs = run_ranks(ulysses.device_loopback_group(cp), rank)
        sdpa = lambda dt: F.scaled_dot_product_attention(  # noqa: E731
            *(x.transpose(1, 2).to(dt) for x in (q, k, v)), enable_gqa=True).transpose(1, 2)
        truth, plain = sdpa(torch.float64), sdpa(torch.bfloat16).double()
        floor = 2 * 2.0 ** -7 * truth.abs().max().item()
        for o in outs:
            self.assertFalse(torch.isnan(o).any().item())
            err = (o.double() - truth).abs().max().item()
            self.assertLessEqual(err, 2 * (plain - truth).abs().max().item() + floor)
            self.assertTrue(torch.equal(o, outs[0]))

    def test_cuda_graph_replays_follow_the_device_layout(self):
        """DecodeConfig(device_layout=True), one rank: a step captured with torch.cuda.graph after
        an eager one, then replayed while the cache grows (the layout tensors and q rewritten in
        place, O poisoned): each replay the bits of an eager step on the same layout and, with
        one token, of the host layout's step."""
        B, cap, Hq, Hkv, D = 2, 4096, 8, 2, 128
        g = torch.Generator(device="cuda").manual_seed(torch.seed() % (1 << 62))
        rand = lambda *s: (torch.rand(s, generator=g, device="cuda") * 2 - 1).to(  # noqa: E731
            torch.bfloat16)
        kc, vc = rand(B, cap, Hkv, D), rand(B, cap, Hkv, D)
        base = dict(num_heads_q=Hq, num_heads_kv=Hkv, head_dim=D, causal=True, cp=1,
                    dtype="bf16", batch=B, cache_rows=cap, max_segments=2, min_split_rows=256)
        comm = ulysses.device_loopback_group(1)[0]
        kernel = ulysses.cudnn_kernel(0)
        dec = ulysses.Decode(ulysses.DecodeConfig(device_layout=True, **base), comm, kernel)
        host = ulysses.Decode(ulysses.DecodeConfig(split_kernel="built_in", **base), comm, kernel)
        ws = torch.empty(max(dec.workspace_bytes, 1), dtype=torch.uint8, device="cuda")
        host_ws = torch.empty(max(host.workspace_bytes, 1), dtype=torch.uint8, device="cuda")
        q, o = rand(B, 1, Hq, D), torch.empty(B, 1, Hq, D, dtype=torch.bfloat16, device="cuda")
        seg_dev = torch.zeros(B, 2, 3, dtype=torch.int64, device="cuda")
        pos_dev = torch.zeros(B, dtype=torch.int64, device="cuda")

        def layout(step):
            """Sequence b holds 1000 + 900 b + 37 step keys; sequence 1 as two segments."""
            segs, pos = [], []
            for b in range(B):
                n = 1000 + 900 * b + 37 * step
                segs.append([(0, n, 0)] if b == 0 else [(0, 500, 0), (2000, n - 500, 500)])
                pos.append(n - 1)
            return segs, pos

        def load(step):
            segs, pos = layout(step)
            table = torch.zeros(B, 2, 3, dtype=torch.int64)
            for b, sb in enumerate(segs):
                table[b, :len(sb)] = torch.tensor(sb)
            seg_dev.copy_(table)
            pos_dev.copy_(torch.tensor(pos))
            q.copy_(rand(B, 1, Hq, D))
            o.fill_(float("nan"))
            return segs, pos

        def device_step():
            dec.forward(q, kc, vc, o, workspace=ws, segments_device=seg_dev,
                        query_positions_device=pos_dev, stream=torch.cuda.current_stream())

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        load(0)
        with torch.cuda.stream(side):
            device_step()  # eager warm-up
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            device_step()
        for step in range(1, 4):
            segs, pos = load(step)
            graph.replay()
            replay = o.clone()
            dec.check_device_layout(q, kc, vc, o, workspace=ws, segments_device=seg_dev,
                                    query_positions_device=pos_dev,
                                    stream=torch.cuda.current_stream())
            o.fill_(float("nan"))
            device_step()
            eager = o.clone()
            o.fill_(float("nan"))
            host.forward(q, kc, vc, o, segments=segs, query_position=pos, workspace=host_ws,
                         stream=torch.cuda.current_stream())
            torch.cuda.current_stream().synchronize()
            self.assertFalse(torch.isnan(replay).any().item(), f"step {step}")
            self.assertTrue(torch.equal(replay, eager), f"step {step}: replay vs eager")
            self.assertTrue(torch.equal(eager, o), f"step {step}: device vs host layout")


if __name__ == "__main__":
    unittest.main()
