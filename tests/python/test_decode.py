"""Decoding through the Python package on the CPU: loopback ranks in threads, the reference kernel,
against attention written out in NumPy (float64) over the whole cache.

Each rank's cache holds a contiguous shard of the positions at rows shifted by one (row 0 is NaN, so
a wrong row offset shows), and the last rank also the new tokens' keys as a second segment. The
kernel's LSE is fp32, so results are held to 1e-5 (O values are O(1)); every rank's O is the same.
"""

import ctypes
import unittest

import numpy as np

import rank_threads
import ulysses


def attention(q, k, v, p0, window_left, sinks):
    """q [B, T, Hq, D] at positions p0.., k [B, N, Hkv, D], v [B, N, Hkv, Dv] at 0..N-1; causal;
    fp64."""
    B, T, Hq, D = q.shape
    N, Hkv = k.shape[1], k.shape[2]
    g = Hq // Hkv
    o = np.zeros((B, T, Hq, v.shape[3]))
    lse = np.zeros((B, Hq, T))
    pos = np.arange(N)
    for b in range(B):
        for h in range(Hq):
            s = q[b, :, h] @ k[b, :, h // g].T / np.sqrt(D)  # [T, N]
            for t in range(T):
                mask = pos <= p0 + t
                if window_left >= 0:
                    mask &= pos >= p0 + t - window_left
                row = np.where(mask, s[t], -np.inf)
                m = row.max()
                w = np.exp(row - m)
                denom = w.sum() + (np.exp(sinks[h] - m) if sinks is not None else 0.0)
                o[b, t, h] = w @ v[b, :, h // g] / denom
                lse[b, h, t] = m + np.log(denom)
    return o, lse


class DecodeThroughCtypes(unittest.TestCase):
    def expect_everywhere(self, outs, want_o, want_lse):
        """Every rank's (O, LSE) within 1e-5 of the truth, and every rank's O rank 0's bits."""
        for r, (o, lse) in enumerate(outs):
            self.assertLess(np.abs(o - want_o).max(), 1e-5, f"O, rank {r}")
            self.assertLess(np.abs(lse - want_lse).max(), 1e-5, f"LSE, rank {r}")
            np.testing.assert_array_equal(o, outs[0][0])

    def run_case(self, cp, T, window_left, with_sinks, Dv=8, split_kernel="auto", page_size=0,
                 device_layout=False):
        rng = np.random.default_rng()
        B, Hq, Hkv, D, prefill = 2, 4, 2, 8, 37
        N = prefill + T
        k = rng.uniform(-1, 1, (B, N, Hkv, D))
        v = rng.uniform(-1, 1, (B, N, Hkv, Dv))
        q = rng.uniform(-1, 1, (B, T, Hq, D))
        sinks = rng.uniform(-1, 1, Hq).astype(np.float32) if with_sinks else None
        want_o, want_lse = attention(q, k, v, prefill, window_left,
                                     sinks.astype(np.float64) if with_sinks else None)
        cap = prefill // cp + 1 + T + 2
        if page_size:
            cap = -(-cap // page_size) * page_size
        cfg = ulysses.DecodeConfig(num_heads_q=Hq, num_heads_kv=Hkv, head_dim=D, causal=True,
                                   window_left=window_left, sinks=with_sinks, cp=cp,
                                   dtype="fp64", batch=B, query_tokens=T, cache_rows=cap,
                                   max_segments=2, max_splits=3, min_split_rows=4,
                                   head_dim_v=Dv, split_kernel=split_kernel,
                                   page_size=page_size, device_layout=device_layout)

        def rank(r, comm):
            lo, hi = prefill * r // cp, prefill * (r + 1) // cp
            kc = np.full((B, cap, Hkv, D), np.nan)
            vc = np.full((B, cap, Hkv, Dv), np.nan)
            kc[:, 1:1 + hi - lo], vc[:, 1:1 + hi - lo] = k[:, lo:hi], v[:, lo:hi]
            segments = [(1, hi - lo, lo)]
            if r == cp - 1:  # the new tokens' keys, after one more NaN row
                at = 2 + hi - lo
                kc[:, at:at + T], vc[:, at:at + T] = k[:, prefill:], v[:, prefill:]
                segments.append((at, T, prefill))
            paged = {}
            if page_size:
                # Sequence b's page i at place where[b, i] of a pool with one spare NaN page;
                # the table as a NumPy array on rank 0, a list elsewhere.
                n = cap // page_size
                where = rng.permutation(B * n + 1)[:B * n].reshape(B, n).astype(np.int32)
                pools = []
                for c in (kc, vc):
                    pool = np.full((B * n + 1, page_size) + c.shape[2:], np.nan)
                    pool[where.ravel()] = c.reshape((B * n, page_size) + c.shape[2:])
                    pools.append(pool)
                kc, vc = pools
                paged["page_table"] = where if r == 0 else where.tolist()
            dec = ulysses.Decode(cfg, comm, ulysses.reference_kernel())
            ws = np.empty(max(dec.workspace_bytes, 1), np.uint8)
            o = np.full(want_o.shape, np.nan)
            lse = np.full((B, Hq, T), np.nan, np.float32)
            if device_layout:
                # The layout as arrays the host ranks read as device memory: every sequence
                # holds `segments`, unused entries rows 0.
                seg_dev = np.zeros((B, 2, 3), np.int64)
                seg_dev[:, :len(segments)] = segments
                dev = dict(segments_device=seg_dev,
                           query_positions_device=np.full(B, prefill, np.int64))
                if page_size:
                    dev["page_table_device"] = np.ascontiguousarray(where)
                dec.check_device_layout(q, kc, vc, o, lse=lse, sinks=sinks, workspace=ws, **dev)
                dec.forward(q, kc, vc, o, lse=lse, sinks=sinks, workspace=ws, **dev)
                return o, lse
            dec.forward(q, kc, vc, o, segments=segments, query_position=prefill, lse=lse,
                        sinks=sinks, workspace=ws, **paged)
            return o, lse

        self.expect_everywhere(rank_threads.results_or_raise(ulysses.loopback_group(cp), rank),
                               want_o, want_lse)

    def test_one_token(self):
        self.run_case(cp=3, T=1, window_left=-1, with_sinks=False)

    def test_three_tokens_window_sinks(self):
        self.run_case(cp=2, T=3, window_left=9, with_sinks=True)

    def test_built_in_kernel_on_the_host(self):
        self.run_case(cp=2, T=3, window_left=9, with_sinks=True, split_kernel="built_in")

    def test_paged_cache(self):
        """Pages of 4 rows in shuffled order in a pool (auto: the built-in kernel)."""
        self.run_case(cp=2, T=2, window_left=-1, with_sinks=True, page_size=4)

    def test_device_layout(self):
        """The layout in (host ranks') device memory, read when the step runs."""
        self.run_case(cp=3, T=1, window_left=-1, with_sinks=False, device_layout=True)

    def test_device_layout_paged_tokens_window_sinks(self):
        self.run_case(cp=2, T=3, window_left=9, with_sinks=True, page_size=4, device_layout=True)

    def test_device_layout_errors_are_named(self):
        cfg = ulysses.DecodeConfig(num_heads_q=2, num_heads_kv=1, head_dim=4, cp=1, dtype="fp64",
                                   batch=1, cache_rows=8, max_segments=2, device_layout=True)

        def rank(r, comm):
            dec = ulysses.Decode(cfg, comm, ulysses.reference_kernel())
            q, o = np.zeros((1, 1, 2, 4)), np.zeros((1, 1, 2, 4))
            kc = np.zeros((1, 8, 1, 4))
            ws = np.empty(max(dec.workspace_bytes, 1), np.uint8)
            overlap = np.array([[[0, 4, 0], [2, 2, 4]]], np.int64)
            pos = np.array([6], np.int64)
            with self.assertRaisesRegex(ulysses.UlyssesError, r"segments_device\[0\]\[1\]"):
                dec.check_device_layout(q, kc, kc, o, workspace=ws, segments_device=overlap,
                                        query_positions_device=pos)
            with self.assertRaisesRegex(ulysses.UlyssesError, "segments_device"):
                dec.forward(q, kc, kc, o, workspace=ws, query_positions_device=pos)
            with self.assertRaisesRegex(ulysses.UlyssesError, "segments and query_position"):
                dec.forward(q, kc, kc, o, workspace=ws, segments=[(0, 4, 0)])
            return True

        rank_threads.results_or_raise(ulysses.loopback_group(1), rank)

    def test_value_heads_of_another_width(self):
        """head_dim_v != head_dim (MLA): V and O heads 4 wide, Q and K heads 8."""
        self.run_case(cp=2, T=2, window_left=-1, with_sinks=True, Dv=4)

    def test_sequences_of_different_lengths(self):
        # Sequence b: prefill[b] cached positions, sharded contiguously over the ranks at rows
        # shifted by one, and T new tokens on the last rank; each its own query position.
        rng = np.random.default_rng()
        cp, B, T, Hq, Hkv, D = 2, 3, 2, 4, 2, 8
        prefill = [0, 23, 40]
        N = max(prefill) + T
        k = rng.uniform(-1, 1, (B, N, Hkv, D))
        v = rng.uniform(-1, 1, (B, N, Hkv, D))
        q = rng.uniform(-1, 1, (B, T, Hq, D))
        want_o, want_lse = np.zeros(q.shape), np.zeros((B, Hq, T))
        for b in range(B):
            n = prefill[b] + T
            o_b, l_b = attention(q[b:b + 1], k[b:b + 1, :n], v[b:b + 1, :n], prefill[b], -1, None)
            want_o[b], want_lse[b] = o_b[0], l_b[0]
        cap = N + 3
        cfg = ulysses.DecodeConfig(num_heads_q=Hq, num_heads_kv=Hkv, head_dim=D, causal=True,
                                   cp=cp, dtype="fp64", batch=B, query_tokens=T, cache_rows=cap,
                                   max_segments=2, max_splits=3, min_split_rows=4)

        def rank(r, comm):
            kc = np.full((B, cap, Hkv, D), np.nan)
            vc = np.full((B, cap, Hkv, D), np.nan)
            segments = []
            for b in range(B):
                lo, hi = prefill[b] * r // cp, prefill[b] * (r + 1) // cp
                kc[b, 1:1 + hi - lo], vc[b, 1:1 + hi - lo] = k[b, lo:hi], v[b, lo:hi]
                mine = [(1, hi - lo, lo)] if hi > lo else []
                if r == cp - 1:
                    at = 2 + hi - lo
                    p = prefill[b]
                    kc[b, at:at + T], vc[b, at:at + T] = k[b, p:p + T], v[b, p:p + T]
                    mine.append((at, T, p))
                segments.append(mine)
            dec = ulysses.Decode(cfg, comm, ulysses.reference_kernel())
            ws = np.empty(max(dec.workspace_bytes, 1), np.uint8)
            o = np.full(q.shape, np.nan)
            lse = np.full((B, Hq, T), np.nan, np.float32)
            dec.forward(q, kc, vc, o, segments=segments, query_position=prefill, lse=lse,
                        workspace=ws)
            return o, lse

        self.expect_everywhere(rank_threads.results_or_raise(ulysses.loopback_group(cp), rank),
                               want_o, want_lse)

    def test_defaults_are_the_librarys(self):
        c = ulysses._capi.DecodeConfig()
        ulysses._lib.ulysses_decode_config_init(ctypes.byref(c))
        d = ulysses.DecodeConfig()
        for f in ("cp", "batch", "query_tokens", "cache_rows", "max_segments", "max_splits",
                  "min_split_rows", "window_left", "window_right", "head_dim_v", "page_size",
                  "device_layout"):
            self.assertEqual(getattr(d, f), getattr(c, f), f)
        self.assertEqual(ulysses._DECODE_KERNELS[d.split_kernel], c.split_kernel)

    def test_split_kernel_and_page_size_are_passed_and_checked(self):
        # A paged cache with split_kernel local is refused by name; a kernel name outside the
        # table is refused before the library sees it.
        cfg = ulysses.DecodeConfig(num_heads_q=2, num_heads_kv=1, head_dim=4, cp=1, dtype="fp64",
                                   cache_rows=8, split_kernel="local", page_size=4)

        def rank(r, comm):
            ulysses.Decode(cfg, comm, ulysses.reference_kernel())

        with self.assertRaises(ulysses.UlyssesError) as e:
            rank_threads.results_or_raise(ulysses.loopback_group(1), rank)
        self.assertEqual(e.exception.code, "UNSUPPORTED")
        self.assertIn("page_size = 4", str(e.exception))
        with self.assertRaisesRegex(ulysses.UlyssesError, "split_kernel"):
            ulysses.DecodeConfig(num_heads_q=2, num_heads_kv=1, head_dim=4,
                                 split_kernel="cudnn")._c()

    def test_page_tables_of_the_wrong_size_or_without_pages_are_named(self):
        def forward(page_size, table):
            cfg = ulysses.DecodeConfig(num_heads_q=2, num_heads_kv=1, head_dim=4, cp=1,
                                       dtype="fp64", batch=2, cache_rows=8, page_size=page_size)

            def rank(r, comm):
                dec = ulysses.Decode(cfg, comm, ulysses.reference_kernel())
                q, o = np.zeros((2, 1, 2, 4)), np.zeros((2, 1, 2, 4))
                pool = np.zeros((4, page_size, 1, 4)) if page_size else np.zeros((2, 8, 1, 4))
                ws = np.empty(max(dec.workspace_bytes, 1), np.uint8)
                dec.forward(q, pool, pool, o, segments=[(0, 3, 0)], query_position=3,
                            workspace=ws, page_table=table)

            rank_threads.results_or_raise(ulysses.loopback_group(1), rank)

        # 2 sequences of 8 rows in 4-row pages: 4 entries; 3 are refused before the C call.
        forward(4, np.array([[0, 1], [2, 3]], np.int32))
        for short in (np.zeros(3, np.int32), [0, 1, 2]):
            with self.assertRaisesRegex(ulysses.UlyssesError, "page_table has 3 entries"):
                forward(4, short)
        with self.assertRaises(ulysses.UlyssesError) as e:
            forward(0, [0, 1])
        self.assertEqual(e.exception.code, "INVALID_ARGUMENT")
        self.assertIn("page_size is 0", str(e.exception))

    def test_bad_segments_are_named(self):
        cfg = ulysses.DecodeConfig(num_heads_q=2, num_heads_kv=1, head_dim=4, cp=1, dtype="fp64",
                                   cache_rows=8)

        def rank(r, comm):
            dec = ulysses.Decode(cfg, comm, ulysses.reference_kernel())
            q, o = np.zeros((1, 1, 2, 4)), np.zeros((1, 1, 2, 4))
            kc = np.zeros((1, 8, 1, 4))
            ws = np.empty(max(dec.workspace_bytes, 1), np.uint8)
            dec.forward(q, kc, kc, o, segments=[(6, 4, 0)], query_position=3, workspace=ws)

        with self.assertRaises(ulysses.UlyssesError) as e:
            rank_threads.results_or_raise(ulysses.loopback_group(1), rank)
        self.assertEqual(e.exception.code, "INVALID_ARGUMENT")
        self.assertIn("segments[0]", str(e.exception))

    def test_fractional_or_wrapping_rows_and_positions_are_refused(self):
        cfg = ulysses.DecodeConfig(num_heads_q=2, num_heads_kv=1, head_dim=4, cp=1, dtype="fp64",
                                   cache_rows=8)
        q, o = np.zeros((1, 1, 2, 4)), np.zeros((1, 1, 2, 4))
        kc = np.zeros((1, 8, 1, 4))
        for segments, position, what in (([(0, 4.5, 0)], 4, "segments holds 4.5"),
                                         ([(0, 4, 0)], 1 << 63, "query_position holds"),
                                         ([(0, 4, 0)], [3.5], "query_position holds 3.5")):
            def rank(r, comm):
                dec = ulysses.Decode(cfg, comm, ulysses.reference_kernel())
                ws = np.empty(max(dec.workspace_bytes, 1), np.uint8)
                segs = [segments] if isinstance(position, list) else segments
                dec.forward(q, kc, kc, o, segments=segs, query_position=position, workspace=ws)

            with self.subTest(what=what):
                with self.assertRaises(ulysses.UlyssesError) as e:
                    rank_threads.results_or_raise(ulysses.loopback_group(1), rank)
                self.assertEqual(e.exception.code, "INVALID_ARGUMENT")
                self.assertIn(what, str(e.exception))


if __name__ == "__main__":
    unittest.main()
