"""ulysses.torch's autograd module with several ranks, on the CPU: host loopback ranks in threads,
the reference kernel, fp64. On the CPU PyTorch runs each backward on the thread that asked for it,
so ranks in one process can drive the module concurrently (on a GPU they cannot share a device:
see test_torch_gpu). Skips without PyTorch."""

import unittest

try:
    import torch
except ImportError:  # the development and CI machines have no PyTorch
    torch = None

import rank_threads
import ulysses

if torch is not None:
    import torch._dynamo.testing

    import ulysses.torch as ut


def run_ranks(n, fn):
    """fn(rank, comm) on n loopback ranks, one thread each; re-raises a rank's error."""
    return rank_threads.results_or_raise(ulysses.loopback_group(n), fn)


@unittest.skipUnless(torch is not None, "needs PyTorch")
class TorchModuleOnLoopbackRanks(unittest.TestCase):
    def test_cp2_module_bitwise_the_one_rank_module(self):
        B, S, Hq, Hkv, D = 2, 32, 4, 2, 8
        g = torch.Generator().manual_seed(torch.seed() % (1 << 62))
        make = lambda h: torch.rand((B, S, h, D), generator=g, dtype=torch.float64) * 4 - 2  # noqa
        q, k, v, d_o = make(Hq), make(Hkv), make(Hkv), make(Hq)
        sinks = torch.rand(Hq, generator=g, dtype=torch.float32) * 2 - 1
        for strategy, saved in (("ulysses", "heads"), ("ulysses", "lse"), ("ring", "lse"),
                                ("allgather", "heads"), ("allgather", "lse")):
            with self.subTest(strategy=strategy, saved=saved):
                base = dict(num_heads_q=Hq, num_heads_kv=Hkv, head_dim=D, causal=True, sinks=True,
                            batch=B, seqlen=S, dtype="fp64", saved_activations=saved)

                def step(r, comm, cfg):
                    # cp = 2 without a kernel: a host communicator's default, the reference
                    attn = (ut.UlyssesAttention(cfg, comm, ulysses.reference_kernel())
                            if cfg.cp == 1 else ut.UlyssesAttention(cfg, comm))
                    xs = [ut.shard(x, cfg, r).requires_grad_() for x in (q, k, v)]
                    s = sinks.clone().requires_grad_()
                    o = attn(*xs, sinks=s)
                    o.backward(ut.shard(d_o, cfg, r))
                    return o.detach(), xs[0].grad, xs[1].grad, xs[2].grad, s.grad

                one = ulysses.PlanConfig(cp=1, **base)
                (want,) = run_ranks(1, lambda r, c: step(r, c, one))
                cfg = ulysses.PlanConfig(strategy=strategy, cp=2, **base)
                got = run_ranks(2, lambda r, c: step(r, c, cfg))
                for i, name in enumerate(("O", "dQ", "dK", "dV")):
                    whole = ut.unshard([x[i] for x in got], cfg)
                    if strategy == "ulysses":
                        self.assertTrue(torch.equal(whole, want[i]), f"{name} differs")
                    else:  # ring merges by fp32 LSE, allgather sums dK/dV over ranks
                        err = (whole - want[i]).abs().max().item()
                        self.assertLess(err, 2**-20 * max(1.0, want[i].abs().max().item()), name)
                for r in range(2):
                    err = (got[r][4] - want[4]).abs().max().item()
                    self.assertLess(err, 1e-5 * max(1.0, want[4].abs().max().item()), "dSinks")

    def test_sequence_major_tensors_keep_their_layout_and_the_bits(self):
        """Megatron's [s, b, h, d] activations, passed as x.transpose(0, 1): O and the gradients
        the module hands back lie in the same order (their transpose(0, 1) is contiguous, so the
        projections around it copy nothing), with the bits of contiguous [b, s, h, d] inputs.
        Eager and compiled, every strategy."""
        B, S, Hq, Hkv, D = 2, 32, 4, 2, 8
        g = torch.Generator().manual_seed(torch.seed() % (1 << 62))
        make = lambda h: torch.rand((B, S, h, D), generator=g, dtype=torch.float64) * 4 - 2  # noqa
        q, k, v, d_o = make(Hq), make(Hkv), make(Hkv), make(Hq)
        for strategy, saved, compiled in (("ulysses", "heads", False), ("ulysses", "lse", True),
                                          ("ring", "lse", False), ("allgather", "heads", True)):
            with self.subTest(strategy=strategy, saved=saved, compiled=compiled):
                cfg = ulysses.PlanConfig(num_heads_q=Hq, num_heads_kv=Hkv, head_dim=D,
                                         causal=True, batch=B, seqlen=S, dtype="fp64",
                                         strategy=strategy, cp=2, saved_activations=saved)
                torch._dynamo.reset()  # (the module's forward: compiled by earlier tests too)

                def step(r, comm, seq_major):
                    attn = ut.UlyssesAttention(cfg, comm)
                    fn = (torch.compile(attn, backend="aot_eager", fullgraph=True) if compiled
                          else attn)
                    shards = [ut.shard(x, cfg, r) for x in (q, k, v, d_o)]
                    if seq_major:  # [s, b, h, d] memory, seen as [b, s, h, d]
                        shards = [x.transpose(0, 1).contiguous().transpose(0, 1) for x in shards]
                    leaves = [x.requires_grad_() for x in shards[:3]]
                    grads = [None] * 3  # what the module hands back, before any copy

                    def keep(i):
                        def hook(grad):
                            grads[i] = grad
                        return hook

                    xs = [x * 1.0 for x in leaves]
                    for i, x in enumerate(xs):
                        x.register_hook(keep(i))
                    o = fn(*xs)
                    o.backward(shards[3])
                    return [o.detach()] + grads

                want = run_ranks(2, lambda r, c: step(r, c, False))
                got = run_ranks(2, lambda r, c: step(r, c, True))
                for mine, ref in zip(got, want):
                    for name, a, b in zip(("O", "dQ", "dK", "dV"), mine, ref):
                        self.assertTrue(a.transpose(0, 1).is_contiguous(),
                                        f"{name} strides {a.stride()}: not sequence-major")
                        self.assertTrue(b.is_contiguous(), f"{name} strides {b.stride()}")
                        self.assertTrue(torch.equal(a, b), f"{name} differs")

    def test_heads_saves_do_not_keep_the_callers_q_k_v(self):
        """With saved_activations "heads" backward reads the plan's own saved rows only, so the
        module must not keep the caller's q, k, v alive until backward (a model frees them after
        forward: its projections' backward needs their inputs). "lse" recomputes from them and
        must keep them, and so does one rank, which saves as "lse" (nothing to exchange). Eager and
        compiled; the gradients match the lse module's bits, also with V of another width
        (head_dim_v) and in layout thd."""
        import gc
        import weakref

        B, S, Hq, Hkv, D, Dv = 2, 16, 4, 2, 8, 6
        g = torch.Generator().manual_seed(torch.seed() % (1 << 62))
        for saved, compiled, layout, cp in (("heads", False, "bshd", 2), ("lse", False, "bshd", 2),
                                            ("heads", True, "bshd", 2), ("lse", True, "bshd", 2),
                                            ("heads", False, "thd", 2), ("heads", False, "bshd", 1),
                                            ("heads", True, "thd", 1)):
            with self.subTest(saved=saved, compiled=compiled, layout=layout, cp=cp):
                lead = (B * S,) if layout == "thd" else (B, S)
                make = lambda h, d: torch.rand(lead + (h, d), generator=g,  # noqa: E731
                                               dtype=torch.float64) * 4 - 2
                q, k, v, d_o = make(Hq, D), make(Hkv, D), make(Hkv, Dv), make(Hq, Dv)
                cu = [0, S, 2 * S] if layout == "thd" else None
                cfg = ulysses.PlanConfig(num_heads_q=Hq, num_heads_kv=Hkv, head_dim=D,
                                         head_dim_v=Dv, causal=True, layout=layout, cp=cp,
                                         batch=1 if layout == "thd" else B, seqlen=lead[-1],
                                         dtype="fp64", saved_activations=saved)

                def step(r, comm, cfg, watch):
                    attn = ut.UlyssesAttention(cfg, comm, ulysses.reference_kernel())
                    fn = (torch.compile(attn, backend="aot_eager", fullgraph=True) if watch and
                          compiled else attn)
                    saves.append((attn.plan.config.saved_activations, attn.plan.saved_bytes))
                    shard = (lambda x: ut.shard(x, cfg, r, dim=len(lead) - 1,  # noqa: E731
                                                cu_seqlens=cu))
                    leaves = [shard(x).requires_grad_() for x in (q, k, v)]
                    xs = [x * 1.0 for x in leaves]  # only the module's graph could keep these
                    refs = [weakref.ref(x) for x in xs]
                    o = fn(*xs, cu_seqlens=cu)
                    del xs
                    gc.collect()
                    alive = [ref() is not None for ref in refs]
                    o.backward(shard(d_o))
                    return alive, [o.detach()] + [x.grad for x in leaves]

                saves = []
                got = run_ranks(cp, lambda r, c: step(r, c, cfg, True))
                for alive, _ in got:  # (one rank saves as lse: nothing to exchange)
                    self.assertEqual(alive, [saved == "lse" or cp == 1] * 3)
                lse = ulysses.PlanConfig(**{**cfg.__dict__, "saved_activations": "lse"})
                want = run_ranks(cp, lambda r, c: step(r, c, lse, False))
                if cp == 1:  # the module's plan is an lse plan: it saves the LSE alone
                    self.assertEqual(saves[0], saves[1])
                    self.assertEqual(saves[0][0], "lse")
                for (_, mine), (_, ref) in zip(got, want):
                    for name, a, b in zip(("O", "dQ", "dK", "dV"), mine, ref):
                        self.assertEqual(a.shape, b.shape, name)
                        self.assertTrue(torch.equal(a, b), f"{name} differs")

    def test_cu_seqlens_that_are_not_whole_ints_are_refused_not_floored(self):
        cfg = ulysses.PlanConfig(num_heads_q=2, num_heads_kv=1, head_dim=8, seqlen=8,
                                 dtype="fp64", layout="thd")
        x = torch.zeros((8, 2, 8), dtype=torch.float64)
        kv = torch.zeros((8, 1, 8), dtype=torch.float64)
        for cu, message in (([0, 3.5, 8], "cu_seqlens holds 3.5"),
                            (torch.tensor([0.0, 3.0, 8.0]),
                             "cu_seqlens must be a 1-D integer tensor"),
                            (torch.tensor([0, 1 << 33, 8]), "which is not an int32 value")):
            with self.subTest(cu=cu):
                def step(r, comm):
                    attn = ut.UlyssesAttention(cfg, comm, ulysses.reference_kernel())
                    return attn(x, kv, kv, cu_seqlens=cu)

                with self.assertRaises(ulysses.UlyssesError) as e:
                    run_ranks(1, step)
                self.assertIn(message, str(e.exception))


@unittest.skipUnless(torch is not None, "needs PyTorch")
class Compiled(unittest.TestCase):
    """torch.compile around the module: there its forward and backward are custom operators, so
    the whole function compiles as one graph (fullgraph=True) and gives the bits of the eager
    module (whose calls go through a plain autograd.Function instead)."""

    B, S, Hq, Hkv, D = 1, 24, 4, 2, 8

    def inputs(self, layout="bshd"):
        g = torch.Generator().manual_seed(torch.seed() % (1 << 62))
        lead = (self.S,) if layout == "thd" else (self.B, self.S)

        def make(h):
            return torch.rand(lead + (h, self.D), generator=g, dtype=torch.float64) * 4 - 2

        sinks = torch.rand(self.Hq, generator=g, dtype=torch.float32) * 2 - 1
        return make(self.Hq), make(self.Hkv), make(self.Hkv), make(self.Hq), sinks

    @staticmethod
    def layer(attn, x, k, v, sinks, cu_seqlens=None):
        # ops before and after the attention, so the compiled graph holds more than the call
        return attn(x * 0.5 + 0.25, k, v, sinks=sinks, cu_seqlens=cu_seqlens).tanh()

    def run_both(self, attn, rank, inputs, compiled_fn, cu_seqlens=None):
        """(eager, compiled) results of one rank's module: output and every input's gradient."""
        q, k, v, d_o, sinks = inputs
        cfg = attn.plan.config
        shard = (lambda x: ut.shard(x, cfg, rank, dim=0 if cfg.layout == "thd" else 1,
                                    cu_seqlens=cu_seqlens))
        out = []
        for fn in (self.layer, compiled_fn):
            xs = [shard(x).requires_grad_() for x in (q, k, v)]
            s = sinks.clone().requires_grad_()
            y = fn(attn, *xs, s, cu_seqlens)
            y.backward(shard(d_o))
            out.append((y.detach(), xs[0].grad, xs[1].grad, xs[2].grad, s.grad))
        return out

    def assert_same(self, eager, compiled):
        for name, a, b in zip(("O", "dQ", "dK", "dV", "dSinks"), eager, compiled):
            self.assertTrue(torch.equal(a, b), f"{name}: compiled differs from eager")

    def config(self, **kw):
        return ulysses.PlanConfig(num_heads_q=self.Hq, num_heads_kv=self.Hkv, head_dim=self.D,
                                  causal=True, sinks=True, seqlen=self.S, dtype="fp64", **kw)

    def test_fullgraph_compile_gives_the_eager_bits(self):
        inputs = self.inputs()
        for strategy, saved, cp in (("ulysses", "heads", 1), ("ulysses", "lse", 2),
                                    ("ring", "heads", 2)):
            with self.subTest(strategy=strategy, saved=saved, cp=cp):
                counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
                fn = torch.compile(self.layer, backend=counter, fullgraph=True)
                cfg = self.config(batch=self.B, strategy=strategy, cp=cp,
                                  saved_activations=saved)
                for eager, compiled in run_ranks(
                        cp, lambda r, c: self.run_both(ut.UlyssesAttention(cfg, c), r, inputs,
                                                       fn)):
                    self.assert_same(eager, compiled)
                self.assertGreater(counter.frame_count, 0)  # it compiled, as one graph

    def test_layers_of_one_config_compile_once_and_new_packed_lengths_do_not_recompile(self):
        """Three layers (modules of one config and communicator) and three packed batches whose
        lengths differ, given as tensors: one graph in all (per rank thread at most: the ranks
        may race to compile the frame), each call the eager module's bits."""
        counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
        fn = torch.compile(self.layer, backend=counter, fullgraph=True)
        cfg = self.config(layout="thd", cp=2)
        comms = ulysses.loopback_group(2)
        layers = rank_threads.results_or_raise(
            comms, lambda r, c: [ut.UlyssesAttention(cfg, c) for _ in range(3)])
        for rank in layers:  # (each rank its own id: its communicator is another object)
            self.assertEqual(len({a._id for a in rank}), 1)
        for cu in ([0, 6, 14, 24], [0, 2, 20, 24], [0, 12, 12, 24]):
            inputs = self.inputs("thd")
            cu_t = torch.tensor(cu, dtype=torch.int32)
            for layer in range(3):
                for eager, compiled in rank_threads.results_or_raise(
                        comms, lambda r, c: self.run_both(layers[r][layer], r, inputs, fn, cu_t)):
                    self.assert_same(eager, compiled)
        self.assertLessEqual(counter.frame_count, 2)
        for rank in layers:  # one module's plan served every layer: one workspace
            self.assertEqual(sum(a._ws is not None for a in rank), 1)
        # Another config, or another kernel, is another op id (plans that are not interchangeable)
        windowed = self.config(layout="thd", cp=2, window_left=4)
        others = rank_threads.results_or_raise(
            comms, lambda r, c: [ut.UlyssesAttention(windowed, c),
                                 ut.UlyssesAttention(cfg, c, ulysses.reference_kernel())])
        self.assertEqual(len({layers[0][0]._id, others[0][0]._id, others[0][1]._id}), 3)

    def test_inference_plans_compile_and_save_nothing(self):
        cfg = self.config(batch=self.B, cp=2, training=False)
        q, k, v, _, sinks = self.inputs()

        def step(r, comm):
            attn = ut.UlyssesAttention(cfg, comm)
            fn = torch.compile(lambda *xs: attn(*xs, sinks=sinks), backend="aot_eager",
                               fullgraph=True)
            xs = [ut.shard(x, cfg, r) for x in (q, k, v)]
            with torch.no_grad():
                compiled, eager = fn(*xs), attn(*xs, sinks=sinks)
            self.assertEqual(attn._saved_len(), 0)
            return torch.equal(compiled, eager)

        self.assertEqual(run_ranks(2, step), [True, True])

    def test_layers_built_from_one_group_share_its_communicator(self):
        """Modules given a process group (PyTorch's NCCL communicator wrapped, here a stand-in
        that hands out one-rank loopbacks): one Communicator per group while modules use it, so
        a model's layers share an op id; another group is another."""
        made = []

        def stand_in(group):
            made.append(group)
            return ulysses.loopback_group(1)[0]

        cfg = self.config(batch=self.B)
        real, ut.communicator_from_process_group = ut.communicator_from_process_group, stand_in
        try:
            group_a, group_b = object(), object()
            layers = [ut.UlyssesAttention(cfg, group_a) for _ in range(3)]
            self.assertEqual(made, [group_a])
            self.assertEqual(len({a._id for a in layers}), 1)
            other = ut.UlyssesAttention(cfg, group_b)
            self.assertEqual(made, [group_a, group_b])
            self.assertNotEqual(other._id, layers[0]._id)
            del layers  # none left on group_a: the next module wraps the group again
            ut.UlyssesAttention(cfg, group_a)
            self.assertEqual(made, [group_a, group_b, group_a])
        finally:
            ut.communicator_from_process_group = real

    def test_when_the_serving_layer_is_gone_another_serves(self):
        q, k, v, d_o, sinks = self.inputs()
        cfg = self.config(batch=self.B)

        def step(r, comm):
            layers = [ut.UlyssesAttention(cfg, comm) for _ in range(2)]
            want = layers[0](q, k, v, sinks=sinks)
            serving = [i for i, a in enumerate(layers) if a._ws is not None]
            self.assertEqual(len(serving), 1)
            op_id = layers[0]._id
            del layers[serving[0]]
            self.assertTrue(torch.equal(layers[0](q, k, v, sinks=sinks), want))
            self.assertIsNotNone(layers[0]._ws)
            del layers[0]
            return op_id

        (op_id,) = run_ranks(1, step)
        with self.assertRaises(ulysses.UlyssesError) as e:  # none left: a clear error
            torch.ops.ulysses.attention_forward(q, k, v, sinks, None, op_id, 1)
        self.assertIn(f"no UlyssesAttention of op id {op_id} is alive", str(e.exception))

    def test_a_graph_cached_on_disk_for_another_config_is_not_reused(self):
        """Two processes compile the same function over the module with one Inductor cache
        directory, the second with saved_activations "lse" instead of "heads": the same shapes
        and op id, another length of `saved`. The graph must differ, or the cache hands the
        second process the first one's graph, which then fails its own output-size check."""
        import os
        import subprocess
        import sys
        import tempfile

        script = (
            "import sys, torch, rank_threads, ulysses, ulysses.torch as ut\n"
            "cfg = ulysses.PlanConfig(num_heads_q=4, num_heads_kv=2, head_dim=8, causal=True,\n"
            "    cp=2, seqlen=16, dtype='fp32', saved_activations=sys.argv[1])\n"
            "def step(r, comm):\n"
            "    attn = ut.UlyssesAttention(cfg, comm, ulysses.reference_kernel())\n"
            "    fn = torch.compile(lambda q, k, v: attn(q, k, v) * 2.0, fullgraph=True)\n"
            "    xs = [torch.rand((1, 8, h, 8), requires_grad=True) for h in (4, 2, 2)]\n"
            "    fn(*xs).sum().backward()\n"
            "    return attn._saved_len()\n"
            "print('saved', rank_threads.results_or_raise(ulysses.loopback_group(2), step))\n")
        here = os.path.dirname(os.path.abspath(__file__))
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TORCHINDUCTOR_CACHE_DIR=cache,
                       PYTHONPATH=os.pathsep.join(filter(None, [
                           here, os.path.join(here, "..", "..", "python"),
                           os.environ.get("PYTHONPATH")])))
            lengths = []
            for saved in ("heads", "lse"):
                done = subprocess.run([sys.executable, "-c", script, saved], env=env,
                                      capture_output=True, text=True, timeout=600)
                self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
                lengths.append([ln for ln in done.stdout.splitlines() if ln.startswith("saved")])
            self.assertNotEqual(lengths[0], lengths[1])  # (the case needs two lengths)

    def test_the_operators_pass_opcheck(self):
        """torch.library.opcheck on the real op: schema (no input mutated), fake tensors (the
        shapes the compiler is told), autograd registration."""
        q, k, v, _, sinks = self.inputs()
        for saved in ("heads", "lse"):
            with self.subTest(saved=saved):
                cfg = self.config(batch=self.B, saved_activations=saved)

                def check(r, comm):
                    attn = ut.UlyssesAttention(cfg, comm)
                    args = [x.clone().requires_grad_() for x in (q, k, v, sinks)]
                    # (not test_aot_dispatch_dynamic: it compares every output's bytes, and
                    # `saved` holds padding the plan never writes; the tests above compare
                    # compiled and eager results instead)
                    torch.library.opcheck(torch.ops.ulysses.attention_forward.default,
                                          (*args, None, attn._id, attn._saved_len()),
                                          test_utils=("test_schema", "test_autograd_registration",
                                                      "test_faketensor"))
                    with self.assertRaises(ulysses.UlyssesError) as e:  # a graph of another plan
                        torch.ops.ulysses.attention_forward(*args, None, attn._id,
                                                            attn._saved_len() + 1)
                    self.assertIn(f"saved_bytes is {attn._saved_len() + 1}, but op id",
                                  str(e.exception))

                run_ranks(1, check)


@unittest.skipUnless(torch is not None, "needs PyTorch")
class ProcessGroups(unittest.TestCase):
    def test_a_group_without_nccl_is_refused_by_name(self):
        """communicator_from_process_group before torch.distributed is up, and on a gloo group
        (no NCCL communicator to take): a UlyssesError naming the call, never a crash."""
        import os
        import tempfile

        import torch.distributed as dist

        api = "communicator_from_process_group"
        with self.assertRaises(ulysses.UlyssesError) as e:
            ut.communicator_from_process_group(device=0)
        self.assertEqual(e.exception.code, "INVALID_ARGUMENT")
        self.assertIn("not initialised", str(e.exception))
        with tempfile.TemporaryDirectory() as tmp:
            dist.init_process_group("gloo", store=dist.FileStore(os.path.join(tmp, "store"), 1),
                                    rank=0, world_size=1)
            try:
                with self.assertRaises(ulysses.UlyssesError) as e:
                    ut.communicator_from_process_group(device=0)
                self.assertIn(api, str(e.exception))
                # (gloo's backend for CUDA tensors has no NCCL communicator, or there is none)
                self.assertIn(e.exception.code, ("UNSUPPORTED", "INVALID_ARGUMENT"))
                if not torch.cuda.is_available():
                    with self.assertRaises(ulysses.UlyssesError) as e:
                        ut.communicator_from_process_group()
                    self.assertEqual(e.exception.code, "UNSUPPORTED")
                    self.assertIn("no CUDA device", str(e.exception))
            finally:
                dist.destroy_process_group()


@unittest.skipUnless(torch is not None, "needs PyTorch")
class Examples(unittest.TestCase):
    """python/examples on the CPU (CUDA hidden), as a user without a GPU would run them."""

    def run_example(self, *args):
        import os
        import subprocess
        import sys

        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="",
                   PYTHONPATH=os.pathsep.join(filter(None, [os.path.join(root, "python"),
                                                            os.environ.get("PYTHONPATH")])))
        done = subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True,
                              text=True, timeout=300)
        return done.returncode, done.stdout + done.stderr

    def test_side_by_side_checks_its_pytorch_recipe_on_two_ranks(self):
        """The DeepSpeed-style recipe the example times against ulysses, on two gloo ranks:
        its shards' O, dQ, dK, dV equal SDPA's on the whole sequence."""
        rc, out = self.run_example("-m", "torch.distributed.run", "--standalone",
                                   "--nproc_per_node=2", "python/examples/side_by_side.py")
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"TorchUlysses on 2 ranks .* -> PASS")

    def test_compiled_model_runs_eager_and_compiled_without_skips(self):
        rc, out = self.run_example("python/examples/compiled_model.py", "--steps", "2")
        self.assertEqual(rc, 0, out)
        self.assertEqual(len([ln for ln in out.splitlines() if ln.startswith("round")]), 4, out)
        self.assertIn("skipped CUDA graphs: 0", out)


if __name__ == "__main__":
    unittest.main()
