"""Tiny configurations that tests in several folders share: the depth sweep's training and
options, and the analysis sections of a pipeline configuration."""

from __future__ import annotations

from typing import Any

# the sweep tests' models (width 8, two heads) and tracking (8 inputs, 3 trees)
SWEEP_OPTIONS: dict[str, Any] = {
    "model": {"d_model": 8, "n_heads": 2},
    "track_options": {"n": 8, "n_trees": 3},
}


def sweep_train_config(steps: int = 6, checkpoint_every: int = 3):
    """The sweep tests' TrainConfig: batches of 4 from a pool of 40, no evaluation."""
    from hierlens.models import TrainConfig

    return TrainConfig(
        steps=steps,
        batch_size=4,
        warmup_steps=1,
        eval_every=0,
        checkpoint_every=checkpoint_every,
        train_pool=40,
        device="cpu",
    )


def analysis_sections(sae_hook: str, architectures: list[str]) -> dict[str, Any]:
    """The ``sae``, ``probes``, ``tree`` and ``report`` sections of a tiny pipeline
    configuration (fresh dicts each call): SAEs of widths 8 and 16 with k=2 for 5 steps on
    ``sae_hook``, probes of ``is_close`` with k of 1 and 2, 8 inputs and 3 trees, no report."""
    return {
        "sae": {
            "hook": sae_hook,
            "architectures": list(architectures),
            "widths": [8, 16],
            "ks": [2],
            "steps": 5,
            "batch_size": 32,
        },
        "probes": {"labels": ["is_close"], "ks": [1, 2]},
        "tree": {"n": 8, "n_trees": 3},
        "report": False,
    }
