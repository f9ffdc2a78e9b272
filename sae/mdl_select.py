"""Choosing among SAEs by description length under a distortion bound ([Ayonrinde2024], section
3: the MDL-SAE objective is the description length of the codes subject to the reconstruction
staying within a bound). Training a grid and choosing from it is :mod:`hierlens.sae.mdl_fit`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from .mdl import (
    DescriptionLength,
    _check_bin_width,
    _Encoded,
    _measure,
    _sae_dims,
    _search,
    check_activations,
)

__all__ = ["MDLSelection", "NoSAEMeetsBoundError", "mdl_select"]


class NoSAEMeetsBoundError(ValueError):
    """No candidate SAE meets the distortion bound; ``table`` holds every candidate's row."""

    def __init__(self, message: str, table: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.table = table


@dataclasses.dataclass
class MDLSelection:
    """Result of :func:`mdl_select`.

    Attributes:
        best: the selected SAE (shortest description among those meeting the bound).
        best_name: its name; best_index: its position in the input.
        best_length: its :class:`~hierlens.sae.mdl.DescriptionLength`.
        ranking: names of the eligible SAEs, shortest description first.
        table: one row per candidate, in input order: ``name``, ``index``, ``eligible``,
            ``rank`` (1-based among eligible, else None), ``reason`` (why it was excluded,
            else None), ``d_sae``, ``architecture``, ``k`` (when the SAE has one),
            ``fvu_unquantised``, ``ce_increase_unquantised`` (with a model), and, when its
            description length was computed, every field of ``DescriptionLength.to_dict()``.
        lengths: name -> DescriptionLength for every candidate that got one.
    """

    best: Any
    best_name: str
    best_index: int
    best_length: DescriptionLength
    ranking: list[str]
    table: list[dict[str, Any]]
    lengths: dict[str, DescriptionLength]


def _candidates(saes) -> list[tuple[str, Any]]:
    if isinstance(saes, Mapping):
        items = [(str(k), v) for k, v in saes.items()]
    elif isinstance(saes, Sequence) and not isinstance(saes, (str, bytes)):
        items = [(f"sae_{i}", s) for i, s in enumerate(saes)]
    else:
        raise TypeError(
            "saes must be a list of SAEs or a dict name -> SAE, got " + type(saes).__name__
        )
    if not items:
        raise ValueError("mdl_select needs at least one SAE")
    return items


def _bound(name: str, value: float | None) -> None:
    if value is not None and (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a finite number >= 0 or None, got {value!r}")


def _check_select_args(
    items: list[tuple[str, Any]],
    activations: torch.Tensor,
    max_fvu: float | None,
    max_ce_increase: float | None,
    max_fvu_increase: float | None,
    bin_width: float | None,
    use_ce: bool,
) -> None:
    """Refuse bad bounds, a CE bound without a model and tokens (``use_ce`` false), repeated
    names, an SAE whose ``d_in`` differs from the activations' width, and non-finite
    activations, before any SAE is measured."""
    _bound("max_fvu", max_fvu)
    _bound("max_ce_increase", max_ce_increase)
    _bound("max_fvu_increase", max_fvu_increase)
    if bin_width is not None:
        _check_bin_width(bin_width)
    if max_ce_increase is not None and not use_ce:
        raise ValueError("max_ce_increase needs model= and tokens= (and hook_name=)")
    names = [n for n, _ in items]
    if len(set(names)) != len(names):
        raise ValueError("SAE names must be distinct")
    for name, sae in items:
        d_in, _ = _sae_dims(sae)
        if not isinstance(activations, torch.Tensor) or activations.dim() != 2:
            break  # check_activations below reports it
        if activations.shape[1] != d_in:
            raise ValueError(
                f"SAE {name!r} expects d_in={d_in} but the activations have width "
                f"{activations.shape[1]}"
            )
    for _, sae in items:
        check_activations(sae, activations)


def _describe(index: int, name: str, sae: Any) -> dict[str, Any]:
    """The opening of a candidate's table row: name, position, architecture, width and
    ``k`` (when the SAE has one)."""
    cfg = sae.cfg
    row: dict[str, Any] = {
        "name": name,
        "index": index,
        "architecture": getattr(sae, "name", None) or type(sae).__name__,
        "d_sae": cfg.d_sae,
    }
    if getattr(cfg, "k", None) is not None:
        row["k"] = cfg.k
    return row


def _unquantised_reason(
    fvu0: float, ce0: float | None, max_fvu: float | None, max_ce_increase: float | None
) -> str | None:
    """Why a candidate is out before any quantisation (its exact FVU or CE increase already
    over the bound), or None."""
    if max_fvu is not None and fvu0 > max_fvu:
        return f"FVU {fvu0:.4g} without quantisation already exceeds max_fvu={max_fvu}"
    if max_ce_increase is not None and ce0 > max_ce_increase:
        return (
            f"CE increase {ce0:.4g} without quantisation already exceeds "
            f"max_ce_increase={max_ce_increase}"
        )
    return None


def _searched_width(
    enc: _Encoded,
    fvu0: float,
    ce0: float | None,
    max_fvu: float | None,
    max_ce_increase: float | None,
    max_fvu_increase: float | None,
    rtol: float,
) -> tuple[float | None, str | None]:
    """The coarsest bin width that keeps the candidate within its distortion budget (the
    slack up to the bounds, or the fixed ``max_fvu_increase``), or ``(None, reason)`` when
    the search fails."""
    fvu_budget = max_fvu_increase
    if fvu_budget is None:
        # the slack up to the bound, less a hair so float rounding cannot tip over it
        fvu_budget = 0.01 if max_fvu is None else max(0.0, (max_fvu - fvu0) - 1e-12)
    ce_budget = None if max_ce_increase is None else max_ce_increase - ce0
    try:
        return _search(enc, fvu_budget, ce_budget, rtol).bin_width, None
    except ValueError as exc:
        return None, f"precision search failed: {exc}"


def _quantised_reason(
    dl: DescriptionLength, max_fvu: float | None, max_ce_increase: float | None
) -> str | None:
    """Why a candidate is out after quantisation (the quantised reconstruction over the
    bound), or None."""
    if max_fvu is not None and dl.fvu > max_fvu:
        return f"FVU {dl.fvu:.4g} of the quantised reconstruction exceeds max_fvu={max_fvu}"
    if max_ce_increase is not None and dl.ce_increase > max_ce_increase:
        return (
            f"CE increase {dl.ce_increase:.4g} of the quantised reconstruction "
            f"exceeds max_ce_increase={max_ce_increase}"
        )
    return None


def _no_sae_error(
    table: list[dict[str, Any]],
    max_fvu: float | None,
    max_ce_increase: float | None,
    use_ce: bool,
) -> NoSAEMeetsBoundError:
    """The error for a table with no eligible candidate: the best distortion reached and
    every exclusion reason."""
    best_fvu = min(r.get("fvu", r["fvu_unquantised"]) for r in table)
    msg = f"no SAE meets the distortion bound (max_fvu={max_fvu}"
    msg += f", max_ce_increase={max_ce_increase}): best FVU reached {best_fvu:.4g}"
    if use_ce:
        best_ce = min(
            r.get("ce_increase")
            if r.get("ce_increase") is not None
            else r["ce_increase_unquantised"]
            for r in table
        )
        msg += f", best CE increase reached {best_ce:.4g}"
    msg += "; " + "; ".join(f"{r['name']}: {r['reason']}" for r in table)
    return NoSAEMeetsBoundError(msg, table)


def _ranked(
    items: list[tuple[str, Any]],
    table: list[dict[str, Any]],
    lengths: dict[str, DescriptionLength],
    eligible: list[dict[str, Any]],
) -> MDLSelection:
    """Rank the eligible rows by bits (ties by input order), write each row's ``rank`` and
    select the first."""
    eligible.sort(key=lambda r: (r["bits"], r["index"]))
    for rank, r in enumerate(eligible, start=1):
        r["rank"] = rank
    top = eligible[0]
    return MDLSelection(
        best=items[top["index"]][1],
        best_name=top["name"],
        best_index=top["index"],
        best_length=lengths[top["name"]],
        ranking=[r["name"] for r in eligible],
        table=table,
        lengths=lengths,
    )


@torch.no_grad()
def mdl_select(
    saes: Sequence[Any] | Mapping[str, Any],
    activations: torch.Tensor,
    *,
    max_fvu: float | None = None,
    max_ce_increase: float | None = None,
    model: torch.nn.Module | None = None,
    tokens: torch.Tensor | None = None,
    hook_name: str | None = None,
    bin_width: float | None = None,
    max_fvu_increase: float | None = None,
    rtol: float = 1e-3,
    batch_size: int = 4096,
    progress: bool = False,
) -> MDLSelection:
    """Rank SAEs by description length among those whose quantised reconstruction meets the
    distortion bound, and say why the others were excluded [Ayonrinde2024].

    Every SAE is compared at the precision the bound allows it: unless ``bin_width`` or
    ``max_fvu_increase`` is given, its codes are quantised as coarsely as keeps
    ``FVU <= max_fvu`` (the slack between its exact FVU and the bound) and, with a model,
    ``CE increase <= max_ce_increase``; so every candidate is measured at (about) the same
    distortion, and the one that sends it in the fewest bits wins.

    Args:
        saes: a list of SAEs (named ``sae_0``, ``sae_1``, ...) or a dict name -> SAE; each
            with ``encode``/``decode`` and ``cfg.d_in``/``cfg.d_sae``.
        activations: ``(n, d_in)`` activations (finite).
        max_fvu: bound on the FVU of the quantised reconstruction.
        max_ce_increase: bound on the spliced cross-entropy of the quantised reconstruction
            minus the clean cross-entropy (nats per scored position); needs ``model``,
            ``tokens`` ``(N, T)`` and ``hook_name`` (see :func:`hierlens.sae.spliced_ce`).
        bin_width: one fixed quantisation width for every SAE (no precision search).
        max_fvu_increase: a fixed FVU-increase budget for every SAE's precision search
            instead of the slack up to ``max_fvu`` (default 0.01 when there is no ``max_fvu``).
        rtol: relative precision of the bin-width search. batch_size: rows per encode/decode.
        progress: tqdm bar over the SAEs.

    Returns:
        An :class:`MDLSelection`.

    Raises:
        ValueError: NaN/inf activations or an SAE whose ``d_in`` differs from the
            activations' width (before any SAE is measured), bad bounds, or
            :class:`NoSAEMeetsBoundError` (a ValueError) when no SAE meets the bound: the
            message gives the best distortion reached and every exclusion reason.
    """
    items = _candidates(saes)
    use_ce = model is not None and tokens is not None
    _check_select_args(
        items, activations, max_fvu, max_ce_increase, max_fvu_increase, bin_width, use_ce
    )

    table: list[dict[str, Any]] = []
    lengths: dict[str, DescriptionLength] = {}
    for index, (name, sae) in enumerate(tqdm(items, disable=not progress, desc="mdl_select")):
        row = _describe(index, name, sae)
        enc = _Encoded(sae, activations, batch_size, model if use_ce else None, tokens, hook_name)
        row["fvu_unquantised"] = fvu0 = enc.fvu(None)
        ce0 = None
        if use_ce:
            res = enc.spliced(None)
            row["ce_increase_unquantised"] = ce0 = res["ce_spliced"] - res["ce_clean"]
        reason = _unquantised_reason(fvu0, ce0, max_fvu, max_ce_increase)
        width = bin_width
        if reason is None and width is None:
            width, reason = _searched_width(
                enc, fvu0, ce0, max_fvu, max_ce_increase, max_fvu_increase, rtol
            )
        if width is not None and reason is None:
            dl = _measure(enc, width)
            lengths[name] = dl
            row.update(dl.to_dict())
            reason = _quantised_reason(dl, max_fvu, max_ce_increase)
        row.update(eligible=reason is None, reason=reason, rank=None)
        table.append(row)

    eligible = [r for r in table if r["eligible"]]
    if not eligible:
        raise _no_sae_error(table, max_fvu, max_ce_increase, use_ce)
    return _ranked(items, table, lengths, eligible)
