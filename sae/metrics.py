"""SAE quality metrics.

- Reconstruction and sparsity on activations: MSE, fraction of variance unexplained, L0,
  dead and dense latents (:func:`evaluate_sae`).
- With a model and a hook: cross-entropy and KL divergence with the SAE's reconstruction
  spliced in at the hook, against the clean run and a zero-ablated run; "CE loss recovered"
  ``= (CE_zero - CE_spliced) / (CE_zero - CE_clean)`` (1 for a perfect reconstruction, 0 for
  one no better than zeros) (:func:`spliced_ce`).
- With ground-truth features (synthetic concepts): best-match cosine of every true feature,
  the Hungarian-matched mean cosine, and both per level of the concept tree
  (:func:`feature_recovery`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hierlens.models.hooks import resolve_hook_names

from .base import SAE

IGNORE_INDEX = -100


def mse(x: torch.Tensor, recon: torch.Tensor) -> float:
    """Mean over rows of the squared error summed over features."""
    return float((recon.detach().float() - x.detach().float()).pow(2).sum(-1).mean())


def fvu(x: torch.Tensor, recon: torch.Tensor) -> float:
    """Fraction of variance unexplained: ``sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``
    over rows ``(n, d)``."""
    x = x.detach().float().reshape(-1, x.shape[-1])
    recon = recon.detach().float().reshape(-1, x.shape[-1])
    total = (x - x.mean(0)).pow(2).sum()
    if total <= 0:
        raise ValueError("fvu needs activations with non-zero variance")
    return float((x - recon).pow(2).sum() / total)


def l0(codes: torch.Tensor) -> float:
    """Mean number of non-zero codes per row."""
    return float((codes != 0).sum(-1).float().mean())


def firing_counts(codes: torch.Tensor) -> torch.Tensor:
    """How many rows each latent fires on: ``(..., d_sae)`` -> ``(d_sae,)`` int64."""
    return (codes.reshape(-1, codes.shape[-1]) != 0).sum(0)


def dead_latents(counts: torch.Tensor) -> torch.Tensor:
    """Bool mask ``(d_sae,)`` of latents that never fired, from :func:`firing_counts`."""
    return counts == 0


def dense_latents(counts: torch.Tensor, n_rows: int, threshold: float = 0.1) -> torch.Tensor:
    """Bool mask of latents firing on more than ``threshold`` of ``n_rows`` rows."""
    if n_rows < 1:
        raise ValueError("dense_latents needs n_rows >= 1")
    return counts.float() / n_rows > threshold


@torch.no_grad()
def evaluate_sae(
    sae: SAE, activations: torch.Tensor, batch_size: int = 4096, dense_threshold: float = 0.1
) -> dict[str, float]:
    """Reconstruction and sparsity of ``sae`` (inference behaviour) on ``activations``
    ``(n, d_in)``: ``mse``, ``fvu``, ``l0``, ``dead_fraction`` (latents that never fire on
    these rows), ``dense_fraction`` (firing on more than ``dense_threshold`` of them)."""
    if not isinstance(activations, torch.Tensor) or activations.dim() != 2:
        raise ValueError("activations must be a tensor of shape (n, d_in)")
    if activations.shape[1] != sae.d_in:
        raise ValueError(
            f"activations have width {activations.shape[1]}, the SAE expects d_in={sae.d_in}"
        )
    if activations.shape[0] < 2:
        raise ValueError("evaluate_sae needs at least 2 rows")
    n = activations.shape[0]
    sse, l0_sum = 0.0, 0.0
    counts = torch.zeros(sae.d_sae, dtype=torch.long, device=sae.device)
    mean = activations.float().mean(0).to(sae.device)
    sst = 0.0
    for start in range(0, n, batch_size):
        x = activations[start : start + batch_size].to(sae.device)
        codes = sae.encode(x)
        recon = sae.decode(codes)
        sse += float((recon.float() - x.float()).pow(2).sum())
        sst += float((x.float() - mean).pow(2).sum())
        l0_sum += float((codes != 0).sum())
        counts += firing_counts(codes)
    return {
        "mse": sse / n,
        "fvu": sse / sst if sst > 0 else float("nan"),
        "l0": l0_sum / n,
        "dead_fraction": float(dead_latents(counts).float().mean()),
        "dense_fraction": float(dense_latents(counts, n, dense_threshold).float().mean()),
    }


# ----- spliced cross-entropy ---------------------------------------------------------------------
def _run_with_replacement(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    hook_name: str,
    replace: Callable[[torch.Tensor], torch.Tensor] | None,
    attention_mask: torch.Tensor | None,
) -> torch.Tensor:
    """Logits of ``model`` on ``tokens`` with the activation at ``hook_name`` replaced.

    A TransformerLens model (anything with ``run_with_hooks``) is hooked by hook name; a plain
    ``nn.Module`` by a forward hook on the submodule of that name.
    """
    kwargs = {} if attention_mask is None else {"attention_mask": attention_mask.long()}
    if replace is None:
        out = model(tokens, **kwargs)
    elif hasattr(model, "run_with_hooks"):
        out = model.run_with_hooks(
            tokens, fwd_hooks=[(hook_name, lambda act, hook: replace(act))], **kwargs
        )
    else:
        try:
            sub = model.get_submodule(hook_name)
        except AttributeError as exc:
            names = [n for n, _ in model.named_modules() if n]
            raise ValueError(
                f"model has no submodule {hook_name!r}; submodules: {names[:20]}"
            ) from exc
        handle = sub.register_forward_hook(lambda mod, inp, out: replace(out))
        try:
            out = model(tokens, **kwargs)
        finally:
            handle.remove()
    if hasattr(out, "logits"):
        out = out.logits
    if not isinstance(out, torch.Tensor) or out.dim() != 3:
        raise TypeError("model must return logits of shape (batch, seq, d_vocab)")
    return out


def _ce_and_logprobs(logits: torch.Tensor, targets: torch.Tensor):
    logp = F.log_softmax(logits.float(), dim=-1)
    valid = targets != IGNORE_INDEX
    nll = -logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return (nll * valid).sum(), valid.sum(), logp, valid


@torch.no_grad()
def spliced_ce(
    model: torch.nn.Module,
    sae: SAE | Callable[[torch.Tensor], torch.Tensor],
    tokens: torch.Tensor | Iterable[torch.Tensor],
    hook_name: str | None = None,
    targets: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Cross-entropy and KL with the SAE reconstruction spliced in at ``hook_name``.

    Args:
        model: a TransformerLens ``TransformerBridge``/``HookedTransformer`` or a plain module
            whose submodule named ``hook_name`` produces the activation.
        sae: an SAE (its inference reconstruction replaces the activation) or any callable
            mapping the activation ``(B, T, d)`` to a replacement.
        tokens: ``(N, T)`` token ids.
        hook_name: where to splice (default: the SAE's ``cfg.hook_name``).
        targets: ``(N, T)`` per-position targets with ``-100`` where not scored; default:
            next-token targets ``tokens[:, 1:]`` scored at positions ``0..T-2`` (and masked
            by ``attention_mask`` when given).
        attention_mask: ``(N, T)`` 1 at real tokens (passed to the model).
        batch_size: sequences per forward pass.

    Returns:
        ``ce_clean``, ``ce_spliced``, ``ce_zero`` (mean per scored position), ``kl_spliced``
        and ``kl_zero`` (mean KL(clean || other) per scored position) and
        ``ce_loss_recovered = (ce_zero - ce_spliced) / (ce_zero - ce_clean)``.
    """
    if hook_name is None:
        hook_name = getattr(getattr(sae, "cfg", None), "hook_name", None)
        if hook_name is None:
            raise ValueError("give hook_name (the SAE's cfg.hook_name is not set)")
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
        raise ValueError("tokens must be a tensor of shape (n_sequences, seq_len)")
    names = resolve_hook_names(model, hook_name)  # unknown names: ValueError with close matches
    if len(names) != 1:
        raise ValueError(f"hook_name must name one hook, {hook_name!r} matches {names}")
    hook_name = names[0]
    if targets is None:
        targets = torch.full_like(tokens, IGNORE_INDEX)
        targets[:, :-1] = tokens[:, 1:]
        if attention_mask is not None:
            keep = attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()
            targets[:, :-1] = torch.where(keep, targets[:, :-1], IGNORE_INDEX)
    if targets.shape != tokens.shape:
        raise ValueError(f"targets {tuple(targets.shape)} must match tokens {tuple(tokens.shape)}")
    if isinstance(sae, SAE):

        def replace(act: torch.Tensor) -> torch.Tensor:
            if act.shape[-1] != sae.d_in:
                raise ValueError(
                    f"activation at {hook_name!r} has width {act.shape[-1]}, the SAE expects d_in={sae.d_in}"
                )
            return sae.reconstruct(act).to(act.dtype)
    elif callable(sae):
        replace = sae  # type: ignore[assignment]
    else:
        raise TypeError("sae must be an SAE or a callable")

    device = next(model.parameters()).device
    sums = {"clean": 0.0, "spliced": 0.0, "zero": 0.0, "kl_spliced": 0.0, "kl_zero": 0.0}
    count = 0
    for start in range(0, tokens.shape[0], batch_size):
        tok = tokens[start : start + batch_size].to(device)
        tgt = targets[start : start + batch_size].to(device)
        am = (
            None
            if attention_mask is None
            else attention_mask[start : start + batch_size].to(device)
        )
        ce_c, n, logp_c, valid = _ce_and_logprobs(
            _run_with_replacement(model, tok, hook_name, None, am), tgt
        )
        ce_s, _, logp_s, _ = _ce_and_logprobs(
            _run_with_replacement(model, tok, hook_name, replace, am), tgt
        )
        ce_z, _, logp_z, _ = _ce_and_logprobs(
            _run_with_replacement(model, tok, hook_name, torch.zeros_like, am), tgt
        )
        p_c = logp_c.exp()
        sums["clean"] += float(ce_c)
        sums["spliced"] += float(ce_s)
        sums["zero"] += float(ce_z)
        sums["kl_spliced"] += float(((p_c * (logp_c - logp_s)).sum(-1) * valid).sum())
        sums["kl_zero"] += float(((p_c * (logp_c - logp_z)).sum(-1) * valid).sum())
        count += int(n)
    if count == 0:
        raise ValueError("no scored positions (all targets are -100)")
    res = {
        "ce_clean": sums["clean"] / count,
        "ce_spliced": sums["spliced"] / count,
        "ce_zero": sums["zero"] / count,
        "kl_spliced": sums["kl_spliced"] / count,
        "kl_zero": sums["kl_zero"] / count,
        "n_positions": count,
    }
    gap = res["ce_zero"] - res["ce_clean"]
    res["ce_loss_recovered"] = (
        (res["ce_zero"] - res["ce_spliced"]) / gap if gap != 0 else float("nan")
    )
    return res


# ----- ground-truth recovery ---------------------------------------------------------------------
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
        true features to latents maximising the total cosine, Kuhn 1955), ``assignment``
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
