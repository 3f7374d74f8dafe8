"""The Python package over the C API, on the CPU: loopback ranks in threads, the reference kernel.

Ulysses with a per-head kernel is bitwise the unsharded run (the C++ tests hold it to that); here
the same must hold through ctypes, so a misplaced stride, dtype or pointer in the binding shows as
a mismatch. Ring merges partial results by their fp32 LSE: held to the C++ ring tests' floor,
2^-20 of the largest value.
"""

import unittest

import numpy as np

import rank_threads
import ulysses


def run_ranks(n, fn):
    """fn(rank, comm) on n loopback ranks, one thread each; returns (results, errors)."""
    return rank_threads.run_ranks(ulysses.loopback_group(n), fn)


def step(cfg, comm, q, k, v, d_o):
    """One forward + backward of this rank's shard; outputs start as NaN (never-written shows)."""
    plan = ulysses.Plan(cfg, comm, ulysses.reference_kernel())
    ws = np.empty(max(plan.workspace_bytes, 1), np.uint8)
    saved = np.empty(max(plan.saved_bytes, 1), np.uint8)
    o = np.full(q.shape[:-1] + v.shape[-1:], np.nan, q.dtype)  # V's head_dim
    lse = np.full((q.shape[0], q.shape[2], q.shape[1]), np.nan, np.float32)
    plan.forward(q, k, v, o, lse=lse, workspace=ws, saved=saved)
    dq = np.full(q.shape, np.nan, q.dtype)
    dk = np.full(k.shape, np.nan, k.dtype)
    dv = np.full(v.shape, np.nan, v.dtype)
    plan.backward(d_o, dq, dk, dv, workspace=ws, saved=saved, q=q, k=k, v=v, o=o)
    return o, lse, dq, dk, dv


def inputs(rng, dtype, B, S, Hq, Hkv, D):
    """q, k, v as views into one fused [B, S, Hq + 2 Hkv, D] array (strided, as a QKV projection
    gives them), and dO."""
    qkv = rng.uniform(-2, 2, (B, S, Hq + 2 * Hkv, D)).astype(dtype)
    q, k, v = qkv[:, :, :Hq], qkv[:, :, Hq:Hq + Hkv], qkv[:, :, Hq + Hkv:]
    d_o = rng.uniform(-2, 2, (B, S, Hq, D)).astype(dtype)
    return q, k, v, d_o


class UlyssesThroughCtypes(unittest.TestCase):
    def test_bitwise_the_unsharded_run(self):
        rng = np.random.default_rng()
        B, S, Hq, Hkv, D, cp = 2, 24, 4, 2, 8, 2
        for dtype, name in ((np.float32, "fp32"), (np.float64, "fp64")):
            with self.subTest(dtype=name):
                q, k, v, d_o = inputs(rng, dtype, B, S, Hq, Hkv, D)
                self.assertFalse(q.flags["C_CONTIGUOUS"])
                base = dict(num_heads_q=Hq, num_heads_kv=Hkv, head_dim=D, causal=True, batch=B,
                            seqlen=S, dtype=name, saved_activations="lse")
                (want,), errs = run_ranks(1, lambda r, c: step(
                    ulysses.PlanConfig(cp=1, **base), c, q, k, v, d_o))
                self.assertIsNone(errs[0])
                Sl = S // cp
                shard = lambda x, r: np.ascontiguousarray(x[:, r * Sl:(r + 1) * Sl])  # noqa: E731
                got, errs = run_ranks(cp, lambda r, c: step(
                    ulysses.PlanConfig(cp=cp, **base), c, q[:, r * Sl:(r + 1) * Sl],
                    k[:, r * Sl:(r + 1) * Sl], v[:, r * Sl:(r + 1) * Sl], shard(d_o, r)))
                self.assertEqual(errs, [None] * cp)
                for i, what in enumerate(("O", "LSE", "dQ", "dK", "dV")):
                    whole = np.concatenate([g[i] for g in got], axis=2 if what == "LSE" else 1)
                    self.assertFalse(np.isnan(whole).any(), what + ": elements never written")
                    self.assertTrue(np.array_equal(whole, want[i]), what + " differs")

    def test_heads_split_unevenly(self):
        """6 KV heads (12 query heads) on 4 ranks: 2, 2, 1, 1 KV heads each, bitwise cp = 1;
        5 KV heads on 8 ranks is refused naming num_heads_kv and what takes those heads."""
        rng = np.random.default_rng()
        B, S, Hq, Hkv, D, cp = 1, 16, 12, 6, 8, 4
        q, k, v, d_o = inputs(rng, np.float32, B, S, Hq, Hkv, D)
        base = dict(num_heads_q=Hq, num_heads_kv=Hkv, head_dim=D, causal=True, batch=B,
                    seqlen=S, dtype="fp32", sinks=False)
        (want,), errs = run_ranks(1, lambda r, c: step(
            ulysses.PlanConfig(cp=1, **base), c, q, k, v, d_o))
        self.assertIsNone(errs[0])
        Sl = S // cp
        sl = lambda x, r: x[:, r * Sl:(r + 1) * Sl]  # noqa: E731
        got, errs = run_ranks(cp, lambda r, c: step(
            ulysses.PlanConfig(cp=cp, **base), c, sl(q, r), sl(k, r), sl(v, r), sl(d_o, r)))
        self.assertEqual(errs, [None] * cp)
        for i, what in enumerate(("O", "LSE", "dQ", "dK", "dV")):
            whole = np.concatenate([g[i] for g in got], axis=2 if what == "LSE" else 1)
            self.assertFalse(np.isnan(whole).any(), what + ": elements never written")
            self.assertTrue(np.array_equal(whole, want[i]), what + " differs")
        _, errs = run_ranks(8, lambda r, c: ulysses.Plan(
            ulysses.PlanConfig(cp=8, num_heads_q=10, num_heads_kv=5, head_dim=D, batch=B,
                               seqlen=S, dtype="fp32"), c, ulysses.reference_kernel()))
        for e in errs:
            self.assertIsInstance(e, ulysses.UlyssesError)
            self.assertIn("num_heads_kv", str(e))
            self.assertIn("allgather or ring", str(e))

    def test_value_heads_of_another_width(self):
        """head_dim_v != head_dim (MLA): V, O, dO, dV 8 wide, Q, K, dQ, dK 12; cp = 2 bitwise
        cp = 1, and a plan with FP8 payloads under ring at cp = 2 made (rows of gcd(D, Dv) = 4
        values; its numbers are checked in tests/unit/test_ring.cc)."""
        rng = np.random.default_rng()
        B, S, Hq, Hkv, D, Dv, cp = 1, 16, 4, 2, 12, 8, 2
        q = rng.uniform(-2, 2, (B, S, Hq, D)).astype(np.float32)
        k = rng.uniform(-2, 2, (B, S, Hkv, D)).astype(np.float32)
        v = rng.uniform(-2, 2, (B, S, Hkv, Dv)).astype(np.float32)
        d_o = rng.uniform(-2, 2, (B, S, Hq, Dv)).astype(np.float32)
        base = dict(num_heads_q=Hq, num_heads_kv=Hkv, head_dim=D, head_dim_v=Dv, causal=True,
                    batch=B, seqlen=S, dtype="fp32")
        (want,), errs = run_ranks(1, lambda r, c: step(
            ulysses.PlanConfig(cp=1, **base), c, q, k, v, d_o))
        self.assertIsNone(errs[0])
        self.assertEqual(want[0].shape, (B, S, Hq, Dv))
        Sl = S // cp
        sl = lambda x, r: np.ascontiguousarray(x[:, r * Sl:(r + 1) * Sl])  # noqa: E731
        got, errs = run_ranks(cp, lambda r, c: step(
            ulysses.PlanConfig(cp=cp, **base), c, sl(q, r), sl(k, r), sl(v, r), sl(d_o, r)))
        self.assertEqual(errs, [None] * cp)
        for i, what in enumerate(("O", "LSE", "dQ", "dK", "dV")):
            whole = np.concatenate([g[i] for g in got], axis=2 if what == "LSE" else 1)
            self.assertFalse(np.isnan(whole).any(), what + ": elements never written")
            self.assertTrue(np.array_equal(whole, want[i]), what + " differs")
        plans, errs = run_ranks(cp, lambda r, c: ulysses.Plan(
            ulysses.PlanConfig(cp=cp, strategy="ring", payload="fp8", **base), c,
            ulysses.reference_kernel()))
        self.assertEqual(errs, [None] * cp)
        self.assertTrue(all(isinstance(p, ulysses.Plan) for p in plans))

    def test_held_bytes_are_counted_and_released(self):
        """cp = 1 on views 4 bytes off 16-byte alignment: the plan copies rows through buffers of
        its own, counts them in held_bytes, frees them on release_held, and the next step
        allocates them again with the same bits. The reference kernel holds nothing."""
        rng = np.random.default_rng()
        B, S, Hq, Hkv, D = 1, 16, 4, 2, 8
        C = Hq + 2 * Hkv
        flat = np.empty(B * S * C * D + 1, np.float32)
        qkv = flat[1:].reshape(B, S, C, D)
        qkv[...] = rng.uniform(-2, 2, qkv.shape)
        q, k, v = qkv[:, :, :Hq], qkv[:, :, Hq:Hq + Hkv], qkv[:, :, Hq + Hkv:]
        d_o = rng.uniform(-2, 2, (B, S, Hq, D)).astype(np.float32)
        cfg = ulysses.PlanConfig(num_heads_q=Hq, num_heads_kv=Hkv, head_dim=D, causal=True,
                                 seqlen=S, dtype="fp32", saved_activations="lse")

        def run(r, c):
            kernel = ulysses.reference_kernel()
            plan = ulysses.Plan(cfg, c, kernel)
            ws = np.empty(max(plan.workspace_bytes, 1), np.uint8)
            saved = np.empty(max(plan.saved_bytes, 1), np.uint8)

            def once():
                o = np.full(q.shape, np.nan, np.float32)
                plan.forward(q, k, v, o, workspace=ws, saved=saved)
                dq, dk, dv = (np.full(x.shape, np.nan, np.float32) for x in (q, k, v))
                plan.backward(d_o, dq, dk, dv, workspace=ws, saved=saved, q=q, k=k, v=v, o=o)
                return o, dq, dk, dv

            held = [plan.held_bytes]
            first = once()
            held.append(plan.held_bytes)
            plan.release_held()
            held.append(plan.held_bytes)
            second = once()
            held.append(plan.held_bytes)
            return held, kernel.held_bytes, first, second

        (got,), errs = run_ranks(1, run)
        self.assertIsNone(errs[0])
        held, kernel_held, first, second = got
        self.assertEqual(held[0], 0)
        self.assertGreater(held[1], 0)
        self.assertEqual(held[2], 0)
        self.assertEqual(held[3], held[1])
        self.assertEqual(kernel_held, 0)
        for a, b, what in zip(first, second, ("O", "dQ", "dK", "dV")):
            self.assertFalse(np.isnan(b).any(), what + ": elements never written")
            self.assertTrue(np.array_equal(a, b), what + " differs after release_held")


class PackedSinksThroughCtypes(unittest.TestCase):
    def test_packed_batch_with_sinks_and_a_window_bitwise(self):
        """Layout thd ([T/cp, H, D] views, global cu_seqlens), sinks and dSinks, a window."""
        rng = np.random.default_rng()
        T, Hq, Hkv, D, cp = 24, 4, 2, 8, 2
        cu = [0, 5, 17, 24]
        q, k, v, d_o = (x[0] for x in inputs(rng, np.float32, 1, T, Hq, Hkv, D))
        sinks = rng.uniform(-1, 1, Hq).astype(np.float32)
        base = dict(num_heads_q=Hq, num_heads_kv=Hkv, head_dim=D, causal=True, window_left=6,
                    sinks=True, layout="thd", seqlen=T, dtype="fp32")

        def run(cfg, comm, rows):
            plan = ulysses.Plan(cfg, comm, ulysses.reference_kernel())
            ws = np.empty(max(plan.workspace_bytes, 1), np.uint8)
            saved = np.empty(max(plan.saved_bytes, 1), np.uint8)
            o = np.full(q[rows].shape, np.nan, np.float32)
            lse = np.full((Hq, o.shape[0]), np.nan, np.float32)
            plan.forward(q[rows], k[rows], v[rows], o, lse=lse, sinks=sinks, cu_seqlens=cu,
                         workspace=ws, saved=saved)
            dq, dk, dv = (np.full(x[rows].shape, np.nan, np.float32) for x in (q, k, v))
            dsinks = np.full(Hq, np.nan, np.float32)
            plan.backward(np.ascontiguousarray(d_o[rows]), dq, dk, dv, dsinks=dsinks, sinks=sinks,
                          cu_seqlens=cu, workspace=ws, saved=saved)
            return o, lse, dq, dk, dv, dsinks

        (want,), errs = run_ranks(1, lambda r, c: run(ulysses.PlanConfig(cp=1, **base), c,
                                                      slice(0, T)))
        self.assertIsNone(errs[0])
        Tl = T // cp
        got, errs = run_ranks(cp, lambda r, c: run(ulysses.PlanConfig(cp=cp, **base), c,
                                                   slice(r * Tl, (r + 1) * Tl)))
        self.assertEqual(errs, [None] * cp)
        for i, what in enumerate(("O", "LSE", "dQ", "dK", "dV")):
            whole = np.concatenate([g[i] for g in got], axis=1 if what == "LSE" else 0)
            self.assertFalse(np.isnan(whole).any(), what + ": elements never written")
            self.assertTrue(np.array_equal(whole, want[i]), what + " differs")
        for r in range(cp):
            self.assertTrue(np.array_equal(got[r][5], want[5]), f"dSinks on rank {r}")


class ZigzagStrategiesThroughCtypes(unittest.TestCase):
    def test_zigzag_shards_match_the_unsharded_run(self):
        rng = np.random.default_rng()
        B, S, Hq, Hkv, D = 1, 32, 4, 2, 8
        q, k, v, d_o = inputs(rng, np.float64, B, S, Hq, Hkv, D)
        base = dict(num_heads_q=Hq, num_heads_kv=Hkv, head_dim=D, causal=True, batch=B, seqlen=S,
                    dtype="fp64")
        (want,), errs = run_ranks(1, lambda r, c: step(
            ulysses.PlanConfig(cp=1, **base), c, q, k, v, d_o))
        self.assertIsNone(errs[0])
        for cfg in (ulysses.PlanConfig(strategy="ring", cp=2, **base),
                    ulysses.PlanConfig(strategy="hybrid", cp=4, ulysses_degree=2, **base),
                    ulysses.PlanConfig(strategy="allgather", cp=4, **base)):
            with self.subTest(strategy=cfg.strategy, cp=cfg.cp):
                cp = cfg.cp
                rows = [np.array(ulysses.shard_indices(cfg, r)) for r in range(cp)]
                self.assertEqual(sorted(np.concatenate(rows).tolist()), list(range(S)))
                got, errs = run_ranks(cp, lambda r, c: step(
                    cfg, c, q[:, rows[r]], k[:, rows[r]], v[:, rows[r]], d_o[:, rows[r]]))
                self.assertEqual(errs, [None] * cp)
                for i, what in enumerate(("O", "LSE", "dQ", "dK", "dV")):
                    axis = 2 if what == "LSE" else 1
                    whole = np.empty_like(want[i])
                    for r in range(cp):
                        idx = [slice(None)] * whole.ndim
                        idx[axis] = rows[r]
                        whole[tuple(idx)] = got[r][i]
                    err = np.abs(whole - want[i]).max()
                    self.assertLess(err, 2.0**-20 * max(1.0, np.abs(want[i]).max()), what)

    def test_packed_stream_under_ring_matches_the_unsharded_run(self):
        """packed_sharding="stream": ring and hybrid take the packed stream's zigzag shards with
        plain cu_seqlens (documents across chunk boundaries, padding after them)."""
        rng = np.random.default_rng()
        T, Hq, Hkv, D = 48, 4, 2, 8
        cu = [0, 5, 27, 28, 41]
        q, k, v, d_o = (x[0] for x in inputs(rng, np.float64, 1, T, Hq, Hkv, D))
        base = dict(num_heads_q=Hq, num_heads_kv=Hkv, head_dim=D, causal=True, window_left=6,
                    layout="thd", seqlen=T, dtype="fp64")

        def run(cfg, comm, rows):
            plan = ulysses.Plan(cfg, comm, ulysses.reference_kernel())
            ws = np.empty(max(plan.workspace_bytes, 1), np.uint8)
            saved = np.empty(max(plan.saved_bytes, 1), np.uint8)
            o = np.full(q[rows].shape, np.nan)
            plan.forward(q[rows], k[rows], v[rows], o, cu_seqlens=cu, workspace=ws, saved=saved)
            dq, dk, dv = (np.full(x[rows].shape, np.nan) for x in (q, k, v))
            plan.backward(np.ascontiguousarray(d_o[rows]), dq, dk, dv, cu_seqlens=cu,
                          workspace=ws, saved=saved)
            return o, dq, dk, dv

        (want,), errs = run_ranks(1, lambda r, c: run(ulysses.PlanConfig(cp=1, **base), c,
                                                      np.arange(T)))
        self.assertIsNone(errs[0])
        for cfg in (ulysses.PlanConfig(strategy="ring", cp=2, packed_sharding="stream", **base),
                    ulysses.PlanConfig(strategy="hybrid", cp=4, ulysses_degree=2,
                                       packed_sharding="stream", **base)):
            with self.subTest(strategy=cfg.strategy):
                rows = [np.array(ulysses.shard_indices(cfg, r, cu)) for r in range(cfg.cp)]
                got, errs = run_ranks(cfg.cp, lambda r, c: run(cfg, c, rows[r]))
                self.assertEqual(errs, [None] * cfg.cp)
                for i, what in enumerate(("O", "dQ", "dK", "dV")):
                    whole = np.full_like(want[i], np.nan)
                    for r in range(cfg.cp):
                        whole[rows[r]] = got[r][i]
                    self.assertFalse(np.isnan(whole).any(), what + ": elements never written")
                    err = np.abs(whole - want[i]).max()
                    self.assertLess(err, 2.0**-20 * max(1.0, np.abs(want[i]).max()), what)

    def test_position_ids_and_packed_offsets(self):
        ring = ulysses.PlanConfig(strategy="ring", cp=2, seqlen=48)
        self.assertEqual(ulysses.shard_position_ids(ring, 0),
                         list(range(0, 12)) + list(range(36, 48)))
        self.assertEqual(ulysses.shard_indices(ring, 1), list(range(12, 36)))
        # Packed, ring cp = 2: lengths 5, 12, 1 pad to 8, 12, 4 at offsets 0, 8, 20 (the C++
        # sharding test's case); positions inside each sequence, 0 for padding.
        packed = ulysses.PlanConfig(strategy="ring", cp=2, seqlen=28, layout="thd")
        cu = [0, 5, 17, 18]
        self.assertEqual(ulysses.packed_sequence_offsets(packed, cu), [0, 8, 20, 24])
        self.assertEqual(ulysses.shard_position_ids(packed, 0, cu),
                         [0, 1, 0, 1, 2, 0, 0, 0, 0, 9, 10, 11, 0, 0])
        # Packed, allgather cp = 2: the stream itself in zigzag chunks of 7 (Llama 3's way), the
        # offsets as given; positions restart at each document.
        ag = ulysses.PlanConfig(strategy="allgather", cp=2, seqlen=28, layout="thd")
        self.assertEqual(ulysses.packed_sequence_offsets(ag, cu), cu)
        self.assertEqual(ulysses.shard_indices(ag, 0, cu), list(range(0, 7)) + list(range(21, 28)))
        self.assertEqual(ulysses.shard_position_ids(ag, 1, cu),
                         [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0, 0, 0, 0])
        # Packed, ring with packed_sharding="stream": all-gather's layout.
        stream = ulysses.PlanConfig(strategy="ring", cp=2, seqlen=28, layout="thd",
                                    packed_sharding="stream")
        self.assertEqual(ulysses.packed_sequence_offsets(stream, cu), cu)
        self.assertEqual(ulysses.shard_indices(stream, 0, cu), ulysses.shard_indices(ag, 0, cu))
        with self.assertRaises(ulysses.UlyssesError) as e:
            ulysses.PlanConfig(packed_sharding="per_document")._c()
        self.assertIn("packed_sharding", str(e.exception))
        with self.assertRaises(ulysses.UlyssesError) as e:
            ulysses.shard_position_ids(ulysses.PlanConfig(strategy="ring", cp=2, seqlen=50), 0)
        self.assertIn("seqlen", str(e.exception))

    def test_balanced_order_evens_the_ranks_and_keeps_the_results(self):
        """balance_packed_sequences() reorders the documents so that the largest rank's pairs
        shrink; the reordered batch, run through all-gather, gives each document the same
        outputs as the given order."""
        T, Hq, Hkv, D, cp = 64, 2, 1, 8, 2
        cu = [0, 36, 48, 52, 60]  # a long document first: rank 1 holds its late rows
        cfg = ulysses.PlanConfig(num_heads_q=Hq, num_heads_kv=Hkv, head_dim=D, causal=True,
                                 strategy="allgather", cp=cp, layout="thd", seqlen=T,
                                 dtype="fp64")
        before = ulysses.attention_pairs_by_rank(cfg, cu)
        self.assertEqual(sum(before), sum(n * (n + 1) // 2 for n in (36, 12, 4, 8)))
        order, cu2 = ulysses.balance_packed_sequences(cfg, cu)
        self.assertEqual(sorted(order), [0, 1, 2, 3])
        self.assertEqual([cu2[i + 1] - cu2[i] for i in range(4)],
                         [cu[s + 1] - cu[s] for s in order])
        after = ulysses.attention_pairs_by_rank(cfg, cu2)
        self.assertLess(max(after), max(before))
        self.assertEqual(sum(after), sum(before))
        idx = ulysses.packed_token_order(cu, order, total_tokens=T)
        self.assertEqual(sorted(idx), list(range(T)))
        self.assertEqual(idx[-4:], [60, 61, 62, 63])  # padding stays at the end
        with self.assertRaises(ValueError):
            ulysses.packed_token_order(cu, [0, 1, 1, 3])
        # The reordered batch through the library: each token's outputs move with it.
        rng = np.random.default_rng()
        q, k, v, d_o = (x[0] for x in inputs(rng, np.float64, 1, T, Hq, Hkv, D))

        def run(batch_cu, x):
            def rank(r, comm):
                rows = np.array(ulysses.shard_indices(cfg, r, batch_cu))
                plan = ulysses.Plan(cfg, comm, ulysses.reference_kernel())
                ws = np.empty(max(plan.workspace_bytes, 1), np.uint8)
                saved = np.empty(max(plan.saved_bytes, 1), np.uint8)
                o = np.full(x[0][rows].shape, np.nan)
                plan.forward(*(t[rows] for t in x[:3]), o, cu_seqlens=batch_cu, workspace=ws,
                             saved=saved)
                return rows, o
            got, errs = run_ranks(cp, rank)
            self.assertEqual(errs, [None] * cp)
            whole = np.full(x[0].shape, np.nan)
            for rows, o in got:
                whole[rows] = o
            return whole

        o1 = run(cu, (q, k, v))
        o2 = run(cu2, tuple(t[idx] for t in (q, k, v)))
        self.assertLess(np.abs(o2 - o1[idx])[:cu[-1]].max(), 1e-12)
        with self.assertRaises(ulysses.UlyssesError) as e:
            ulysses.balance_packed_sequences(cfg, [0, 36, 70])
        self.assertIn("cu_seqlens", str(e.exception))

    def test_token_ranges(self):
        cfg = ulysses.PlanConfig(strategy="ring", cp=2, seqlen=48)
        self.assertEqual(ulysses.shard_token_ranges(cfg, 0), [(0, 12), (36, 48)])
        self.assertEqual(ulysses.shard_token_ranges(cfg, 1), [(12, 24), (24, 36)])
        with self.assertRaises(ulysses.UlyssesError) as e:
            ulysses.shard_token_ranges(cfg, 2)
        self.assertEqual(e.exception.code, "INVALID_ARGUMENT")
        self.assertIn("rank", str(e.exception))


class Errors(unittest.TestCase):
    def test_bad_config_fails_on_every_rank_with_one_message(self):
        cfg = ulysses.PlanConfig(num_heads_q=6, num_heads_kv=2, head_dim=8, cp=4, seqlen=16,
                                 dtype="fp32")
        _, errs = run_ranks(4, lambda r, c: ulysses.Plan(cfg, c, ulysses.reference_kernel()))
        for e in errs:
            self.assertIsInstance(e, ulysses.UlyssesError)
            self.assertEqual(e.code, "INVALID_ARGUMENT")
            self.assertIn("num_heads", str(e))
            self.assertEqual(str(e), str(errs[0]))

    def test_graph_stats_are_for_cudnn_kernels_only(self):
        with self.assertRaises(ulysses.UlyssesError) as e:
            ulysses.reference_kernel().cudnn_graph_stats()
        expected = "INVALID_ARGUMENT" if ulysses.built_with_cuda() else "UNSUPPORTED"
        self.assertEqual(e.exception.code, expected)
        if ulysses.built_with_cuda():
            self.assertIn("create_cudnn_attention", str(e.exception))

    def test_wrapped_nccl_communicator_arguments_are_checked(self):
        with self.assertRaises(ulysses.UlyssesError) as e:
            ulysses.wrap_nccl_communicator(0, 0)  # NULL
        self.assertEqual(e.exception.code, "INVALID_ARGUMENT")
        self.assertIn("nccl_comm is NULL", str(e.exception))
        with self.assertRaises(ulysses.UlyssesError) as e:
            ulysses.wrap_nccl_communicator("comm", 0)
        self.assertIn("expected an int", str(e.exception))
        with self.assertRaises(ulysses.UlyssesError) as e:
            ulysses.wrap_nccl_communicator(-1, 0)
        self.assertIn("nccl_comm is -1, which is not an address", str(e.exception))
        # A device no machine has: refused before the (fake) communicator is read.
        with self.assertRaises(ulysses.UlyssesError) as e:
            ulysses.wrap_nccl_communicator(0x1000, 1 << 20)
        expected = "INVALID_ARGUMENT" if ulysses.built_with_cuda() else "UNSUPPORTED"
        self.assertEqual(e.exception.code, expected)
        self.assertIn("wrap_nccl_communicator", str(e.exception))

    def test_out_of_range_enum_is_named_by_the_library(self):
        cfg = ulysses.PlanConfig(num_heads_q=2, num_heads_kv=1, head_dim=8, seqlen=8,
                                 dtype="fp32", strategy=7)
        _, errs = run_ranks(1, lambda r, c: ulysses.Plan(cfg, c, ulysses.reference_kernel()))
        self.assertEqual(errs[0].code, "INVALID_ARGUMENT")
        self.assertIn("strategy", str(errs[0]))
        with self.assertRaises(ulysses.UlyssesError) as e:
            ulysses.PlanConfig(dtype="fp12")._c()
        self.assertIn("fp12", str(e.exception))

    def test_bad_softmax_scale_is_refused(self):
        for scale in (-1.0, 0.0, float("inf")):
            cfg = ulysses.PlanConfig(num_heads_q=2, num_heads_kv=1, head_dim=8, seqlen=8,
                                     dtype="fp32", softmax_scale=scale)
            _, errs = run_ranks(1, lambda r, c: ulysses.Plan(cfg, c, ulysses.reference_kernel()))
            self.assertIsInstance(errs[0], ulysses.UlyssesError, scale)
            self.assertEqual(errs[0].code, "INVALID_ARGUMENT")
            self.assertIn("softmax_scale", str(errs[0]))

    def test_wrong_view_is_refused_before_data_moves(self):
        cfg = ulysses.PlanConfig(num_heads_q=2, num_heads_kv=1, head_dim=8, cp=2, seqlen=8,
                                 dtype="fp32")

        def call(r, c):
            plan = ulysses.Plan(cfg, c, ulysses.reference_kernel())
            ws = np.empty(plan.workspace_bytes, np.uint8)
            saved = np.empty(plan.saved_bytes, np.uint8)
            q = np.zeros((1, 4, 2, 8), np.float32)
            kv = np.zeros((1, 4, 1, 8), np.float32)
            o = np.zeros((1, 5, 2, 8), np.float32)  # one token too many
            plan.forward(q, kv, kv, o, workspace=ws, saved=saved)

        _, errs = run_ranks(2, call)
        for e in errs:
            self.assertIsInstance(e, ulysses.UlyssesError)
            self.assertEqual(e.code, "INVALID_ARGUMENT")
            self.assertIn(" o ", str(e))

    def test_strides_reach_the_library_as_given(self):
        """Reversed tokens (a negative stride) and every other element of head_dim are refused by
        the library's own checks, which name the stride: the binding passed them on unchanged."""
        cfg = ulysses.PlanConfig(num_heads_q=2, num_heads_kv=1, head_dim=8, seqlen=8,
                                 dtype="fp32")

        def call(r, c, q):
            plan = ulysses.Plan(cfg, c, ulysses.reference_kernel())
            kv = np.zeros((1, 8, 1, 8), np.float32)
            plan.forward(q, kv, kv, np.zeros((1, 8, 2, 8), np.float32),
                         workspace=np.empty(plan.workspace_bytes, np.uint8),
                         saved=np.empty(plan.saved_bytes, np.uint8))

        reversed_tokens = np.zeros((1, 8, 2, 8), np.float32)[:, ::-1]
        every_other = np.zeros((1, 8, 2, 16), np.float32)[..., ::2]
        for q, needle in ((reversed_tokens, "q.strides[1] is negative"),
                          (every_other, "q.strides[3] must be 1")):
            _, errs = run_ranks(1, lambda r, c: call(r, c, q))
            self.assertIsInstance(errs[0], ulysses.UlyssesError)
            self.assertIn(needle, str(errs[0]))

    def test_unsupported_array_types_are_named(self):
        with self.assertRaises(ulysses.UlyssesError) as e:
            ulysses._tensor([1.0, 2.0], "q")
        self.assertIn("q", str(e.exception))
        with self.assertRaises(ulysses.UlyssesError) as e:
            ulysses._tensor(np.zeros(4, np.int32), "k")
        self.assertIn("k has an unsupported dtype", str(e.exception))

    def test_byte_strides_between_elements_are_refused(self):
        # Rows 66 bytes apart hold no whole number of fp32 elements: dividing would shift the view.
        base = np.zeros(4 * 66 + 64, np.uint8)
        q = np.lib.stride_tricks.as_strided(base.view(np.float32), shape=(1, 4, 2, 8),
                                            strides=(0, 66, 32, 4))
        with self.assertRaises(ulysses.UlyssesError) as e:
            ulysses._tensor(q, "q")
        self.assertIn("q has byte strides (0, 66, 32, 4)", str(e.exception))
        ok = np.lib.stride_tricks.as_strided(base.view(np.float32), shape=(1, 4, 2, 8),
                                             strides=(0, 68, 32, 4))
        self.assertEqual(list(ulysses._tensor(ok, "q").strides[:4]), [0, 17, 8, 1])

    def test_config_fields_are_never_truncated_or_wrapped(self):
        base = dict(num_heads_q=8, num_heads_kv=2, head_dim=64, seqlen=128)
        for field, value in (("num_heads_q", (1 << 32) + 8), ("head_dim", 64.5),
                             ("strategy", 1 << 32), ("window_left", None), ("cp", "2")):
            with self.subTest(field=field):
                with self.assertRaises(ulysses.UlyssesError) as e:
                    ulysses.PlanConfig(**{**base, field: value})._c()
                self.assertEqual(e.exception.code, "INVALID_ARGUMENT")
                self.assertIn(f"{field} is {value!r}", str(e.exception))
        with self.assertRaises(ulysses.UlyssesError) as e:
            ulysses.DecodeConfig(num_heads_q=8, num_heads_kv=2, head_dim=64,
                                 cache_rows=(1 << 64) + 1)._c()
        self.assertIn("cache_rows is", str(e.exception))
        c = ulysses.PlanConfig(**{**base, "head_dim": 64.0, "seqlen": np.int64(1 << 40)})._c()
        self.assertEqual((c.head_dim, c.seqlen), (64, 1 << 40))
        # Flags: "false" is a truthy string, not False.
        for field, value in (("causal", "false"), ("training", 2), ("sinks", None)):
            with self.subTest(field=field):
                with self.assertRaises(ulysses.UlyssesError) as e:
                    ulysses.PlanConfig(**{**base, field: value})._c()
                self.assertIn(f"{field} is {value!r}, expected True or False", str(e.exception))
        c = ulysses.PlanConfig(**{**base, "causal": np.bool_(True), "training": 0})._c()
        self.assertEqual((c.causal, c.training), (1, 0))
        with self.assertRaises(ulysses.UlyssesError) as e:
            ulysses.cudnn_kernel(0, deterministic="no")
        self.assertIn("deterministic is 'no'", str(e.exception))

    def test_int_arguments_are_never_wrapped(self):
        # ctypes would pass 2^32 as 0 and 2^32 + 1 as 1: device 0, rank 1's shard.
        with self.assertRaises(ulysses.UlyssesError) as e:
            ulysses.device_loopback_group(2, 1 << 32)
        self.assertIn("ulysses_device_loopback_group's argument 2 is 4294967296",
                      str(e.exception))
        cfg = ulysses.PlanConfig(num_heads_q=2, num_heads_kv=1, head_dim=8, cp=2, seqlen=8,
                                 dtype="fp32")
        with self.assertRaises(ulysses.UlyssesError) as e:
            ulysses.shard_token_ranges(cfg, (1 << 32) + 1)
        self.assertIn("argument 2 is 4294967297", str(e.exception))
        self.assertEqual(len(ulysses.loopback_group(2)), 2)

    def test_addresses_given_as_ints_are_never_wrapped(self):
        for bad in (-1, 1 << 64):
            with self.assertRaises(ulysses.UlyssesError) as e:
                ulysses._pointer(bad)
            self.assertIn(f"is {bad}, which is not an address", str(e.exception))
            with self.assertRaises(ulysses.UlyssesError) as e:
                ulysses._stream(bad)
            self.assertIn(f"stream is {bad}", str(e.exception))
        self.assertEqual((ulysses._pointer(0x1000), ulysses._stream(0)), (0x1000, 0))

    def test_host_int32_lists_are_never_truncated_or_wrapped(self):
        for bad, what in (([0, 4.5, 8], "4.5"), ([0, 1 << 31], str(1 << 31)),
                          ([0, -(1 << 31) - 1], str(-(1 << 31) - 1))):
            with self.assertRaises(ulysses.UlyssesError) as e:
                ulysses._cu(bad)
            self.assertIn(f"cu_seqlens holds {what}", str(e.exception))
        # A page table of nested rows: an entry past int32 would have wrapped to page 5.
        with self.assertRaises(ulysses.UlyssesError) as e:
            ulysses._int32_host([[1, (1 << 32) + 5]], "page_table", None)
        self.assertIn("page_table holds 4294967301", str(e.exception))
        arr, n = ulysses._cu(np.array([0, 3, 8], np.int64))
        self.assertEqual((list(arr), n), ([0, 3, 8], 3))
        ptr, _ = ulysses._int32_host([[1, 2], [3.0, -4]], "page_table", 4)
        self.assertEqual([ptr[i] for i in range(4)], [1, 2, 3, -4])


if __name__ == "__main__":
    unittest.main()
