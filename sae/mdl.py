"""Description length of SAE codes and the precision search [Ayonrinde2024].

An SAE is read as a lossy compressor: to send an activation ``x`` one sends its code ``f(x)``
at a finite precision, and the receiver decodes it. The description length is the number of
bits per token that this message costs; the distortion is how far the decoded message is
from ``x``.

Quantisation (exactly what :func:`description_length` counts):

- One bin width ``delta`` for every latent. A code value ``c`` becomes the integer
  ``q = round(c / delta)`` (nearest integer, ties to even, as ``torch.round``) and is decoded
  as ``q * delta``. Bins are centred on the multiples of ``delta``, so zero stays zero.
- The message is the integer code ``q``. A latent is *active* on a row when its ``q != 0``;
  a non-zero code smaller than ``delta / 2`` rounds to zero and is not sent (its decoded
  contribution is zero, so there is nothing to send).
- The distortion is the FVU of ``decode(q * delta)`` against ``x``.

Bits per token (all logarithms base 2; ``N`` rows; ``p_i`` the fraction of rows on which
latent ``i`` is active):

- ``which_bits = sum_i h(p_i)`` with ``h`` the binary entropy: which latents are active,
  each latent's on/off sequence entropy-coded with its own firing probability;
- ``value_bits = sum_i p_i H_i`` with ``H_i`` the entropy of the empirical distribution of
  latent ``i``'s non-zero integer values ``q``;
- ``bits = which_bits + value_bits`` (the entropy-coded cost);
- ``bits_per_value = log2(q_max - q_min + 1)``: a fixed-length code for one active value
  over the range of all active integer values (of every latent);
- ``naive_bits = L0 * (log2 d_sae + bits_per_value)`` with ``L0 = sum_i p_i``: each active
  latent sent as an index and a fixed-length value (the paper's naive bound);
- ``raw_bits = d_in * raw_bits_per_value``, ``raw_bits_per_value = log2(r_max - r_min + 1)``
  over the integers ``r = round(x / delta)`` of the raw activations: sending ``x`` itself at
  the same precision.

``naive_bits >= bits`` whenever ``L0 >= e``: ``H_i <= bits_per_value`` (a distribution on at
most ``2**bits_per_value`` values) and ``h(p) <= p log2(e / p)``, so by concavity
``sum_i h(p_i) <= L0 log2(e d_sae / L0) <= L0 log2 d_sae`` once ``L0 >= e``. For very sparse
codes (``L0 < e``) the independent per-latent on/off code can cost more than sending indices.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch

from hierlens.core.validate import check_int

__all__ = [
    "DescriptionLength",
    "PrecisionSearch",
    "check_activations",
    "description_length",
    "quantise",
    "search_bin_width",
]


def quantise(codes: torch.Tensor, bin_width: float) -> torch.Tensor:
    """Integer bins ``round(codes / bin_width)`` (int64, ties to even) of a code tensor."""
    _check_bin_width(bin_width)
    return torch.round(codes.double() / bin_width).to(torch.int64)


def _check_bin_width(bin_width: float) -> None:
    if (
        isinstance(bin_width, bool)
        or not isinstance(bin_width, (int, float))
        or not math.isfinite(bin_width)
        or bin_width <= 0
    ):
        raise ValueError(f"bin_width must be a finite number > 0, got {bin_width!r}")


def _sae_dims(sae: Any) -> tuple[int, int]:
    cfg = getattr(sae, "cfg", None)
    d_in, d_sae = getattr(cfg, "d_in", None), getattr(cfg, "d_sae", None)
    if not isinstance(d_in, int) or not isinstance(d_sae, int):
        raise TypeError(
            "expected an SAE with cfg.d_in and cfg.d_sae and encode/decode methods, "
            f"got {type(sae).__name__}"
        )
    if not callable(getattr(sae, "encode", None)) or not callable(getattr(sae, "decode", None)):
        raise TypeError(f"{type(sae).__name__} has no encode/decode methods")
    return d_in, d_sae


def _sae_device(sae: Any) -> torch.device:
    dev = getattr(sae, "device", None)
    if isinstance(dev, torch.device):
        return dev
    if isinstance(sae, torch.nn.Module):
        for p in sae.parameters():
            return p.device
    return torch.device("cpu")


def check_activations(sae: Any, activations: torch.Tensor) -> torch.Tensor:
    """Validate ``activations`` ``(n, d_in)`` for ``sae``; returns them as a 2-D tensor.

    ``TypeError`` for a non-tensor or integer tensor; ``ValueError`` for the wrong shape, a
    width other than the SAE's ``cfg.d_in``, fewer than 2 rows, NaN/inf values, or zero
    variance (FVU is undefined).
    """
    d_in, _ = _sae_dims(sae)
    if not isinstance(activations, torch.Tensor):
        raise TypeError(f"activations must be a torch.Tensor, got {type(activations).__name__}")
    if not activations.is_floating_point():
        raise TypeError(f"activations must be floating point, got {activations.dtype}")
    if activations.dim() != 2:
        raise ValueError(f"activations must have shape (n, d_in), got {tuple(activations.shape)}")
    if activations.shape[1] != d_in:
        raise ValueError(
            f"activations have width {activations.shape[1]} but the SAE expects d_in={d_in}"
        )
    if activations.shape[0] < 2:
        raise ValueError("description length needs at least 2 rows of activations")
    bad = ~torch.isfinite(activations)
    if bool(bad.any()):
        raise ValueError(
            f"activations contain {int(bad.sum())} NaN or inf values "
            f"(first in row {int(bad.any(1).nonzero()[0, 0])})"
        )
    return activations


class _Encoded:
    """Activations and their SAE codes, encoded once and kept sparse per batch, so that the
    reconstruction at any bin width costs one decode pass and no encode pass."""

    def __init__(
        self,
        sae: Any,
        activations: torch.Tensor,
        batch_size: int,
        model: torch.nn.Module | None = None,
        tokens: torch.Tensor | None = None,
        hook_name: str | None = None,
    ) -> None:
        self.model, self.tokens, self.hook_name = model, tokens, hook_name
        self._ce_cache: dict[float | None, dict[str, float]] = {}
        check_int("batch_size", batch_size)
        self.sae = sae
        self.x = activations
        self.n = activations.shape[0]
        self.d_in, self.d_sae = _sae_dims(sae)
        self.device = _sae_device(sae)
        self.batch_size = batch_size
        self.batches: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.code_dtype = torch.float32
        mean = activations.double().mean(0)
        sst = float((activations.double() - mean).pow(2).sum())
        if sst <= 0:
            raise ValueError("activations have zero variance: FVU is undefined")
        self.sst = sst
        with torch.no_grad():
            for start in range(0, self.n, batch_size):
                xb = activations[start : start + batch_size].to(self.device)
                codes = sae.encode(xb)
                if codes.shape != (xb.shape[0], self.d_sae):
                    raise ValueError(
                        f"{type(sae).__name__}.encode returned shape {tuple(codes.shape)}, "
                        f"expected ({xb.shape[0]}, {self.d_sae})"
                    )
                self.code_dtype = codes.dtype
                rows, cols = codes.nonzero(as_tuple=True)
                self.batches.append((start, rows, cols, codes[rows, cols].detach()))
        self.values = (
            torch.cat([b[3] for b in self.batches]) if self.batches else torch.zeros(0)
        ).double()
        self.cols = torch.cat([b[2] for b in self.batches])
        self._fvu_cache: dict[float | None, float] = {}

    def recon(self, batch: int, bin_width: float | None) -> torch.Tensor:
        start, rows, cols, vals = self.batches[batch]
        b = min(self.batch_size, self.n - start)
        if bin_width is not None:
            vals = quantise(vals, bin_width).double() * bin_width
        dense = torch.zeros(b, self.d_sae, device=self.device, dtype=torch.float64)
        dense[rows, cols] = vals.to(torch.float64)
        return self.sae.decode(dense.to(self.code_dtype))

    @torch.no_grad()
    def fvu(self, bin_width: float | None) -> float:
        """FVU of the reconstruction from codes quantised at ``bin_width`` (None: exact)."""
        if bin_width in self._fvu_cache:
            return self._fvu_cache[bin_width]
        sse = 0.0
        for i, (start, *_rest) in enumerate(self.batches):
            xb = self.x[start : start + self.batch_size].to(self.device)
            sse += float((self.recon(i, bin_width).double() - xb.double()).pow(2).sum())
        self._fvu_cache[bin_width] = sse / self.sst
        return sse / self.sst

    def spliced(self, bin_width: float | None) -> dict[str, float]:
        """:func:`hierlens.sae.spliced_ce` with the reconstruction from codes quantised at
        ``bin_width`` (None: exact) spliced in (cached per width)."""
        from .spliced_loss import spliced_ce

        if self.model is None or self.tokens is None:
            raise ValueError("spliced cross-entropy needs model= and tokens=")
        if bin_width not in self._ce_cache:
            self._ce_cache[bin_width] = spliced_ce(
                self.model, self.replacement(bin_width), self.tokens, hook_name=self.hook_name
            )
        return self._ce_cache[bin_width]

    def replacement(self, bin_width: float | None) -> Callable[[torch.Tensor], torch.Tensor]:
        """A callable mapping activations ``(..., d_in)`` to the quantised reconstruction."""

        def replace(act: torch.Tensor) -> torch.Tensor:
            flat = act.reshape(-1, act.shape[-1])
            codes = self.sae.encode(flat.to(self.device))
            if bin_width is not None:
                codes = quantise(codes, bin_width).double() * bin_width
            out = self.sae.decode(codes.to(self.code_dtype))
            return out.reshape(act.shape).to(act.dtype).to(act.device)

        return replace


@dataclasses.dataclass
class DescriptionLength:
    """Bits per token to send an SAE's quantised codes, and the distortion they give.

    See the module docstring for the exact definitions. Attributes:
        bits: ``which_bits + value_bits`` (entropy-coded cost per token).
        which_bits, value_bits: its two parts.
        naive_bits: ``l0 * (log2 d_sae + bits_per_value)``.
        raw_bits: ``d_in * raw_bits_per_value`` (the activations at the same precision).
        bits_per_value, raw_bits_per_value: fixed-length bits of one code / one raw value.
        l0: mean number of active (non-zero after quantisation) latents per row.
        bin_width: the quantisation step of the codes.
        fvu: FVU of the quantised reconstruction; fvu_unquantised: of the exact one;
        fvu_increase: their difference.
        ce_increase: spliced CE of the quantised reconstruction minus the clean CE, when a
            model was given, else None.
        n_rows, d_in, d_sae: sizes.
        firing_probability: ``(d_sae,)`` ``p_i``; value_entropy: ``(d_sae,)`` ``H_i`` (bits).
    """

    bits: float
    which_bits: float
    value_bits: float
    naive_bits: float
    raw_bits: float
    bits_per_value: float
    raw_bits_per_value: float
    l0: float
    bin_width: float
    fvu: float
    fvu_unquantised: float
    fvu_increase: float
    n_rows: int
    d_in: int
    d_sae: int
    firing_probability: torch.Tensor
    value_entropy: torch.Tensor
    ce_increase: float | None = None

    @property
    def compression_ratio(self) -> float:
        """``raw_bits / bits`` (inf when the codes cost nothing)."""
        return self.raw_bits / self.bits if self.bits > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        """The scalar fields as a JSON-ready dict (the per-latent tensors left out)."""
        out = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("firing_probability", "value_entropy")
        }
        out["compression_ratio"] = self.compression_ratio
        return out


def _entropy_terms(
    cols: torch.Tensor, q: torch.Tensor, n_rows: int, d_sae: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-latent firing probability and value entropy (bits) from the active entries'
    latent indices ``cols`` and non-zero integer values ``q`` (both ``(m,)``)."""
    n_i = torch.bincount(cols, minlength=d_sae).double()
    p = n_i / n_rows
    ent = torch.zeros(d_sae, dtype=torch.float64)
    if q.numel() == 0:
        return p, ent
    qmin = int(q.min())
    span = int(q.max()) - qmin + 1
    if d_sae * span < 2**62:
        key = cols * span + (q - qmin)
        uniq, counts = torch.unique(key, return_counts=True)
        latent = torch.div(uniq, span, rounding_mode="floor")
    else:
        uniq, counts = torch.unique(torch.stack([cols, q]), dim=1, return_counts=True)
        latent = uniq[0]
    c = counts.double()
    total = n_i[latent]
    ent.scatter_add_(0, latent, (c / total) * torch.log2(total / c))
    return p, ent


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(p)
    mid = (p > 0) & (p < 1)
    pm = p[mid]
    out[mid] = -(pm * torch.log2(pm) + (1 - pm) * torch.log2(1 - pm))
    return out


def _levels_bits(q: torch.Tensor) -> float:
    if q.numel() == 0:
        return 0.0
    return math.log2(int(q.max()) - int(q.min()) + 1)


@dataclasses.dataclass
class PrecisionSearch:
    """Result of :func:`search_bin_width`.

    Attributes:
        bin_width: the coarsest bin width found within the budget.
        fvu_increase: FVU increase at ``bin_width``; ce_increase: spliced-CE increase over
            the unquantised SAE at ``bin_width`` (None without a model).
        rejected_bin_width: the finer end of the search's last rejected bracket
            (``bin_width * (1 + rtol)`` or less; None when even the coarsest bin passed).
        evaluations: number of bin widths tried.
    """

    bin_width: float
    fvu_increase: float
    ce_increase: float | None
    rejected_bin_width: float | None
    evaluations: int


SCAN_STEP = 2.0**0.25  # factor between the widths of the downward scan
FINEST = 2.0**-30  # the finest width tried, relative to the largest |code|


def _search(
    enc: _Encoded, max_fvu_increase: float | None, max_ce_increase: float | None, rtol: float
) -> PrecisionSearch:
    base_fvu = enc.fvu(None)
    base_ce = None
    if max_ce_increase is not None:
        base_ce = enc.spliced(None)["ce_spliced"]
    evals = 0
    cache: dict[float, tuple[bool, float, float | None]] = {}

    def check(width: float) -> tuple[bool, float, float | None]:
        nonlocal evals
        if width in cache:
            return cache[width]
        evals += 1
        inc = enc.fvu(width) - base_fvu
        ok = max_fvu_increase is None or inc <= max_fvu_increase
        ce_inc = None
        if ok and max_ce_increase is not None:
            ce = enc.spliced(width)["ce_spliced"]
            ce_inc = ce - base_ce
            ok = ce_inc <= max_ce_increase
        cache[width] = (ok, inc, ce_inc)
        return cache[width]

    scale = float(enc.values.abs().max()) if enc.values.numel() else 0.0
    if scale == 0.0:  # nothing ever fires: any bin width sends the same (empty) message
        ok, inc, ce_inc = check(1.0)
        return PrecisionSearch(1.0, inc, ce_inc, None, evals)
    hi = 2.0 * scale  # every code rounds to zero
    ok, inc, ce_inc = check(hi)
    if ok:
        return PrecisionSearch(hi, inc, ce_inc, None, evals)
    # scan down from the coarsest width by factors of SCAN_STEP to the first width within
    # budget, then bisect between it and its (rejected) coarser neighbour
    lo = hi
    while True:
        lo = lo / SCAN_STEP
        if lo < scale * FINEST:
            ok, inc, ce_inc = check(lo)
            what = f"FVU increase {inc:.3g}"
            if ce_inc is not None:
                what += f", CE increase {ce_inc:.3g}"
            raise ValueError(
                "no bin width meets the distortion budget "
                f"(max_fvu_increase={max_fvu_increase}, max_ce_increase={max_ce_increase}): "
                f"even bin width {lo:.3g} gives {what}"
            )
        if check(lo)[0]:
            break
        hi = lo
    while hi / lo > 1.0 + rtol:
        mid = math.sqrt(lo * hi)
        if check(mid)[0]:
            lo = mid
        else:
            hi = mid
    ok, inc, ce_inc = check(lo)
    return PrecisionSearch(lo, inc, ce_inc, hi, evals)


def _check_budgets(max_fvu_increase, max_ce_increase, model, tokens, rtol) -> None:
    for name, value in (
        ("max_fvu_increase", max_fvu_increase),
        ("max_ce_increase", max_ce_increase),
    ):
        if value is not None and (
            not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0
        ):
            raise ValueError(f"{name} must be a finite number >= 0 or None, got {value!r}")
    if max_fvu_increase is None and max_ce_increase is None:
        raise ValueError("give a distortion budget: max_fvu_increase and/or max_ce_increase")
    if max_ce_increase is not None and (model is None or tokens is None):
        raise ValueError("max_ce_increase needs model= and tokens= (and hook_name=)")
    if not isinstance(rtol, (int, float)) or not rtol > 0:
        raise ValueError(f"rtol must be > 0, got {rtol!r}")


def search_bin_width(
    sae: Any,
    activations: torch.Tensor,
    *,
    max_fvu_increase: float | None = 0.01,
    max_ce_increase: float | None = None,
    model: torch.nn.Module | None = None,
    tokens: torch.Tensor | None = None,
    hook_name: str | None = None,
    rtol: float = 1e-3,
    batch_size: int = 4096,
) -> PrecisionSearch:
    """The coarsest bin width (effective precision) of the codes whose quantised
    reconstruction stays within a distortion budget ([Ayonrinde2024], section 3).

    The search starts at ``w_0 = 2 * max|code|`` (every code rounds to zero) and scans down
    the grid ``w_j = w_0 * 2**(-j/4)`` to the first (coarsest) ``w_j`` within budget, then
    bisects over ``log(bin_width)`` between ``w_j`` and the rejected ``w_{j-1}`` until the
    accepted and rejected widths are within a factor ``1 + rtol``. Distortion need not grow
    monotonically with the bin width (rounding is lumpy for few distinct values), so the
    contract is: the result is within budget, every scanned grid width coarser than it is
    not, and neither is the width ``rejected_bin_width <= (1 + rtol) * bin_width``. The scan
    gives up below ``2**-30 * max|code|``.

    Args:
        sae: an SAE (``encode``/``decode``, ``cfg.d_in``/``cfg.d_sae``).
        activations: ``(n, d_in)``.
        max_fvu_increase: budget on ``FVU(quantised) - FVU(exact)`` (None: no FVU budget).
        max_ce_increase: budget on the spliced cross-entropy of the quantised reconstruction
            minus that of the exact one (nats per scored position); needs ``model``,
            ``tokens`` ``(N, T)`` and ``hook_name`` (see :func:`hierlens.sae.spliced_ce`).
        rtol: relative precision of the bin width.
        batch_size: rows per encode/decode.

    Raises:
        ValueError: bad input, or no bin width meets the budget (the message gives the
            distortion reached at the finest width).
    """
    _check_budgets(max_fvu_increase, max_ce_increase, model, tokens, rtol)
    check_activations(sae, activations)
    enc = _Encoded(sae, activations, batch_size, model, tokens, hook_name)
    return _search(enc, max_fvu_increase, max_ce_increase, rtol)


def _measure(enc: _Encoded, bin_width: float) -> DescriptionLength:
    q_all = quantise(enc.values, bin_width)
    active = q_all != 0
    q, cols = q_all[active], enc.cols[active].to(torch.int64).cpu()
    q = q.cpu()
    p, ent = _entropy_terms(cols, q, enc.n, enc.d_sae)
    which = float(_binary_entropy(p).sum())
    value = float((p * ent).sum())
    l0 = float(p.sum())
    bpv = _levels_bits(q)
    raw_bpv = _levels_bits(quantise(enc.x, bin_width))
    fvu_exact = enc.fvu(None)
    fvu_q = enc.fvu(bin_width)
    ce_increase = None
    if enc.model is not None and enc.tokens is not None:
        res = enc.spliced(bin_width)
        ce_increase = res["ce_spliced"] - res["ce_clean"]
    return DescriptionLength(
        bits=which + value,
        which_bits=which,
        value_bits=value,
        naive_bits=l0 * (math.log2(enc.d_sae) + bpv),
        raw_bits=enc.d_in * raw_bpv,
        bits_per_value=bpv,
        raw_bits_per_value=raw_bpv,
        l0=l0,
        bin_width=float(bin_width),
        fvu=fvu_q,
        fvu_unquantised=fvu_exact,
        fvu_increase=fvu_q - fvu_exact,
        n_rows=enc.n,
        d_in=enc.d_in,
        d_sae=enc.d_sae,
        firing_probability=p.float(),
        value_entropy=ent.float(),
        ce_increase=ce_increase,
    )


@torch.no_grad()
def description_length(
    sae: Any,
    activations: torch.Tensor,
    *,
    bin_width: float | None = None,
    max_fvu_increase: float | None = 0.01,
    max_ce_increase: float | None = None,
    model: torch.nn.Module | None = None,
    tokens: torch.Tensor | None = None,
    hook_name: str | None = None,
    rtol: float = 1e-3,
    batch_size: int = 4096,
) -> DescriptionLength:
    """Bits per token to communicate ``sae``'s codes of ``activations`` at precision
    ``bin_width``, with its parts and the distortion [Ayonrinde2024].

    Quantisation and the bit counts are defined in the module docstring.

    Args:
        sae: an SAE (``encode``/``decode``, ``cfg.d_in``/``cfg.d_sae``).
        activations: ``(n, d_in)`` finite floating-point activations.
        bin_width: quantisation step of the codes. ``None``: the coarsest width within the
            budget ``max_fvu_increase`` / ``max_ce_increase`` (see :func:`search_bin_width`).
        max_fvu_increase, max_ce_increase, model, tokens, hook_name, rtol: the precision
            search's budget, used when ``bin_width`` is None. With ``model``/``tokens``, the
            result's ``ce_increase`` is the quantised spliced CE minus the clean CE.
        batch_size: rows per encode/decode.

    Returns:
        A :class:`DescriptionLength`.
    """
    if bin_width is not None:
        _check_bin_width(bin_width)
    else:
        _check_budgets(max_fvu_increase, max_ce_increase, model, tokens, rtol)
    check_activations(sae, activations)
    enc = _Encoded(sae, activations, batch_size, model, tokens, hook_name)
    if bin_width is None:
        bin_width = _search(enc, max_fvu_increase, max_ce_increase, rtol).bin_width
    return _measure(enc, bin_width)
