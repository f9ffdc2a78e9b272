"""Where does a model keep the stack? Train a Stack-RNN and a Transformer on stack
manipulation (Delétang et al., ICLR 2023), capture their hook points on inputs longer than
any seen in training, and fit k-sparse probes for the stack depth and the symbol on top of
the stack after each input action: once over all input tokens, and once per input position
``t`` (per bucket of ``--bucket`` positions).

    python examples/chomsky_stack_probe.py [--steps 600] [--out runs/chomsky_stack_probe]
        [--bucket 1] [--plot depth_vs_t.png]

Prints each model's OOD accuracy; per hook point, the probe F1 (macro over the one-vs-rest
problems of each label) at each k over all input tokens; and per hook point the F1 at the
largest k as a function of the input position. Pooled over positions, the depth is partly
given away by the position itself (the first symbols are the initial stack, so depth grows
with t there); a probe fitted at one position sees no such cue, and positions past the
training length (``t >= n_train``, marked ``|``) show whether a model keeps the stack where
it never saw one in training. The per-position baseline is ``hook_embed``: what the current
token alone says at that position (the top of the stack after a push, the depth while the
initial stack is being read). ``--plot`` draws the depth F1 against ``t``, one panel per
model. A position where a label takes one value (or its classes are too rare) prints ``-``.
"""

from __future__ import annotations

import argparse
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from hierlens.models import TrainConfig, get_task
from hierlens.models.architectures import ArchConfig, build_model
from hierlens.models.capture import capture
from hierlens.models.train import train
from hierlens.probes import probe_sweep

HOOKS = {
    "stack_rnn": ["hook_embed", "hook_hidden", "hook_read", "hook_stack"],
    "transformer": ["hook_embed", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"],
}
MIN_CLASS_COUNT = 4


def stack_labels(task, examples, length: int) -> dict[str, np.ndarray]:
    """Per token, ``(n, T)`` arrays: ``stack_depth`` (from the task) and ``stack_top`` (0, 1,
    or 2 for an empty stack) after each input symbol's action; -1 on the output (blank)
    positions."""
    depth, top = [], []
    for ex in examples:
        d = list(ex.token_labels["stack_depth"])
        stack: list[str] = []
        t = []
        for i, tok in enumerate(ex.tokens):
            sym = task.vocab[tok]
            if i < length:
                if sym == "POP":
                    if stack:
                        stack.pop()
                else:
                    stack.append(sym[-1])
                t.append(int(stack[-1]) if stack else 2)
            else:
                t.append(-1)
        depth.append(d)
        top.append(t)
    return {"stack_depth": np.array(depth), "stack_top": np.array(top)}


def probeable(labels: np.ndarray) -> bool:
    """Whether ``probe_sweep`` finds a binary problem in ``labels`` ``(n,)`` (-1 ignored):
    two classes or more, and a class to probe with at least ``MIN_CLASS_COUNT`` rows."""
    values, counts = np.unique(labels[labels != -1], return_counts=True)
    if len(values) < 2:
        return False
    positive = counts[1:] if len(values) == 2 else counts
    return bool((positive >= MIN_CLASS_COUNT).any())


def sweep(acts: dict[str, torch.Tensor], labels: dict, ks: list[int], **kw) -> list[dict]:
    """``probe_sweep`` over ``acts`` ``{hook: (n, d)}`` with each hook's ``k`` capped at its
    width ``d`` (a 4-wide stack read gets k <= 4): one sweep per group of hooks that share
    their admissible ``k`` s."""
    groups: dict[tuple[int, ...], dict[str, torch.Tensor]] = defaultdict(dict)
    for h, a in acts.items():
        groups[tuple(sorted({min(k, a.shape[-1]) for k in ks}))][h] = a
    rows: list[dict] = []
    for group_ks, group in groups.items():
        rows += probe_sweep(group, labels, ks=list(group_ks), device="cpu", progress=False, **kw)
    return rows


def macro_f1(rows: list[dict]) -> dict[tuple[str, str, int], float]:
    """``{(hook, label, k): mean F1 over the label's one-vs-rest problems}``."""
    f1 = defaultdict(list)
    for r in rows:
        f1[(r["hook"], r["label"], r["k"])].append(r["f1"])
    return {key: float(np.mean(v)) for key, v in f1.items()}


def per_position_f1(
    acts: dict[str, torch.Tensor], labels: dict[str, np.ndarray], k: int, bucket: int
) -> tuple[list[int], dict[tuple[str, str], list[float | None]]]:
    """Fit a k-sparse probe per bucket of ``bucket`` input positions.

    Args:
        acts: ``{hook: (n, T, d)}`` activations of ``n`` sequences of ``T`` tokens.
        labels: ``{label: (n, T)}`` integer labels, -1 where not applicable.

    Returns:
        the first position of each bucket, and ``{(hook, label): [F1 per bucket]}`` (macro
        over one-vs-rest problems at ``k``, or the hook's width if smaller; None where the
        label cannot be probed in that bucket).
    """
    n_input = int((next(iter(labels.values())) != -1).any(0).sum())
    starts = list(range(0, n_input, bucket))
    curves: dict[tuple[str, str], list[float | None]] = {
        (h, lab): [] for h in acts for lab in labels
    }
    for t0 in starts:
        t1 = min(t0 + bucket, n_input)
        lab_t = {lab: y[:, t0:t1].reshape(-1) for lab, y in labels.items()}
        lab_t = {lab: y for lab, y in lab_t.items() if probeable(y)}
        f1 = {}
        if lab_t:
            acts_t = {h: a[:, t0:t1].reshape(-1, a.shape[-1]) for h, a in acts.items()}
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*not probed")
                rows = sweep(acts_t, lab_t, [k], min_class_count=MIN_CLASS_COUNT)
            f1 = macro_f1(rows)
        for h, lab in curves:
            curves[(h, lab)].append(f1.get((h, lab, min(k, acts[h].shape[-1]))))
    return starts, curves


def train_model(arch: str, task, steps: int, out: Path) -> torch.nn.Module:
    """Train ``arch`` (d_model 32; 2 layers for the Transformer) on ``task`` into ``out/arch``."""
    cfg = ArchConfig.for_task(
        task, arch=arch, d_model=32, n_layers=2, n_heads=4, memory_size=24, memory_dim=4
    )
    config = TrainConfig(
        steps=steps,
        batch_size=32,
        lr=3e-3,
        schedule="constant",
        warmup_steps=10,
        eval_every=0,
        checkpoint_every=steps,
        train_pool=4000,
        eval_n=200,
        device="cpu",
    )
    model = build_model(cfg)
    train(model, task, config, out / arch, model_config=cfg, progress=False)
    return model


def print_pooled(f1: dict, hooks: list[str], labels: list[str], ks: list[int]) -> None:
    """One row per (hook, label): the pooled probe's F1 at each k."""
    print(f"  all input tokens: {'hook':26s} {'label':12s} " + " ".join(f"k={k:<4d}" for k in ks))
    for hook in hooks:
        for label in labels:
            cells = [f1.get((hook, label, k), float("nan")) for k in ks]  # nan: k > width
            print(f"  {'':16s}  {hook:26s} {label:12s} " + " ".join(f"{c:.3f} " for c in cells))


def print_per_position(
    starts: list[int], curves: dict, hooks: list[str], labels: list[str], k: int, n_train: int
) -> None:
    """One row per (hook, label): F1 per bucket start ``t``; ``|`` before the first ``t``
    at or past ``n_train`` (positions no training input reached)."""
    ood_from = next((i for i, t in enumerate(starts) if t >= n_train), None)

    def row(cells: list[str]) -> str:
        return "".join(("|" if i == ood_from else " ") + c for i, c in enumerate(cells))

    print(
        f"  per input position t, k={k} or the hook's width ('|': from t = n_train = {n_train} on):"
    )
    print(f"  {'hook':26s} {'label':12s} t:" + row([f"{t:<5d}" for t in starts]))
    for hook in hooks:
        for label in labels:
            cells = ["  -  " if v is None else f"{v:.2f} " for v in curves[(hook, label)]]
            print(f"  {hook:26s} {label:12s}   " + row(cells))


def plot_depth_vs_t(results: dict, n_train: int, bucket: int, path: str) -> None:
    """One panel per model: depth-probe F1 against the input position, one line per hook."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.4), squeeze=False)
    for ax, (arch, (starts, curves)) in zip(axes[0], results.items()):
        for hook in HOOKS[arch]:
            ys = [np.nan if v is None else v for v in curves[(hook, "stack_depth")]]
            ax.plot(starts, ys, marker="o", ms=3, label=hook)
        ax.axvline(n_train - 0.5, color="grey", ls=":", lw=1)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{arch}: stack-depth probe", fontsize=9)
        ax.set_xlabel("input position t" + (f" (buckets of {bucket})" if bucket > 1 else ""))
        ax.set_ylabel("F1 (macro, one-vs-rest)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"\nwrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--n-probe", type=int, default=200, help="OOD sequences probed")
    p.add_argument("--ks", default="1,2,4,8", help="k of the pooled probes (largest: per t)")
    p.add_argument("--bucket", type=int, default=1, help="input positions per per-t probe")
    p.add_argument("--plot", default=None, help="write the depth F1 vs t figure here (PNG)")
    p.add_argument("--out", default="runs/chomsky_stack_probe")
    args = p.parse_args()
    if args.bucket < 1:
        p.error("--bucket must be >= 1")
    task = get_task("stack_manipulation", n_train=8, n_test=16)
    length = task.n_test  # probe on the longest OOD inputs: one length, so no padding
    examples = task.sample_length(args.n_probe, length, "test_ood", seed=1)
    tokens = torch.tensor([list(ex.tokens) for ex in examples])
    labels = stack_labels(task, examples, length)
    flat = {lab: y.reshape(-1) for lab, y in labels.items()}
    ks = sorted(int(k) for k in args.ks.split(","))
    results = {}
    for arch in ("stack_rnn", "transformer"):
        model = train_model(arch, task, args.steps, Path(args.out))
        ood = task.evaluate(model, "test_ood", n=300, device="cpu")
        print(f"\n{arch}: test_ood accuracy {ood['accuracy']:.3f} (lengths 9..16)")
        store = capture(model, tokens, HOOKS[arch], batch_size=50, device="cpu", progress=False)
        acts = {h: store[h].float().reshape(*tokens.shape, -1) for h in HOOKS[arch]}
        pooled = {h: a.reshape(-1, a.shape[-1]) for h, a in acts.items()}
        f1 = macro_f1(sweep(pooled, flat, ks))
        print_pooled(f1, HOOKS[arch], list(labels), ks)
        starts, curves = per_position_f1(acts, labels, ks[-1], args.bucket)
        results[arch] = (starts, curves)
        print_per_position(starts, curves, HOOKS[arch], list(labels), ks[-1], task.n_train)
    if args.plot:
        plot_depth_vs_t(results, task.n_train, args.bucket, args.plot)


if __name__ == "__main__":
    main()
