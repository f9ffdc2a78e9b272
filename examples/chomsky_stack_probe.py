"""Where does a model keep the stack? Train a Stack-RNN and a Transformer on stack
manipulation (Delétang et al., ICLR 2023), capture their hook points on inputs longer than
any seen in training, and fit k-sparse probes for the stack depth and the symbol on top of
the stack after each input action.

    python examples/chomsky_stack_probe.py [--steps 600] [--out runs/chomsky_stack_probe]

Prints each model's OOD accuracy and, per hook point, the probe F1 (macro over the one-vs-rest
problems of each label) at each k, so one can read off whether the structure is linearly
decodable from a few units of the controller's hidden state, from the differentiable stack
itself, or from the transformer's residual stream.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from hierlens.models.architectures import ArchConfig, build_model
from hierlens.models.capture import capture
from hierlens.models.tasks import get_task
from hierlens.models.train import TrainConfig, train
from hierlens.probes import probe_sweep

HOOKS = {
    "stack_rnn": ["hook_embed", "hook_hidden", "hook_read", "hook_stack"],
    "transformer": ["hook_embed", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"],
}


def stack_labels(task, examples, length: int) -> dict[str, np.ndarray]:
    """Per token: ``stack_depth`` (from the task) and ``stack_top`` (0, 1, or 2 for an empty
    stack) after each input symbol's action; -1 on the output (blank) positions."""
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
    return {"stack_depth": np.array(depth).ravel(), "stack_top": np.array(top).ravel()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--n-probe", type=int, default=200, help="OOD sequences probed")
    p.add_argument("--ks", default="1,2,4,8")
    p.add_argument("--out", default="runs/chomsky_stack_probe")
    args = p.parse_args()
    task = get_task("stack_manipulation", n_train=8, n_test=16)
    config = TrainConfig(
        steps=args.steps,
        batch_size=32,
        lr=3e-3,
        schedule="constant",
        warmup_steps=10,
        eval_every=0,
        checkpoint_every=args.steps,
        train_pool=4000,
        eval_n=200,
        device="cpu",
    )
    length = task.n_test  # probe on the longest OOD inputs: one length, so no padding
    examples = task.sample_length(args.n_probe, length, "test_ood", seed=1)
    import torch

    tokens = torch.tensor([list(ex.tokens) for ex in examples])
    labels = stack_labels(task, examples, length)
    ks = [int(k) for k in args.ks.split(",")]
    for arch in ("stack_rnn", "transformer"):
        cfg = ArchConfig.for_task(
            task, arch=arch, d_model=32, n_layers=2, n_heads=4, memory_size=24, memory_dim=4
        )
        model = build_model(cfg)
        train(model, task, config, Path(args.out) / arch, model_config=cfg, progress=False)
        ood = task.evaluate(model, "test_ood", n=300, device="cpu")
        print(f"\n{arch}: test_ood accuracy {ood['accuracy']:.3f} (lengths 9..16)")
        store = capture(model, tokens, HOOKS[arch], batch_size=50, device="cpu", progress=False)
        acts = {h: store[h].float().reshape(len(labels["stack_depth"]), -1) for h in HOOKS[arch]}
        rows = probe_sweep(acts, labels, ks=[k for k in ks], device="cpu", progress=False)
        f1 = defaultdict(list)
        for r in rows:
            f1[(r["hook"], r["label"], r["k"])].append(r["f1"])
        print(f"  {'hook':28s} {'label':12s} " + " ".join(f"k={k:<4d}" for k in ks))
        for hook in HOOKS[arch]:
            for label in labels:
                cells = [
                    np.mean(f1[(hook, label, k)]) if f1[(hook, label, k)] else float("nan")
                    for k in ks
                ]
                print(f"  {hook:28s} {label:12s} " + " ".join(f"{c:.3f} " for c in cells))


if __name__ == "__main__":
    main()
