"""Train a sweep of SAEs on a transformer's residual stream in one fused run.

Steps: build a small transformer for the Dyck task, capture ``blocks.0.hook_resid_post``
into an in-memory activation store, train TopK, BatchTopK, ReLU, JumpReLU and MP-SAE
dictionaries together on the store's batches (each batch is read once; same-shaped SAEs are
stacked), report reconstruction, sparsity and spliced cross-entropy, and save/load one SAE
in SAELens' layout.

Usage: ``python examples/sae_quickstart.py [--quick] [--out runs/sae_quickstart]``.
The model is untrained here (the point is the pipeline); point it at a trained checkpoint
for meaningful features.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hierlens.models import get_task
from hierlens.models.capture import capture
from hierlens.models.tasks import pad_examples
from hierlens.models.transformer import ModelConfig, build_transformer
from hierlens.sae import (
    BatchTopKSAE,
    JumpReLUSAE,
    MatchingPursuitSAE,
    ReluSAE,
    TopKSAE,
    evaluate_sae,
    load_sae,
    spliced_ce,
    train_saes,
)

HOOK = "blocks.0.hook_resid_post"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="runs/sae_quickstart")
    args = ap.parse_args()
    n_seq, steps = (64, 60) if args.quick else (1024, 2000)

    task = get_task("dyck")
    model = build_transformer(
        ModelConfig.for_task(task, d_model=32, n_layers=2, n_heads=2), device="cpu"
    )
    store = capture(model, (task, "train", n_seq, 0), HOOK, batch_size=32, progress=False)
    acts = store[HOOK]
    d, d_sae = acts.shape[1], 8 * acts.shape[1]
    print(f"captured {acts.shape[0]} tokens of width {d} at {HOOK}")

    common = dict(hook_name=HOOK, device="cpu")
    saes = [
        *(TopKSAE(d, d_sae, k=k, **common) for k in (4, 8)),
        BatchTopKSAE(d, d_sae, k=4, **common),
        *(ReluSAE(d, d_sae, l1_coefficient=c, **common) for c in (1e-3, 1e-2)),
        JumpReLUSAE(d, d_sae, l0_coefficient=1e-2, bandwidth=0.05, **common),
        MatchingPursuitSAE(d, d_sae, k=4, **common),
    ]
    # the store's iterator factory plugs straight in (re-called for every pass over the data)
    source = lambda: store.batches(HOOK, batch_size=256, seed=0)  # noqa: E731
    train_saes(
        saes, source, steps=steps, batch_size=256, lr=1e-3, warmup_steps=10, progress=not args.quick
    )

    held_out = pad_examples(task.sample(32, "test_id", seed=1), task.pad_id)
    for sae in saes:
        ev = evaluate_sae(sae, acts)
        ce = spliced_ce(model, sae, held_out.tokens, attention_mask=held_out.attention_mask)
        print(
            f"{type(sae).__name__:20s} L0={ev['l0']:6.2f} FVU={ev['fvu']:.3f} "
            f"dead={ev['dead_fraction']:.2f} CE recovered={ce['ce_loss_recovered']:.3f}"
        )

    out = Path(args.out) / "mp_sae"
    saes[-1].save(out)
    again = load_sae(out, device="cpu")
    assert torch.equal(again.W_dec, saes[-1].W_dec)
    print(f"saved and reloaded {out}")


if __name__ == "__main__":
    main()
