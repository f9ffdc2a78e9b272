"""Benchmark of :meth:`hierlens.models.Sentence.distances` (ratios measured in one run).

Baseline: the pairwise loop it replaced (for every pair of words, walk the ancestor lists to
the lowest common ancestor: ``O(n^2)`` Python steps), written out below. Measured: the
range-minimum version (:func:`hierlens.models.tree_distances.tree_distance_matrix`), on
random dependency trees and on a chain (the deepest tree) of ``n`` words; both results are
checked equal before timing.

Usage: ``python benchmarks/sentence_distances.py [--quick]``.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

from hierlens.models.sentence import Sentence, dependency_spans


def pairwise_baseline(heads: list[int]) -> np.ndarray:
    """Distances by the pairwise lowest-common-ancestor loop (the replaced algorithm)."""
    n = len(heads)
    ancestors = []
    depth = []
    for i in range(n):
        chain = [i]
        while heads[chain[-1]] != -1:
            chain.append(heads[chain[-1]])
        ancestors.append(chain)
        depth.append(len(chain) - 1)
    out = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        for j in range(i + 1, n):
            others = set(ancestors[j])
            lca = next(a for a in ancestors[i] if a in others)
            out[i, j] = out[j, i] = depth[i] + depth[j] - 2 * depth[lca]
    return out


def _heads(n: int, kind: str, rng: random.Random) -> list[int]:
    if kind == "chain":
        return [-1] + list(range(n - 1))
    order = list(range(n))
    rng.shuffle(order)
    heads = [-1] * n
    for k in range(1, n):
        heads[order[k]] = order[rng.randrange(k)]
    return heads


def _best(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sentences")
    args = parser.parse_args()
    sizes = (200, 500) if args.quick else (500, 1000, 2000)
    rng = random.Random(0)
    print("kind     n     baseline_s  distances_s  speedup")
    for kind in ("random", "chain"):
        for n in sizes:
            heads = _heads(n, kind, rng)
            spans = dependency_spans(heads)
            s = Sentence(
                words=("w",) * n, pos=("X",) * n, spans=spans, span_labels=("S",) * len(spans),
                constituent=("X",) * n, punct=(False,) * n, heads=tuple(heads),
                deprels=("dep",) * n,
            )  # fmt: skip
            assert np.array_equal(s.distances(), pairwise_baseline(heads))
            base = _best(lambda h=heads: pairwise_baseline(h), 1)
            new = _best(s.distances, 3)
            print(f"{kind:<8} {n:<5} {base:<11.3f} {new:<12.4f} {base / new:.0f}x")


if __name__ == "__main__":
    main()
