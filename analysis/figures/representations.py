"""Data of the representation figures: CKA across seeds and checkpoints, rank collapse with
depth, and the eigenvalue spectrum of SAE decoders per layer.

- :func:`cka_across_seeds`: two runs of one task differing only in their seeds; layer x layer
  linear CKA [Kornblith2019] between their final checkpoints, and between run A's
  first and final checkpoints, on the same sentences (:func:`compare_runs`).
- :func:`rank_collapse_depth`: randomly initialised deep transformers; relative residual from
  token-uniform rank 1 after every block along the paper's paths, pure attention, attention
  with skips, attention with MLPs, and the full model [Dong2021].
- :func:`sae_geometry_spectrum`: a small transformer trained on a task, one TopK SAE trained
  on each layer's residual stream; eigenvalue spectrum of each decoder's point cloud and its
  fitted power-law slope [Li2024].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hierlens.models import ModelConfig, TrainConfig, build_transformer, train
from hierlens.models.run import Run
from hierlens.models.tasks.registry import get_task

from ..compare.geometry import eigen_spectrum, power_law_slope
from ..compare.rank_collapse import rank_collapse
from ..compare.runs import compare_runs, layer_activations, layer_hooks, layer_label


def _train_run(path: Path, setting: dict[str, Any], seed: int, device, progress: bool) -> Run:
    """Train (or resume) a run of ``setting`` (task, model, train) with model and data seed
    ``seed``."""
    task = get_task(setting["task"]["name"], **setting["task"].get("params", {}))
    model_cfg = ModelConfig.for_task(task, **{**setting["model"], "seed": seed})
    cfg = TrainConfig(**{**setting["train"], "seed": seed, "device": device})
    run = Run(path)
    if not run.steps or run.steps[-1] < cfg.steps:
        model = build_transformer(model_cfg, device=device)
        train(model, task, cfg, path, model_config=model_cfg, progress=progress)
    return run


def cka_across_seeds(
    *,
    setting: dict[str, Any],
    seeds: tuple[int, int] = (0, 1),
    n: int = 200,
    out_dir: str | Path,
    device: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Layer x layer linear CKA between two seeds' final checkpoints and between the first
    and final checkpoints of the first seed, on ``n`` ``test_id`` sentences of the task.

    Runs are written to ``out_dir/cka_seed_<s>`` (resumed when there). Returns ``labels``
    (layers), ``seeds``, ``early_step``, ``final_step``, ``across_seeds`` and
    ``early_vs_final`` (matrices, rows the first seed's final / early layers), and the final
    in-domain accuracy of each run (``accuracy``, the task's main metric)."""
    if len(seeds) != 2 or seeds[0] == seeds[1]:
        raise ValueError(f"seeds must be two different seeds, got {seeds}")
    runs = [
        _train_run(Path(out_dir) / f"cka_seed_{s}", setting, s, device, progress) for s in seeds
    ]
    a, b = runs
    across = compare_runs(a, b, n=n, matching=False, device=device)
    early, final = a.steps[0], a.steps[-1]
    over_time = compare_runs(a, a, step_a=early, step_b=final, n=n, matching=False, device=device)
    task = a.task
    metric = getattr(task, "main_metric", "") or "accuracy"
    accuracy = {}
    for s, run in zip(seeds, runs, strict=True):
        model = run.load_model(device=device)
        res = task.evaluate(model, "test_id", examples=task.sample(n, "test_id", 7), device=device)
        accuracy[str(s)] = res.get(metric)
    return {
        "task": task.name,
        "metric": metric,
        "labels": [layer_label(h) for h in across["hooks_a"]],
        "seeds": list(seeds),
        "early_step": early,
        "final_step": final,
        "n_tokens": across["n_tokens"],
        "across_seeds": across["similarity"]["linear_cka"],
        "early_vs_final": over_time["similarity"]["linear_cka"],
        "accuracy": accuracy,
    }


PATH_LABELS = {
    "attention": "pure attention",
    "attention+skip": "attention + skip",
    "attention+mlp": "attention + MLP",
    "full": "full (skip + MLP)",
}


def rank_collapse_depth(
    *,
    depth: int,
    d_model: int,
    n_heads: int,
    n_tokens: int,
    batch: int,
    seeds: list[int],
    d_vocab: int = 64,
    device: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Mean relative rank-collapse residual (Frobenius) after every block of randomly
    initialised ``depth``-block transformers (LayerNorm, causal attention, one per seed),
    on ``batch`` random token sequences of length ``n_tokens``, for every path of
    :data:`PATH_LABELS`. Returns ``layers`` (0 = embedding) and ``paths``
    (``{path: [mean residual per layer]}``, mean over seeds and sequences)."""
    from hierlens.core.device import resolve_device

    dev = resolve_device(device)
    sums = {p: torch.zeros(depth + 1, dtype=torch.float64) for p in PATH_LABELS}
    for seed in seeds:
        cfg = ModelConfig(
            d_vocab=d_vocab,
            n_ctx=n_tokens,
            d_model=d_model,
            n_layers=depth,
            n_heads=n_heads,
            seed=seed,
        )
        model = build_transformer(cfg, device=dev)
        gen = torch.Generator().manual_seed(seed)
        x = torch.randint(0, d_vocab, (batch, n_tokens), generator=gen).to(dev)
        for p in PATH_LABELS:
            sums[p] += rank_collapse(model, x, path=p).double().mean(0)
    return {
        "depth": depth,
        "layers": list(range(depth + 1)),
        "paths": {p: (s / len(seeds)).tolist() for p, s in sums.items()},
        "labels": PATH_LABELS,
        "seeds": list(seeds),
    }


def sae_geometry_spectrum(
    *,
    setting: dict[str, Any],
    n_sentences: int,
    expansion: int,
    k: int,
    sae_steps: int,
    out_dir: str | Path,
    device: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Eigenvalue spectra of TopK SAEs (width ``expansion · d_model``, ``k`` active) trained
    on each layer's residual stream (embedding and every block output) of a model trained
    with ``setting`` (run in ``out_dir/sae_geometry_run``), over every token of
    ``n_sentences`` training sentences. Returns ``labels``, ``spectra`` (eigenvalues per
    layer, descending) and ``slopes`` (fitted power-law slope per layer)."""
    from hierlens import sae as S

    run = _train_run(Path(out_dir) / "sae_geometry_run", setting, 0, device, progress)
    model = run.load_model(device=device)
    hooks = layer_hooks(model)
    examples = run.task.sample(n_sentences, "train", 11)
    store = layer_activations(model, examples, hooks, device=device)
    spectra, slopes, fvu = [], [], []
    for i, h in enumerate(hooks):
        acts = store[h].float()
        d = acts.shape[1]
        sae = S.TopKSAE(d, expansion * d, k=k, hook_name=h, seed=i)
        S.train_saes([sae], acts, steps=sae_steps, batch_size=256, device=device, progress=False)
        fvu.append(float(S.evaluate_sae(sae, acts)["fvu"]))
        lam = eigen_spectrum(sae)
        spectra.append(lam.tolist())
        slopes.append(power_law_slope(lam))
    return {
        "task": run.task.name,
        "labels": [layer_label(h) for h in hooks],
        "d_sae": expansion * int(store[hooks[0]].shape[1]),
        "k": k,
        "n_tokens": store.n_tokens,
        "spectra": spectra,
        "slopes": slopes,
        "fvu": fvu,
    }
