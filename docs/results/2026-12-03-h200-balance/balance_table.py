"""Slowest rank's attention pairs over the mean, packed documents in zigzag chunks of the stream
(allgather's layout; ring and hybrid with packed_sharding="stream"), as generated and after
ulysses.balance_packed_sequences(). Lengths drawn like ulysses-bench --varlen (uniform weights,
multiples of 16 tokens), 20 numpy seeds per cell. Run after scripts/build.sh:
  PYTHONPATH=python ULYSSES_LIBRARY=build/libulysses_c.so python3 <this file>"""
import time

import numpy as np

import ulysses


def documents(n, tokens, unit, seed):
    w = np.random.default_rng(seed).random(n)
    units = tokens // unit
    extra = np.floor(w / w.sum() * (units - n)).astype(int)
    extra[-1] = units - n - extra[:-1].sum()
    return np.concatenate([[0], np.cumsum((1 + extra) * unit)]).tolist()


def ratio(pairs):
    return max(pairs) / (sum(pairs) / len(pairs))


print("tokens docs cp | given: median p90 max | balanced: median p90 max | search ms (max)")
for tokens in (32768, 131072):
    for n in (8, 64):
        for cp in (2, 4, 8):
            cfg = ulysses.PlanConfig(causal=True, strategy="allgather", cp=cp, layout="thd",
                                     seqlen=tokens)
            given, balanced, ms = [], [], []
            for seed in range(20):
                cu = documents(n, tokens, 16, seed)
                given.append(ratio(ulysses.attention_pairs_by_rank(cfg, cu)))
                t0 = time.perf_counter()
                _, cu2 = ulysses.balance_packed_sequences(cfg, cu)
                ms.append(1e3 * (time.perf_counter() - t0))
                balanced.append(ratio(ulysses.attention_pairs_by_rank(cfg, cu2)))
            q = lambda x: (np.median(x), np.percentile(x, 90), max(x))
            print("%6d %4d %2d | %.2f %.2f %.2f | %.2f %.2f %.2f | %.0f" %
                  (tokens, n, cp, *q(given), *q(balanced), max(ms)))
