"""SAEs judged against the features they should find (ground-truth recovery).

Two views of one question, "did the dictionary find the true features?":

- **Directions** (:func:`feature_recovery`): best-match and Hungarian-matched cosine between
  known feature directions and the decoder rows, per tree level.
- **Activations** (:func:`ground_truth_recovery`, :func:`evaluate_ground_truth`): the
  latents' codes against the true feature activations of a
  :class:`~hierlens.models.tasks.ground_truth.GroundTruth`, row by row (tokens of a model's
  activations aligned per token, or directly observed synthetic vectors):

  - **MCC** (mean correlation coefficient, as SAELens' synthetic benchmark scores
    dictionaries): the Pearson correlation of every latent's codes with every feature's
    activations, a one-to-one matching of latents to features maximising the total
    correlation (Hungarian algorithm, [Kuhn1955], through
    ``scipy.optimize.linear_sum_assignment``), and the mean matched correlation over the
    features (a feature left without a latent counts 0).
  - **precision, recall, F1** of each matched latent as a detector of its feature: the
    latent "fires" where its code exceeds a threshold chosen on a dev split to maximise F1.
  - **uniqueness**: each latent *claims* the feature it correlates with most when that
    correlation is at least ``min_correlation``; uniqueness is the share of features claimed
    by exactly one latent. **Split** features are claimed by two or more latents;
    **merged** latents correlate at least ``min_correlation`` with two or more features
    neither of which is an ancestor of the other.
  - **absorption** ([Chanin2024], "A is for Absorption", conditioned on the known
    hierarchy): for each parent feature, over the rows where the parent is true and the
    matched latent of one of its children fires, the share where the parent's own latent
    does not fire; pooled per tree level of the parent.

Features that are constant on the evaluation rows (never or always true) cannot be
correlated with anything; they are listed as ``absent_features`` and left out of every mean.
Everything but the thresholds is measured on the evaluation split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hierlens.models.tasks.ground_truth import FeatureGraph, GroundTruth

from .base import SAE
from .latent_hierarchy import absorption_by_parent, latent_claims, pooled_absorption

__all__ = [
    "best_f1_threshold",
    "correlation_matrix",
    "cosine_matrix",
    "evaluate_ground_truth",
    "feature_recovery",
    "ground_truth_recovery",
]


# ----- directions ---------------------------------------------------------------------------------
def cosine_matrix(true_features: torch.Tensor, dictionary: torch.Tensor) -> torch.Tensor:
    """Cosine similarities ``(n_true, d_sae)`` between true feature directions ``(n_true, d)``
    and dictionary rows ``(d_sae, d)`` (e.g. ``W_dec``)."""
    a = F.normalize(true_features.double(), dim=-1)
    b = F.normalize(dictionary.double(), dim=-1)
    return a @ b.T


def feature_recovery(
    true_features: torch.Tensor,
    dictionary: torch.Tensor | SAE,
    levels: Sequence[int] | torch.Tensor | None = None,
) -> dict[str, Any]:
    """How well a dictionary recovers known feature directions.

    Args:
        true_features: ``(n_true, d)`` ground-truth directions.
        dictionary: ``(d_sae, d)`` rows (or an SAE: its ``W_dec``).
        levels: optional tree level of each true feature (``n_true`` ints).

    Returns:
        ``best_cosine`` (list, per true feature: max cosine over latents),
        ``mean_best_cosine``, ``hungarian_cosine`` (mean cosine of a one-to-one matching of
        true features to latents maximising the total cosine, [Kuhn1955]), ``assignment``
        (latent matched to each true feature, -1 when there are fewer latents), and with
        ``levels`` a ``per_level`` dict level -> ``{"n", "mean_best_cosine",
        "hungarian_cosine"}`` (Hungarian values from the global matching).
    """
    from scipy.optimize import linear_sum_assignment

    if isinstance(dictionary, SAE):
        dictionary = dictionary.W_dec.detach()
    if true_features.dim() != 2 or dictionary.dim() != 2:
        raise ValueError("true_features and dictionary must be 2-D (n, d)")
    if true_features.shape[1] != dictionary.shape[1]:
        raise ValueError(
            f"feature width {true_features.shape[1]} != dictionary width {dictionary.shape[1]}"
        )
    cos = cosine_matrix(true_features.cpu(), dictionary.cpu()).numpy()
    best = cos.max(axis=1)
    rows, cols = linear_sum_assignment(-cos)
    assignment = np.full(cos.shape[0], -1, dtype=np.int64)
    assignment[rows] = cols
    matched = np.zeros(cos.shape[0])
    matched[rows] = cos[rows, cols]
    out: dict[str, Any] = {
        "best_cosine": best.tolist(),
        "mean_best_cosine": float(best.mean()),
        "hungarian_cosine": float(matched.mean()),
        "assignment": assignment.tolist(),
    }
    if levels is not None:
        lv = np.asarray(levels.tolist() if isinstance(levels, torch.Tensor) else levels)
        if lv.shape != (cos.shape[0],):
            raise ValueError(f"levels must have one entry per true feature ({cos.shape[0]})")
        out["per_level"] = {
            int(level): {
                "n": int((lv == level).sum()),
                "mean_best_cosine": float(best[lv == level].mean()),
                "hungarian_cosine": float(matched[lv == level].mean()),
            }
            for level in np.unique(lv)
        }
    return out


# ----- activations --------------------------------------------------------------------------------
def correlation_matrix(codes: torch.Tensor, truth: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Pearson correlations ``(d_sae, n_features)`` (float64) between the columns of
    ``codes`` ``(n, d_sae)`` and of ``truth`` ``(n, n_features)``; a constant column
    correlates 0 with everything. Latents are standardised ``chunk`` columns at a time, so
    memory stays at ``n * chunk`` doubles beside the inputs."""

    def standardise(x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        x = x - x.mean(0)
        norm = x.norm(dim=0)
        return torch.where(norm > 0, x / norm.clamp_min(1e-300), torch.zeros_like(x))

    t = standardise(truth)
    return torch.cat(
        [standardise(codes[:, i : i + chunk]).T @ t for i in range(0, codes.shape[1], chunk)]
    )


def best_f1_threshold(code: torch.Tensor, truth: torch.Tensor, n_candidates: int = 64) -> float:
    """The threshold ``t`` maximising the F1 of ``code > t`` as a detector of ``truth``
    (both ``(n,)``; ``truth`` bool): candidates are 0 and up to ``n_candidates`` quantiles
    of the positive codes; ties go to the smallest."""
    code = code.double()
    pos = code[code > 0]
    cands = torch.zeros(1, dtype=torch.float64)
    if len(pos):
        qs = torch.linspace(0, 1, n_candidates + 1, dtype=torch.float64)[:-1]
        cands = torch.cat([cands, torch.quantile(pos, qs)]).unique()
    fire = code[None, :] > cands[:, None]  # (n_cand, n)
    tp = (fire & truth[None, :]).sum(1)
    fp = (fire & ~truth[None, :]).sum(1)
    fn = (~fire & truth[None, :]).sum(1)
    f1 = _f1(tp, fp, fn)
    return float(cands[int(torch.argmax(f1))])  # argmax returns the first (smallest) maximum


def _f1(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    den = (2 * tp + fp + fn).double()
    return torch.where(den > 0, 2 * tp.double() / den.clamp_min(1), torch.zeros_like(den))


def _split_rows(
    n: int, dev_fraction: float, dev_rows: torch.Tensor | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if dev_rows is not None:
        mask = torch.as_tensor(dev_rows)
        if mask.dtype != torch.bool or mask.shape != (n,):
            raise ValueError(f"dev_rows must be a bool mask of shape ({n},)")
    else:
        if not 0.0 < float(dev_fraction) < 1.0:
            raise ValueError(f"dev_fraction must be in (0, 1), got {dev_fraction!r}")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
        mask = torch.zeros(n, dtype=torch.bool)
        mask[perm[: int(n * dev_fraction)]] = True
    if int(mask.sum()) < 2 or int((~mask).sum()) < 2:
        raise ValueError("the dev and evaluation splits each need at least 2 rows")
    return mask.nonzero().squeeze(1), (~mask).nonzero().squeeze(1)


def _check_codes(codes: torch.Tensor, truth: GroundTruth) -> torch.Tensor:
    if not isinstance(truth, GroundTruth):
        raise TypeError(f"truth must be a GroundTruth, got {type(truth).__name__}")
    if not isinstance(codes, torch.Tensor) or codes.dim() != 2:
        raise ValueError("codes must be a tensor of shape (n_rows, d_sae)")
    if codes.shape[0] != truth.n_rows:
        raise ValueError(
            f"codes have {codes.shape[0]} rows but the ground truth has {truth.n_rows}: "
            "they are not aligned row by row (capture every position of the same examples, "
            "or select the ground-truth rows with store_rows)"
        )
    if not bool(torch.isfinite(codes).all()):
        raise ValueError("codes contain NaN or inf values")
    return codes.detach().cpu()


def _varying_features(on_ev: torch.Tensor) -> list[int]:
    """Indices of the features that vary on the evaluation rows ``on_ev`` ``(n_eval,
    n_features)`` (neither never nor always true): the only ones a correlation can score."""
    counts = on_ev.sum(0)
    present = ((counts > 0) & (counts < on_ev.shape[0])).nonzero().squeeze(1).tolist()
    if not present:
        raise ValueError("no feature varies on the evaluation rows: nothing to recover")
    return present


def _match_latents(corr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of latents to features maximising the total correlation
    ([Kuhn1955]) on ``corr`` ``(d_sae, m)``: the latent matched to each feature (-1 when
    unmatched) and its correlation (0 when unmatched), both ``(m,)``."""
    from scipy.optimize import linear_sum_assignment

    lat, feat = linear_sum_assignment(corr, maximize=True)
    latent_of = np.full(corr.shape[1], -1, dtype=np.int64)
    latent_of[feat] = lat
    matched = np.zeros(corr.shape[1])
    matched[feat] = corr[lat, feat]
    return latent_of, matched


def _detection(
    code_dev: torch.Tensor, truth_dev: torch.Tensor, code_ev: torch.Tensor, truth_ev: torch.Tensor
) -> tuple[dict[str, float], torch.Tensor]:
    """One matched latent as a detector of its feature: the firing threshold chosen on the
    dev rows, then ``threshold``/``precision``/``recall``/``f1`` on the evaluation rows, and
    the latent's bool firing pattern on those rows."""
    t = best_f1_threshold(code_dev, truth_dev)
    fire = code_ev.double() > t
    tp = int((fire & truth_ev).sum())
    fp = int((fire & ~truth_ev).sum())
    fn = int((~fire & truth_ev).sum())
    scores = {
        "threshold": t,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
    }
    return scores, fire


def _feature_rows(
    codes: torch.Tensor,
    on: torch.Tensor,
    graph: FeatureGraph,
    dev: torch.Tensor,
    ev: torch.Tensor,
    present: list[int],
    latent_of: np.ndarray,
    matched: np.ndarray,
) -> tuple[list[dict[str, Any]], dict[int, torch.Tensor]]:
    """The per-feature rows of :func:`ground_truth_recovery` (name, level, matched latent,
    correlation and detection scores, in ``present`` order) and, for each matched feature,
    the firing pattern of its latent on the evaluation rows (``on`` ``(n_rows, n_features)``
    is where each feature is true)."""
    rows: list[dict[str, Any]] = []
    fires: dict[int, torch.Tensor] = {}
    for j, f in enumerate(present):
        row: dict[str, Any] = {
            "name": graph.names[f],
            "level": graph.level[f],
            "latent": int(latent_of[j]),
            "correlation": float(matched[j]),
            "threshold": None,
            "precision": 0.0,
            "recall": 0.0,
            "f1": 0.0,
        }
        ell = int(latent_of[j])
        if ell >= 0:
            scores, fires[f] = _detection(codes[dev, ell], on[dev, f], codes[ev, ell], on[ev, f])
            row.update(scores)
        rows.append(row)
    return rows, fires


def _mean_of(by_feature: dict[int, dict[str, Any]], key: str, feats: list[int]) -> float:
    """Mean of one per-feature value over ``feats`` (NaN when there are none)."""
    return float(np.mean([by_feature[f][key] for f in feats])) if feats else float("nan")


def _per_level(
    truth: GroundTruth,
    present: list[int],
    by_feature: dict[int, dict[str, Any]],
    by_level: dict[int, list[int]],
) -> dict[int, dict[str, Any]]:
    """Level -> ``n_features``, ``mcc``, ``mean_f1`` of that level's evaluated features and
    ``absorption``/``n_parents`` of its parents."""
    level = truth.features.level
    out = {}
    for v in sorted({level[f] for f in present}):
        feats = [f for f in present if level[f] == v]
        out[v] = {
            "n_features": len(feats),
            "mcc": _mean_of(by_feature, "correlation", feats),
            "mean_f1": _mean_of(by_feature, "f1", feats),
            "absorption": pooled_absorption(by_level, [v]) if v in by_level else float("nan"),
            "n_parents": by_level.get(v, [0, 0, 0])[2],
        }
    return out


def ground_truth_recovery(
    codes: torch.Tensor,
    truth: GroundTruth,
    *,
    dev_fraction: float = 0.5,
    dev_rows: torch.Tensor | None = None,
    min_correlation: float = 0.5,
    seed: int = 0,
) -> dict[str, Any]:
    """Score latent codes against true feature activations (see the module docstring).

    Args:
        codes: ``(n_rows, d_sae)`` latent codes, row ``i`` aligned with ``truth``'s row ``i``.
        truth: the :class:`~hierlens.models.tasks.ground_truth.GroundTruth` of those rows.
        dev_fraction: share of rows (drawn with ``seed``) on which each matched latent's
            firing threshold is chosen; the rest are the evaluation rows.
        dev_rows: a bool mask ``(n_rows,)`` of dev rows instead.
        min_correlation: correlation at which a latent claims a feature (uniqueness, split
            and merged features).

    Returns:
        ``mcc``, ``mean_f1``/``mean_precision``/``mean_recall`` (over the evaluated features;
        unmatched ones count 0), ``uniqueness``, ``n_split_features``, ``n_merged_latents``,
        ``absorption`` (pooled over parents), ``per_level`` (level -> ``n_features``,
        ``mcc``, ``mean_f1``, ``absorption`` of that level's parents, ``n_parents``),
        ``features`` (per evaluated feature: ``name``, ``level``, ``latent`` (-1 when
        unmatched), ``correlation``, ``threshold``, ``precision``, ``recall``, ``f1`` and for
        parents ``absorption`` and ``absorption_rows``), ``split_features`` (name -> claiming
        latents), ``merged_latents`` (latent -> feature names), ``absent_features``,
        ``n_features``, ``n_latents``, ``n_dev_rows``, ``n_eval_rows``.
    """
    codes = _check_codes(codes, truth)
    graph = truth.features
    dev, ev = _split_rows(truth.n_rows, dev_fraction, dev_rows, seed)
    on = truth.active
    on_ev = on[ev]
    present = _varying_features(on_ev)
    corr = correlation_matrix(codes[ev], truth.activations.double()[ev][:, present]).numpy()
    latent_of, matched = _match_latents(corr)  # corr: (d_sae, len(present))
    per_feature, fires = _feature_rows(codes, on, graph, dev, ev, present, latent_of, matched)
    by_feature = {f: per_feature[j] for j, f in enumerate(present)}

    per_parent, by_level = absorption_by_parent(truth, present, fires, on_ev)
    for p, (rate, n_rows) in per_parent.items():
        by_feature[p]["absorption"] = rate
        by_feature[p]["absorption_rows"] = n_rows

    claims, merged = latent_claims(corr, truth, present, min_correlation)
    split = {graph.names[f]: lats for f, lats in claims.items() if len(lats) > 1}
    unique = sum(1 for lats in claims.values() if len(lats) == 1)
    return {
        "mcc": _mean_of(by_feature, "correlation", present),
        "mean_f1": _mean_of(by_feature, "f1", present),
        "mean_precision": _mean_of(by_feature, "precision", present),
        "mean_recall": _mean_of(by_feature, "recall", present),
        "uniqueness": unique / len(present),
        "n_split_features": len(split),
        "n_merged_latents": len(merged),
        "absorption": pooled_absorption(by_level, list(by_level)),
        "per_level": _per_level(truth, present, by_feature, by_level),
        "features": per_feature,
        "split_features": split,
        "merged_latents": merged,
        "absent_features": [graph.names[f] for f in range(graph.n_features) if f not in present],
        "n_features": len(present),
        "n_latents": int(codes.shape[1]),
        "n_dev_rows": len(dev),
        "n_eval_rows": len(ev),
    }


@torch.no_grad()
def evaluate_ground_truth(
    sae: SAE,
    activations: torch.Tensor,
    truth: GroundTruth,
    *,
    batch_size: int = 4096,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`ground_truth_recovery` of ``sae``'s inference codes on ``activations``
    ``(n_rows, d_in)`` (row ``i`` aligned with ``truth``'s row ``i``); ``kwargs`` go to
    :func:`ground_truth_recovery`. The alignment is checked before anything is encoded."""
    if not isinstance(sae, SAE):
        raise TypeError(f"expected a hierlens SAE, got {type(sae).__name__}")
    if not isinstance(activations, torch.Tensor) or activations.dim() != 2:
        raise ValueError("activations must be a tensor of shape (n_rows, d_in)")
    if not isinstance(truth, GroundTruth):
        raise TypeError(f"truth must be a GroundTruth, got {type(truth).__name__}")
    if activations.shape[0] != truth.n_rows:
        raise ValueError(
            f"activations have {activations.shape[0]} rows but the ground truth has "
            f"{truth.n_rows}: they are not aligned row by row"
        )
    codes = torch.cat(
        [
            sae.encode(activations[i : i + batch_size].to(sae.device)).float().cpu()
            for i in range(0, activations.shape[0], batch_size)
        ]
    )
    return ground_truth_recovery(codes, truth, **kwargs)
