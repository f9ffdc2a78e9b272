"""Structural probes: [Hewitt2019].

A rank-``r`` linear map ``B`` (``(r, d)``) is fitted so that

- the **distance probe**'s squared distances ``||B (h_i - h_j)||^2`` match the gold tree
  distances between words (L1 loss, each sentence's sum divided by its length squared, then
  averaged over the batch's sentences);
- the **depth probe**'s squared norms ``||B h_i||^2`` match the words' depths in the tree
  (L1 loss divided by the sentence length, averaged over the batch).

:func:`fit_structural` trains one ``B`` per layer as one stacked program (``(S, r, d)``, a
stack of ``S`` probes, one per layer; sentences padded with masks), with Adam (the stacked
optimizer step of :class:`hierlens.core.optim.StackedAdamW`), the same initialisation and
minibatch order for every layer (both from ``seed``), and early stopping on a dev split per
layer: each layer keeps the ``B`` of its best dev loss and stops improving after
``patience`` epochs without one, so the stacked fit gives each layer exactly what fitting it
alone gives.
:class:`StructuralProbe` is the scikit-learn-style estimator for one layer and
:func:`structural_probe_sweep` runs every layer over treebank sentences and reports the
paper's metrics (:mod:`.structural_metrics`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hierlens.core.atomic_io import write_checked_jsonl
from hierlens.core.device import resolve_device
from hierlens.core.optim import StackedAdamW

from .structural_metrics import (
    distance_spearman,
    norm_spearman,
    root_accuracy,
    small_split_warnings,
    spearman_interval,
    uuas,
    uuas_interval,
)

__all__ = ["StructuralProbe", "fit_structural", "predict_structural", "structural_probe_sweep"]

KINDS = ("distance", "depth")


def _as_layers(H: Sequence[Sequence[Any]]) -> list[list[torch.Tensor]]:
    out = [[torch.as_tensor(np.asarray(h), dtype=torch.float32) for h in layer] for layer in H]
    for li, layer in enumerate(out):
        for k, h in enumerate(layer):
            if h.ndim != 2 or h.shape[0] == 0:
                raise ValueError(
                    f"layer {li} sentence {k}: need (n_words, d), got {tuple(h.shape)}"
                )
            if not torch.isfinite(h).all():
                raise ValueError(f"layer {li} sentence {k}: vectors hold NaN or inf")
    return out


def _check(kind: str, H: list[list[torch.Tensor]], targets: Sequence[Any]) -> list[torch.Tensor]:
    if kind not in KINDS:
        raise ValueError(f"kind must be 'distance' or 'depth', got {kind!r}")
    if not H or not H[0]:
        raise ValueError("no sentences to fit")
    n_sent, d = len(H[0]), H[0][0].shape[1]
    for li, layer in enumerate(H):
        if len(layer) != n_sent:
            raise ValueError(f"layer {li} has {len(layer)} sentences, layer 0 has {n_sent}")
        for k, h in enumerate(layer):
            if h.shape != (len(H[0][k]), d):
                raise ValueError(f"layer {li} sentence {k}: shape {tuple(h.shape)} differs")
    if len(targets) != n_sent:
        raise ValueError(f"{len(targets)} targets for {n_sent} sentences")
    out = []
    for k, t in enumerate(targets):
        t = torch.as_tensor(np.asarray(t), dtype=torch.float32)
        n = H[0][k].shape[0]
        want = (n, n) if kind == "distance" else (n,)
        if tuple(t.shape) != want:
            raise ValueError(f"sentence {k}: {kind} target has shape {tuple(t.shape)}, need {want}")
        if not torch.isfinite(t).all():
            raise ValueError(f"sentence {k}: target holds NaN or inf")
        out.append(t)
    return out


def _pad(H: list[list[torch.Tensor]], targets: list[torch.Tensor], kind: str):
    S, N, d = len(H), len(H[0]), H[0][0].shape[1]
    lengths = torch.tensor([h.shape[0] for h in H[0]])
    n = int(lengths.max())
    X = torch.zeros(S, N, n, d)
    for li, layer in enumerate(H):
        for k, h in enumerate(layer):
            X[li, k, : len(h)] = h
    Y = torch.zeros((N, n, n) if kind == "distance" else (N, n))
    for k, t in enumerate(targets):
        m = len(t)
        if kind == "distance":
            Y[k, :m, :m] = t
        else:
            Y[k, :m] = t
    mask = torch.arange(n)[None] < lengths[:, None]  # (N, n)
    return X, Y, mask, lengths


def _predict(B: torch.Tensor, X: torch.Tensor, kind: str) -> torch.Tensor:
    """``B`` (S, r, d), ``X`` (S, N, n, d) -> (S, N, n, n) squared distances or (S, N, n)
    squared norms."""
    t = torch.einsum("lrd,lbnd->lbnr", B, X)
    sq = (t * t).sum(-1)
    if kind == "depth":
        return sq
    gram = t @ t.transpose(-1, -2)
    return (sq[..., :, None] + sq[..., None, :] - 2 * gram).clamp_min(0)


def _losses(B, X, Y, mask, lengths, kind) -> torch.Tensor:
    """(S,) mean over sentences of the length-normalised L1 loss."""
    pred = _predict(B, X, kind)
    nf = lengths.to(pred.dtype)
    if kind == "distance":
        m = (mask[:, :, None] & mask[:, None, :]).to(pred.dtype)
        per = ((pred - Y).abs() * m).sum((-1, -2)) / nf**2
    else:
        per = ((pred - Y).abs() * mask.to(pred.dtype)).sum(-1) / nf
    return per.mean(-1)


def fit_structural(
    H_train: Sequence[Sequence[Any]],
    targets_train: Sequence[Any],
    H_dev: Sequence[Sequence[Any]],
    targets_dev: Sequence[Any],
    kind: str = "distance",
    rank: int = 64,
    lr: float = 1e-3,
    max_epochs: int = 40,
    patience: int = 5,
    batch_size: int = 20,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """Fit one structural probe per layer at once.

    Args:
        H_train: ``H_train[l][k]`` is the ``(n_k, d)`` word vectors of sentence ``k`` at
            layer ``l`` (``S`` layers).
        targets_train: per sentence, ``(n_k, n_k)`` gold tree distances (``kind="distance"``)
            or ``(n_k,)`` gold depths (``kind="depth"``).
        H_dev, targets_dev: the dev split, same layout, for early stopping.
        rank: rows of ``B``; lr, max_epochs, patience, batch_size: Adam and early stopping.
        seed: initialisation (uniform in +-0.05, the same for every layer) and batch order.

    Returns:
        ``B`` ``(S, rank, d)`` float32 on the CPU (each layer's best on dev) and the ``(S,)``
        best dev losses.
    """
    Htr, Hdv = _as_layers(H_train), _as_layers(H_dev)
    Ytr, Ydv = _check(kind, Htr, targets_train), _check(kind, Hdv, targets_dev)
    if len(Htr) != len(Hdv) or Htr[0][0].shape[1] != Hdv[0][0].shape[1]:
        raise ValueError("train and dev need the same layers and width")
    if rank <= 0 or batch_size <= 0 or max_epochs <= 0 or patience <= 0:
        raise ValueError("rank, batch_size, max_epochs and patience must be positive")
    dev = resolve_device(device)
    X, Y, mask, lengths = (t.to(dev) for t in _pad(Htr, Ytr, kind))
    Xd, Yd, maskd, lengthsd = (t.to(dev) for t in _pad(Hdv, Ydv, kind))
    S, N, _, d = X.shape
    g = torch.Generator().manual_seed(seed)
    B0 = torch.rand(rank, d, generator=g) * 0.1 - 0.05
    B = torch.nn.Parameter(B0[None].repeat(S, 1, 1).to(dev))
    opt = StackedAdamW({"B": B})  # Adam (no weight decay, no clipping), one member per layer
    best = B.detach().clone()
    best_loss = torch.full((S,), float("inf"), device=dev)
    stale = torch.zeros(S, dtype=torch.long, device=dev)
    done = torch.zeros(S, dtype=torch.bool, device=dev)
    for _ in range(max_epochs):
        order = torch.randperm(N, generator=g).to(dev)
        for start in range(0, N, batch_size):
            idx = order[start : start + batch_size]
            loss = _losses(B, X[:, idx], Y[idx], mask[idx], lengths[idx], kind)
            loss.sum().backward()  # layers are independent: each B only sees its own loss
            opt.step(lr)
            opt.zero_grad()
        with torch.no_grad():
            dl = _losses(B, Xd, Yd, maskd, lengthsd, kind)
            better = (dl < best_loss) & ~done
            best = torch.where(better[:, None, None], B.detach(), best)
            best_loss = torch.where(better, dl, best_loss)
            stale = torch.where(better, torch.zeros_like(stale), stale + 1)
            done |= stale >= patience
        if bool(done.all()):
            break
    return best.cpu(), best_loss.cpu().numpy()


def predict_structural(
    B: torch.Tensor, H: Sequence[Sequence[Any]], kind: str
) -> list[list[np.ndarray]]:
    """Predictions of stacked probes ``B`` (S, r, d) on ``H[l][k]`` (n_k, d): per layer and
    sentence, ``(n_k, n_k)`` squared distances or ``(n_k,)`` squared norms."""
    Hs = _as_layers(H)
    if B.ndim != 3 or len(Hs) != B.shape[0]:
        raise ValueError(f"B must be (S, r, d) with S = {len(Hs)} layers, got {tuple(B.shape)}")
    dummy = [np.zeros((len(h), len(h))) if kind == "distance" else np.zeros(len(h)) for h in Hs[0]]
    X, _, _, lengths = _pad(Hs, _check(kind, Hs, dummy), kind)
    with torch.no_grad():
        P = _predict(B.float(), X, kind).numpy()
    out = []
    for li in range(len(Hs)):
        out.append(
            [
                P[li, k, :n, :n] if kind == "distance" else P[li, k, :n]
                for k, n in enumerate(lengths.tolist())
            ]
        )
    return out


class StructuralProbe:
    """Structural probe on one layer (scikit-learn style): ``fit(H, targets)`` learns
    ``B_`` ``(rank, d)``; ``predict`` gives squared distances or norms; ``evaluate`` the
    paper's metrics; ``score`` UUAS (distance) or root accuracy (depth).

    ``fit`` takes a list of ``(n_k, d)`` word-vector arrays and their targets (``(n_k, n_k)``
    distances or ``(n_k,)`` depths) and holds out ``dev_fraction`` of the sentences (seeded)
    for early stopping unless ``dev=(H_dev, targets_dev)`` is given.
    """

    def __init__(
        self,
        kind: str = "distance",
        rank: int = 64,
        lr: float = 1e-3,
        max_epochs: int = 40,
        patience: int = 5,
        batch_size: int = 20,
        dev_fraction: float = 0.2,
        seed: int = 0,
        device: str | torch.device | None = None,
    ) -> None:
        self.kind, self.rank, self.lr, self.max_epochs = kind, rank, lr, max_epochs
        self.patience, self.batch_size, self.dev_fraction = patience, batch_size, dev_fraction
        self.seed, self.device = seed, device

    def fit(
        self, H: Sequence[Any], targets: Sequence[Any], dev: tuple[Sequence, Sequence] | None = None
    ) -> StructuralProbe:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be 'distance' or 'depth', got {self.kind!r}")
        if len(H) != len(targets):
            raise ValueError(f"{len(H)} sentences but {len(targets)} targets")
        if dev is None:
            if len(H) < 2:
                raise ValueError("need at least 2 sentences to hold out a dev split")
            perm = np.random.default_rng(self.seed).permutation(len(H))
            n_dev = min(max(1, round(self.dev_fraction * len(H))), len(H) - 1)
            dv, tr = perm[:n_dev], perm[n_dev:]
            dev = ([H[i] for i in dv], [targets[i] for i in dv])
            H, targets = [H[i] for i in tr], [targets[i] for i in tr]
        B, loss = fit_structural(
            [H], targets, [dev[0]], dev[1], self.kind, self.rank, self.lr, self.max_epochs,
            self.patience, self.batch_size, self.seed, self.device,
        )  # fmt: skip
        self.B_, self.dev_loss_ = B[0], float(loss[0])
        return self

    def predict(self, H: Sequence[Any]) -> list[np.ndarray]:
        if not hasattr(self, "B_"):
            raise RuntimeError("StructuralProbe is not fitted; call fit first")
        return predict_structural(self.B_[None], [H], self.kind)[0]

    def evaluate(
        self, H: Sequence[Any], targets: Sequence[Any], punct: Sequence | None = None
    ) -> dict[str, float]:
        """``{"uuas", "spearman"}`` (distance) or ``{"root_acc", "norm_spearman"}`` (depth)."""
        pred = self.predict(H)
        if self.kind == "distance":
            return {
                "uuas": uuas(pred, targets, punct),
                "spearman": distance_spearman(pred, targets),
            }
        return {
            "root_acc": root_accuracy(pred, targets, punct),
            "norm_spearman": norm_spearman(pred, targets),
        }

    def score(
        self, H: Sequence[Any], targets: Sequence[Any], punct: Sequence | None = None
    ) -> float:
        m = self.evaluate(H, targets, punct)
        return m["uuas"] if self.kind == "distance" else m["root_acc"]


def split_indices(
    n: int, fractions: Sequence[float] = (0.7, 0.15), seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The train, dev and test sentence indices :func:`structural_probe_sweep` uses for
    ``n`` sentences: a permutation drawn with ``seed``, cut at ``fractions`` (train, dev
    shares; the rest is test)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_tr, n_dv = int(fractions[0] * n), int(fractions[1] * n)
    return perm[:n_tr], perm[n_tr : n_tr + n_dv], perm[n_tr + n_dv :]


def structural_probe_sweep(
    vectors_by_layer: Mapping[Any, Sequence[Any]] | Sequence[Sequence[Any]],
    sentences: Sequence[Any],
    layers: Sequence[Any] | None = None,
    out_path: str | Path | None = None,
    rank: int = 64,
    fractions: tuple[float, float] = (0.7, 0.15),
    seed: int = 0,
    n_resamples: int = 1000,
    level: float = 0.95,
    **fit_kwargs: Any,
) -> list[dict[str, Any]]:
    """Distance and depth probes on every layer, with the paper's metrics on a test split.

    Args:
        vectors_by_layer: ``{layer: [(n_k, d) word vectors per sentence]}`` (or a list).
        sentences: the matching :class:`~hierlens.models.sentence.Sentence` s (their
            ``distances()``, ``depths()`` and ``punct`` are the gold targets and masks).
        layers: which layers (default all); out_path: write the records there as JSONL.
        fractions: train and dev shares of the sentences (seeded shuffle); the rest is test.
        fit_kwargs: passed to :func:`fit_structural` (lr, max_epochs, patience, ...).
        n_resamples, level: the bootstrap intervals of UUAS and Spearman (test sentences
            resampled with replacement, seeded by ``seed``).

    Returns:
        one record per layer: ``layer``, ``uuas``, ``spearman``, ``root_acc``,
        ``norm_spearman``, their intervals ``uuas_ci`` and ``spearman_ci`` (``[low, high]``
        at ``ci_level``), ``gold_tree`` (``"dependency"``), the dev losses, the split sizes
        and ``warnings`` (a test split of fewer than
        :data:`~hierlens.models.bootstrap.MIN_SENTENCES` sentences, no test sentence of a
        length Spearman scores).

    Raises:
        ValueError: a sentence without a dependency tree (UUAS over a spanning tree of
            constituency distances is another metric, full of ties broken by word order;
            PTB brackets read by :func:`~hierlens.models.read_ptb` get dependencies by head
            rules), before any fit.
    """
    by = (
        dict(vectors_by_layer)
        if isinstance(vectors_by_layer, Mapping)
        else dict(enumerate(vectors_by_layer))
    )
    layers = list(by) if layers is None else list(layers)
    missing = [x for x in layers if x not in by]
    if missing:
        raise ValueError(f"layers {missing} are not in vectors_by_layer (have {list(by)})")
    N = len(sentences)
    for x in layers:
        if len(by[x]) != N:
            raise ValueError(f"layer {x!r} has {len(by[x])} sentences, expected {N}")
    no_tree = [k for k, s in enumerate(sentences) if getattr(s, "heads", None) is None]
    if no_tree:
        raise ValueError(
            f"structural probes are scored against dependency trees, and sentence "
            f"{no_tree[0]} (of {len(no_tree)}) has none: read PTB brackets with read_ptb "
            "(dependencies by head rules) or give CoNLL-U"
        )
    splits = split_indices(N, fractions, seed)
    if min(len(s) for s in splits) == 0:
        raise ValueError(f"{N} sentences leave an empty train, dev or test split")
    notes = small_split_warnings(sentences, splits)
    H = [[by[x][i] for i in range(N)] for x in layers]
    gold = {
        "distance": [s.distances() for s in sentences],
        "depth": [s.depths() for s in sentences],
    }
    punct = [np.asarray(s.punct) for s in sentences]
    tr, dv, te = splits
    pick = lambda seq, ids: [seq[i] for i in ids]  # noqa: E731
    records = [
        {"layer": x, "n_train": len(tr), "n_dev": len(dv), "n_test": len(te)} for x in layers
    ]
    boot = {"n_resamples": n_resamples, "level": level, "seed": seed}
    for kind in KINDS:
        B, dev_loss = fit_structural(
            [pick(h, tr) for h in H], pick(gold[kind], tr), [pick(h, dv) for h in H],
            pick(gold[kind], dv), kind=kind, rank=rank, seed=seed, **fit_kwargs,
        )  # fmt: skip
        preds = predict_structural(B, [pick(h, te) for h in H], kind)
        for li, rec in enumerate(records):
            g, p = pick(gold[kind], te), preds[li]
            rec[f"{kind}_dev_loss"] = float(dev_loss[li])
            if kind == "distance":
                rec["uuas"] = uuas(p, g, pick(punct, te))
                rec["spearman"] = distance_spearman(p, g)
                rec["uuas_ci"] = list(uuas_interval(p, g, pick(punct, te), **boot))
                rec["spearman_ci"] = list(spearman_interval(p, g, **boot))
                rec.update(ci_level=level, gold_tree="dependency", warnings=notes)
            else:
                rec["root_acc"] = root_accuracy(p, g, pick(punct, te))
                rec["norm_spearman"] = norm_spearman(p, g)
    if out_path is not None:
        write_checked_jsonl(out_path, records)
    return records
