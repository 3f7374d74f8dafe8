"""ulysses.torch on a GPU: the autograd module with cuDNN, P virtual ranks on one device (device
loopback, one thread and one stream per rank), against one rank running the whole sequence and
against PyTorch's own scaled_dot_product_attention. Skips without PyTorch or a GPU."""

import threading
import unittest

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the CPU machines have no PyTorch
    torch = None

import ulysses

GPU = torch is not None and torch.cuda.is_available() and ulysses.cuda_device_count() > 0
if GPU:
    import ulysses.torch as ut


def run_ranks(comms, fn):
    """fn(rank, comm) on every rank, one thread and one CUDA stream each."""
    n = len(comms)
    results, errors = [None] * n, [None] * n

    def body(r):
        try:
            with torch.cuda.stream(torch.cuda.Stream()):
                results[r] = fn(r, comms[r])
                torch.cuda.current_stream().synchronize()
        except Exception as e:  # noqa: BLE001 - handed back to the test thread
            errors[r] = e

    threads = [threading.Thread(target=body, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in errors:
        if e is not None:
            raise e
    return results


def step(cfg, comm, rows, q, k, v, d_o):
    """Forward and backward through the autograd module on token rows `rows` of the inputs."""
    attn = ut.UlyssesAttention(cfg, comm, ulysses.cudnn_kernel(0, deterministic=True))
    q, k, v = (x[:, rows].detach().clone().requires_grad_() for x in (q, k, v))
    o = attn(q, k, v)
    o.backward(d_o[:, rows])
    return o.detach(), q.grad, k.grad, v.grad


def place(S, shards, rows_of):
    out = [torch.empty((shards[0][i].shape[0], S) + tuple(shards[0][i].shape[2:]),
                       dtype=shards[0][i].dtype, device=shards[0][i].device)
           for i in range(4)]
    for r, shard in enumerate(shards):
        for i in range(4):
            out[i][:, rows_of[r]] = shard[i]
    return out


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
        all_rows = torch.arange(self.S, device="cuda")
        (want,) = run_ranks(ulysses.device_loopback_group(1),
                            lambda r, c: step(self.config(cp=1), c, all_rows, q, k, v, d_o))
        for saved in ("heads", "lse"):
            with self.subTest(saved=saved):
                Sl = self.S // 2
                rows = [torch.arange(r * Sl, (r + 1) * Sl, device="cuda") for r in range(2)]
                got = run_ranks(ulysses.device_loopback_group(2),
                                lambda r, c: step(self.config(cp=2, saved_activations=saved), c,
                                                  rows[r], q, k, v, d_o))
                whole = place(self.S, got, rows)
                for name, g, w in zip(("O", "dQ", "dK", "dV"), whole, want):
                    self.assertTrue(torch.equal(g, w), f"{name} differs from one rank")
        # One rank against PyTorch's SDPA (another implementation; bf16, so a tolerance).
        qt, kt, vt = (x.detach().clone().transpose(1, 2).requires_grad_() for x in (q, k, v))
        ot = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=True)
        ot.backward(d_o.transpose(1, 2))
        for name, mine, theirs in (("O", want[0], ot), ("dQ", want[1], qt.grad),
                                   ("dK", want[2], kt.grad), ("dV", want[3], vt.grad)):
            theirs = theirs.transpose(1, 2).float()
            err = (mine.float() - theirs).abs().max().item()
            self.assertLess(err, 4 * 2**-8 * max(1.0, theirs.abs().max().item()), name)

    def test_ring_cp2_zigzag_close_to_one_rank(self):
        q, k, v, d_o = self.inputs()
        all_rows = torch.arange(self.S, device="cuda")
        (want,) = run_ranks(ulysses.device_loopback_group(1),
                            lambda r, c: step(self.config(cp=1), c, all_rows, q, k, v, d_o))
        cfg = self.config(cp=2, strategy="ring", payload="native")
        rows = [torch.cat([torch.arange(b, e, device="cuda")
                           for b, e in ulysses.shard_token_ranges(cfg, r)]) for r in range(2)]
        got = run_ranks(ulysses.device_loopback_group(2),
                        lambda r, c: step(cfg, c, rows[r], q, k, v, d_o))
        for name, g, w in zip(("O", "dQ", "dK", "dV"), place(self.S, got, rows), want):
            err = (g.float() - w.float()).abs().max().item()
            self.assertLess(err, 2 * 2**-7 * max(1.0, w.float().abs().max().item()), name)


if __name__ == "__main__":
    unittest.main()
