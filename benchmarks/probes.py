"""Benchmark: a batched sparse-probe sweep vs a loop of scikit-learn fits, in one run.

The sweep covers 6 hooks x 8 binary features x 8 values of k (384 probes) on synthetic
activations where each feature lives in a few planted neurons of some hooks. The baseline
fits scikit-learn's ``LogisticRegression`` (same C, ``class_weight="balanced"``) once per
probe, on exactly the neurons the sweep selected and the same standardised training rows,
and scores it on the same test rows. Both are timed ``--repeats`` times, interleaved.
Reported: the ratio of the median times (baseline loop / whole batched sweep, selection
included) and the largest |F1 difference| over all probes, both
against the timed baseline (scikit-learn's default tol=1e-4) and against untimed refits
solved to tol=1e-10 (which isolates the batched solver's own error).

    python benchmarks/probes.py            # full size
    python benchmarks/probes.py --quick    # tiny, seconds
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from threadpoolctl import threadpool_limits

from hierlens.probes import binary_problems, probe_sweep


def make_data(n: int, d: int, n_hooks: int, n_features: int, seed: int):
    """Activations ``{hook: (n, d)}`` and binary labels ``{feature: (n,)}``; feature ``f``
    is a noisy linear function of 1-4 planted neurons in every other hook."""
    rng = np.random.default_rng(seed)
    acts = {f"blocks.{h}.hook_resid_post": rng.normal(size=(n, d)) for h in range(n_hooks)}
    latent = rng.normal(size=(n, n_features))
    labels = {}
    for f in range(n_features):
        labels[f"feature_{f}"] = (latent[:, f] + 0.3 * rng.normal(size=n) > 0.5).astype(np.int64)
        for h, a in enumerate(acts.values()):
            if (h + f) % 2 == 0:
                neurons = rng.choice(d, size=1 + f % 4, replace=False)
                a[:, neurons] += latent[:, f : f + 1] * rng.uniform(0.5, 1.5, size=len(neurons))
    return {k: v.astype(np.float32) for k, v in acts.items()}, labels


def _timed_sweep(acts, labels, ks, args):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    records = probe_sweep(
        acts,
        labels,
        ks=ks,
        selection=args.selection,
        device=args.device,
        dtype=args.dtype,
        progress=False,
    )
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return records, time.perf_counter() - t0


def _sklearn_loop(records, problems, standardized, **options):
    """Fit and score one scikit-learn probe per record; (fit+predict seconds, F1 per record)."""
    elapsed, f1s = 0.0, []
    for r in records:
        prob = problems[r["feature"]]
        X = standardized[r["hook"]][:, r["selected"]]
        t1 = time.perf_counter()
        lr = LogisticRegression(C=1.0, class_weight="balanced", **{"max_iter": 1000, **options})
        lr.fit(X[prob.train], prob.y[prob.train])
        pred = lr.predict(X[prob.test])
        elapsed += time.perf_counter() - t1
        f1s.append(f1_score(prob.y[prob.test], pred, zero_division=0))
    return elapsed, f1s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    ap.add_argument("--n", type=int, default=4000, help="tokens")
    ap.add_argument("--d", type=int, default=128, help="neurons per hook")
    ap.add_argument("--ks", default="1,2,3,4,6,8,12,16")
    ap.add_argument("--selection", default="mean_diff")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch and for numpy's BLAS, both sides alike (0: leave as is); "
        "1 by default because on a shared machine more threads make timings erratic",
    )
    ap.add_argument(
        "--repeats", type=int, default=3, help="timed (sweep, loop) pairs; medians compared"
    )
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    n, d, n_hooks, n_features = (args.n, args.d, 6, 8)
    ks = [int(k) for k in args.ks.split(",")]
    if args.quick:
        n, d, ks = 600, 32, [1, 2, 4, 8]
    acts, labels = make_data(n, d, n_hooks, n_features, seed=0)

    # Warm-up (first-call overheads), then repeats of (batched sweep, scikit-learn loop),
    # interleaved so that both sides see the same machine load; medians are compared.
    probe_sweep(acts, labels, ks=ks[:1], device=args.device, dtype=args.dtype, progress=False)
    problems = {p.name: p for p in binary_problems(labels, test_size=0.2, seed=0)}
    standardized = {}
    for h, a in acts.items():
        a64 = a.astype(np.float64)
        standardized[h] = (a64 - a64.mean(0)) / np.maximum(a64.std(0), 1e-6)
    times_batched, times_sklearn = [], []
    for _ in range(args.repeats):
        records, t = _timed_sweep(acts, labels, ks, args)
        times_batched.append(t)
        # Baseline: one scikit-learn fit per probe on the same neurons, rows and
        # standardisation.
        t_sklearn, f1_sklearn = _sklearn_loop(records, problems, standardized)
        times_sklearn.append(t_sklearn)
    max_diff = max(abs(f - r["f1"]) for f, r in zip(f1_sklearn, records))
    # Untimed: the same fits solved to high precision, to separate the batched solver's
    # error from the baseline's own stopping tolerance (scikit-learn's default 1e-4).
    _, f1_tight = _sklearn_loop(records, problems, standardized, tol=1e-10, max_iter=10_000)
    max_diff_tight = max(abs(f - r["f1"]) for f, r in zip(f1_tight, records))
    t_batched = float(np.median(times_batched))
    t_sklearn = float(np.median(times_sklearn))

    result = {
        "device": str(args.device or ("cuda" if torch.cuda.is_available() else "cpu")),
        "dtype": args.dtype,
        "torch_threads": torch.get_num_threads(),
        "n_tokens": n,
        "d": d,
        "hooks": n_hooks,
        "features": n_features,
        "ks": ks,
        "probes": len(records),
        "selection": args.selection,
        "repeats": args.repeats,
        "batched_sweep_s": round(t_batched, 3),
        "sklearn_loop_s": round(t_sklearn, 3),
        "speedup": round(t_sklearn / t_batched, 2),
        "speedup_per_repeat": [round(b / a, 2) for a, b in zip(times_batched, times_sklearn)],
        "max_abs_f1_diff": max_diff,
        "max_abs_f1_diff_vs_tight_sklearn": max_diff_tight,
        "mean_f1": float(np.mean([r["f1"] for r in records])),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
