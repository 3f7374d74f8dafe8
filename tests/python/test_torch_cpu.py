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

    def test_fractional_cu_seqlens_are_refused_not_floored(self):
        cfg = ulysses.PlanConfig(num_heads_q=2, num_heads_kv=1, head_dim=8, seqlen=8,
                                 dtype="fp64", layout="thd")
        x = torch.zeros((8, 2, 8), dtype=torch.float64)
        kv = torch.zeros((8, 1, 8), dtype=torch.float64)

        def step(r, comm):
            attn = ut.UlyssesAttention(cfg, comm, ulysses.reference_kernel())
            return attn(x, kv, kv, cu_seqlens=[0, 3.5, 8])

        with self.assertRaises(ulysses.UlyssesError) as e:
            run_ranks(1, step)
        self.assertIn("cu_seqlens holds 3.5", str(e.exception))


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


if __name__ == "__main__":
    unittest.main()
