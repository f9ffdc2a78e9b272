"""Batched binary classification metrics (F1, MCC, accuracy) for many probes at once."""

from __future__ import annotations

import torch

__all__ = ["binary_metrics"]


def binary_metrics(
    pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """F1 (of the positive class), Matthews correlation and accuracy of ``P`` probes.

    Args:
        pred: ``(P, n)`` predicted labels (bool or 0/1).
        y: ``(P, n)`` true labels (bool or 0/1).
        mask: ``(P, n)`` bool, the rows each probe is evaluated on (all rows if ``None``).

    Returns:
        ``{"f1", "mcc", "accuracy"}`` -> ``(P,)`` float64 tensors. As in scikit-learn, F1 is 0
        when there is no positive prediction and no positive label, and MCC is 0 when any
        margin of the confusion matrix is empty.
    """
    if pred.shape != y.shape or pred.ndim != 2:
        raise ValueError(
            f"pred and y must be (P, n) of the same shape, got {tuple(pred.shape)} and {tuple(y.shape)}"
        )
    pred = pred.bool()
    y = y.bool()
    m = torch.ones_like(y) if mask is None else mask.bool()
    if m.shape != y.shape:
        raise ValueError(f"mask must be {tuple(y.shape)}, got {tuple(m.shape)}")
    f64 = torch.float64
    # Two passes over the rows: true positives and predicted positives; the rest of the
    # confusion matrix follows from the masked label counts.
    tp = (pred & y & m).sum(-1).to(f64)
    predicted = (pred & m).sum(-1).to(f64)
    positives = (y & m).sum(-1).to(f64)
    total_rows = m.sum(-1).to(f64)
    fp = predicted - tp
    fn = positives - tp
    tn = total_rows - tp - fp - fn
    total = tp + fp + fn + tn
    f1_den = 2 * tp + fp + fn
    f1 = torch.where(f1_den > 0, 2 * tp / f1_den.clamp_min(1), torch.zeros_like(tp))
    mcc_den = ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)).sqrt()
    mcc = torch.where(
        mcc_den > 0, (tp * tn - fp * fn) / mcc_den.clamp_min(1e-300), torch.zeros_like(tp)
    )
    acc = torch.where(total > 0, (tp + tn) / total.clamp_min(1), torch.full_like(tp, float("nan")))
    return {"f1": f1, "mcc": mcc, "accuracy": acc}
