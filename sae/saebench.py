"""SAE evaluation results in SAEBench's result-file layout, so that they can be read beside
SAEBench output [Karvonen2025].

A SAEBench result is one JSON object per SAE and evaluation::

    {"eval_type_id": "core", "eval_config": {...}, "eval_id": "<uuid>",
     "datetime_epoch_millis": 1733..., "eval_result_metrics": {"<category>": {"<metric>": v}},
     "eval_result_details": [{...per latent...}], "sae_bench_commit_hash": "...",
     "sae_lens_id": "<sae id>", "sae_lens_release_id": "<release>",
     "sae_lens_version": null, "sae_cfg_dict": {...}, "eval_result_unstructured": {...}}

written to ``<out>/<eval_type_id>/<release>_<sae_id>_eval_results.json`` (``/`` replaced by
``_``). Categories hold flat metrics; SAEBench writes -1 where a value is NaN, and so do we
(also for a metric that needs a model when there is none). :func:`core_result` fills the
``core`` evaluation's categories and names; :func:`ground_truth_result` writes the scores
against known features (:func:`~hierlens.sae.ground_truth_recovery`) as an evaluation of
our own type, ``hierlens_ground_truth``, in the same layout. ``docs/sae-evaluation.md`` maps
every field to the hierlens computation behind it.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from hierlens.core.atomic_io import atomic_write_json

from .base import SAE
from .saelens_format import sae_cfg_dict

__all__ = [
    "CORE",
    "GROUND_TRUTH",
    "core_result",
    "ground_truth_result",
    "result_path",
    "write_results",
]

CORE = "core"
GROUND_TRUTH = "hierlens_ground_truth"
PRODUCER = "hierlens (not SAEBench): metrics computed by hierlens.sae, see docs/sae-evaluation.md"


def _clean(v: Any) -> Any:
    """SAEBench's convention: NaN (and a missing value) becomes -1."""
    if v is None:
        return -1
    if isinstance(v, float) and not math.isfinite(v):
        return -1
    return v


def _envelope(
    eval_type: str, sae: SAE, release: str, sae_id: str, config: dict[str, Any]
) -> dict[str, Any]:
    return {
        "eval_type_id": eval_type,
        "eval_config": dict(config),
        "eval_id": str(uuid.uuid4()),
        "datetime_epoch_millis": int(time.time() * 1000),
        "eval_result_metrics": {},
        "eval_result_details": [],
        "sae_bench_commit_hash": "none",
        "sae_lens_id": sae_id,
        "sae_lens_release_id": release,
        "sae_lens_version": None,
        "sae_cfg_dict": sae_cfg_dict(sae),
        "eval_result_unstructured": {"producer": PRODUCER},
    }


def _max_other_cosine(w: torch.Tensor) -> torch.Tensor:
    """Per row of ``w`` ``(n, d)``: the largest cosine with any other row."""
    u = F.normalize(w.double(), dim=1)
    sim = u @ u.T
    sim.fill_diagonal_(-math.inf)
    return sim.max(1).values if len(w) > 1 else torch.full((len(w),), float("nan"))


def _check_core_inputs(sae: SAE, activations: torch.Tensor) -> None:
    """Refuse what :func:`core_result` cannot evaluate: a non-SAE, or activations that are
    not ``(n >= 2, d_in)``."""
    if not isinstance(sae, SAE):
        raise TypeError(f"expected a hierlens SAE, got {type(sae).__name__}")
    if not isinstance(activations, torch.Tensor) or activations.dim() != 2:
        raise ValueError("activations must be a tensor of shape (n, d_in)")
    if activations.shape[1] != sae.d_in or activations.shape[0] < 2:
        raise ValueError(
            f"activations must have width d_in={sae.d_in} and at least 2 rows, got "
            f"{tuple(activations.shape)}"
        )


_SUMS = ("sse", "sst", "legacy", "cos", "n_in", "n_out", "ratio", "xhat2", "dot", "l0", "l1")


def _batch_sums(
    x: torch.Tensor, xh: torch.Tensor, codes: torch.Tensor, mean: torch.Tensor
) -> dict[str, float]:
    """One batch's contribution to every summed statistic of :func:`core_result`, from the
    float64 inputs ``x`` and reconstructions ``xh`` ``(b, d_in)``, the codes ``(b, d_sae)``
    and the mean input ``(d_in,)``: squared error and variance, per-row explained variance
    and cosine, norms in and out and their ratio, ``|xh|^2`` and ``x . xh``, L0 and L1."""
    rss = (x - xh).pow(2).sum(1)
    var = (x - mean).pow(2).sum(1)
    n_in, n_out = x.norm(dim=1), xh.norm(dim=1)
    return {
        "sse": float(rss.sum()),
        "sst": float(var.sum()),
        "legacy": float((1 - rss / var.clamp_min(1e-30)).sum()),
        "cos": float(F.cosine_similarity(x, xh, dim=1).sum()),
        "n_in": float(n_in.sum()),
        "n_out": float(n_out.sum()),
        "ratio": float((n_out / torch.where(n_in.abs() < 1e-4, 1.0, n_in)).sum()),
        "xhat2": float(n_out.pow(2).sum()),
        "dot": float((x * xh).sum()),
        "l0": float((codes != 0).sum()),
        "l1": float(codes.sum()),
    }


def _reconstruction_sums(
    sae: SAE, activations: torch.Tensor, batch_size: int
) -> tuple[dict[str, float], torch.Tensor]:
    """Encode and decode ``activations`` ``(n, d_in)`` batch by batch: the statistics of
    :func:`_batch_sums` summed over all rows, and how many rows each latent fires on
    ``(d_sae,)`` float64."""
    mean = activations.double().mean(0)
    sums = dict.fromkeys(_SUMS, 0.0)
    fires = torch.zeros(sae.d_sae, dtype=torch.float64)
    for start in range(0, activations.shape[0], batch_size):
        x = activations[start : start + batch_size].to(sae.device)
        codes = sae.encode(x).double().cpu()
        xh = sae.decode(codes.to(sae.device, sae.dtype)).double().cpu()
        for key, v in _batch_sums(x.double().cpu(), xh, codes, mean).items():
            sums[key] += v
        fires += (codes > 0).double().sum(0)
    return sums, fires


def _model_metrics(sp: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``model_behavior_preservation`` (KL) and ``model_performance_preservation`` (CE)
    categories from a :func:`~hierlens.sae.spliced_ce` result (empty: all missing)."""
    kl_score = None
    if sp and sp.get("kl_zero"):
        kl_score = (sp["kl_zero"] - sp["kl_spliced"]) / sp["kl_zero"]
    return {
        "model_behavior_preservation": {
            "kl_div_score": kl_score,
            "kl_div_with_ablation": sp.get("kl_zero"),
            "kl_div_with_sae": sp.get("kl_spliced"),
        },
        "model_performance_preservation": {
            "ce_loss_score": sp.get("ce_loss_recovered"),
            "ce_loss_with_ablation": sp.get("ce_zero"),
            "ce_loss_with_sae": sp.get("ce_spliced"),
            "ce_loss_without_sae": sp.get("ce_clean"),
        },
    }


def _reconstruction_metrics(sums: dict[str, float], n: int) -> dict[str, dict[str, Any]]:
    """The ``reconstruction_quality``, ``shrinkage`` and ``sparsity`` categories from the
    statistics of :func:`_reconstruction_sums` over ``n`` rows."""
    return {
        "reconstruction_quality": {
            "explained_variance": 1 - sums["sse"] / sums["sst"] if sums["sst"] > 0 else None,
            "explained_variance_legacy": sums["legacy"] / n,
            "mse": sums["sse"] / n,
            "cossim": sums["cos"] / n,
        },
        "shrinkage": {
            "l2_norm_in": sums["n_in"] / n,
            "l2_norm_out": sums["n_out"] / n,
            "l2_ratio": sums["ratio"] / n,
            "relative_reconstruction_bias": sums["xhat2"] / sums["dot"] if sums["dot"] else None,
        },
        "sparsity": {"l0": sums["l0"] / n, "l1": sums["l1"] / n},
    }


def _misc_metrics(
    density: torch.Tensor, max_enc: torch.Tensor, max_dec: torch.Tensor
) -> dict[str, float]:
    """The ``misc_metrics`` category: shares of latents (and of all firing) above 1% and 10%
    density, the mean largest cosine of an encoder/decoder row with another, and the share
    of latents that ever fire; ``density`` and the cosines are ``(d_sae,)``."""
    total = float(density.sum())
    return {
        "freq_over_1_percent": float((density > 0.01).double().mean()),
        "freq_over_10_percent": float((density > 0.1).double().mean()),
        "normalized_freq_over_1_percent": float(density[density > 0.01].sum()) / total
        if total
        else 0.0,
        "normalized_freq_over_10_percent": float(density[density > 0.1].sum()) / total
        if total
        else 0.0,
        "average_max_encoder_cosine_sim": float(max_enc.mean()),
        "average_max_decoder_cosine_sim": float(max_dec.mean()),
        "frac_alive": float((density > 0).double().mean()),
    }


def _latent_details(
    sae: SAE,
    density: torch.Tensor,
    w_enc: torch.Tensor,
    w_dec: torch.Tensor,
    max_enc: torch.Tensor,
    max_dec: torch.Tensor,
) -> list[dict[str, Any]]:
    """SAEBench's per-latent detail rows: density, encoder bias and norm, encoder-decoder
    cosine and the largest cosine with another latent (``w_enc``, ``w_dec``: ``(d_sae,
    d_in)`` float64)."""
    b_enc = sae.b_enc.detach().double().cpu()
    enc_dec = F.cosine_similarity(w_enc, w_dec, dim=1)
    return [
        {
            "index": i,
            "feature_density": float(density[i]),
            "consistent_activation_heuristic": -1,
            "encoder_bias": float(b_enc[i]),
            "encoder_norm": float(w_enc[i].norm()),
            "encoder_decoder_cosine_sim": float(enc_dec[i]),
            "max_decoder_cosine_sim": _clean(float(max_dec[i])),
            "max_encoder_cosine_sim": _clean(float(max_enc[i])),
        }
        for i in range(sae.d_sae)
    ]


@torch.no_grad()
def core_result(
    sae: SAE,
    activations: torch.Tensor,
    *,
    release: str,
    sae_id: str,
    spliced: dict[str, Any] | None = None,
    batch_size: int = 4096,
    eval_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """SAEBench's ``core`` evaluation of ``sae`` on ``activations`` ``(n, d_in)``.

    Reconstruction, shrinkage, sparsity and latent statistics are computed here from the
    activations; ``spliced`` (a :func:`~hierlens.sae.spliced_ce` result) fills the model
    behaviour (KL) and performance (CE) categories, which are -1 without it.
    """
    _check_core_inputs(sae, activations)
    n = activations.shape[0]
    sums, fires = _reconstruction_sums(sae, activations, batch_size)
    density = fires / n
    w_enc = sae.W_enc.detach().double().cpu().T  # (d_sae, d_in)
    w_dec = sae.W_dec.detach().double().cpu()
    max_enc, max_dec = _max_other_cosine(w_enc), _max_other_cosine(w_dec)
    sp = spliced or {}
    metrics = {
        **_model_metrics(sp),
        **_reconstruction_metrics(sums, n),
        "token_stats": {
            "total_tokens_eval_reconstruction": int(sp.get("n_positions", 0)),
            "total_tokens_eval_sparsity_variance": n,
        },
        "misc_metrics": _misc_metrics(density, max_enc, max_dec),
    }
    out = _envelope(CORE, sae, release, sae_id, {"n_rows": n, **(eval_config or {})})
    out["eval_result_metrics"] = {
        cat: {k: _clean(v) for k, v in vals.items()} for cat, vals in metrics.items()
    }
    out["eval_result_details"] = _latent_details(sae, density, w_enc, w_dec, max_enc, max_dec)
    return out


def ground_truth_result(
    sae: SAE,
    recovery: dict[str, Any],
    *,
    release: str,
    sae_id: str,
    eval_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A :func:`~hierlens.sae.ground_truth_recovery` result in SAEBench's layout
    (``eval_type_id`` ``"hierlens_ground_truth"``): categories ``matching`` (``mcc``,
    ``uniqueness``, ``n_split_features``, ``n_merged_latents``), ``detection``
    (``mean_f1``, ``mean_precision``, ``mean_recall``) and ``absorption``
    (``mean_absorption_rate`` and ``absorption_rate_level_<l>`` per tree level); one detail
    row per true feature; ``per_level`` and the split/merged lists go to
    ``eval_result_unstructured``."""
    required = ("mcc", "mean_f1", "features", "per_level", "absorption")
    missing = [k for k in required if k not in recovery]
    if missing:
        raise ValueError(f"recovery lacks {missing}: pass a ground_truth_recovery result")
    out = _envelope(GROUND_TRUTH, sae, release, sae_id, dict(eval_config or {}))
    absorption = {"mean_absorption_rate": recovery["absorption"]}
    for level, v in recovery["per_level"].items():
        absorption[f"absorption_rate_level_{level}"] = v["absorption"]
    metrics = {
        "matching": {
            k: recovery[k] for k in ("mcc", "uniqueness", "n_split_features", "n_merged_latents")
        },  # fmt: skip
        "detection": {k: recovery[k] for k in ("mean_f1", "mean_precision", "mean_recall")},
        "absorption": absorption,
    }
    out["eval_result_metrics"] = {
        cat: {k: _clean(v) for k, v in vals.items()} for cat, vals in metrics.items()
    }
    out["eval_result_details"] = [
        {k: _clean(v) for k, v in f.items()} for f in recovery["features"]
    ]
    out["eval_result_unstructured"].update(
        per_level={str(k): v for k, v in recovery["per_level"].items()},
        split_features=recovery.get("split_features", {}),
        merged_latents={str(k): v for k, v in recovery.get("merged_latents", {}).items()},
        absent_features=recovery.get("absent_features", []),
    )
    return out


def result_path(out_dir: str | os.PathLike, result: dict[str, Any]) -> Path:
    """``<out_dir>/<eval_type_id>/<release>_<sae_id>_eval_results.json`` (SAEBench's
    naming; ``/`` in the release or id becomes ``_``)."""
    name = f"{result['sae_lens_release_id']}_{result['sae_lens_id']}_eval_results.json"
    return Path(out_dir) / result["eval_type_id"] / name.replace("/", "_")


def write_results(out_dir: str | os.PathLike, results: Iterable[dict[str, Any]]) -> list[Path]:
    """Write each result to :func:`result_path` (atomically); returns the paths."""
    paths = []
    for res in results:
        path = result_path(out_dir, res)
        atomic_write_json(path, _json_safe(res))  # creates the folders, never through a link
        paths.append(path)
    return paths


def _json_safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return _clean(v) if isinstance(v, float) else v
