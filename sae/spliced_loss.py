"""Cross-entropy and KL divergence with an SAE's reconstruction spliced in at a hook.

Against the clean run and a zero-ablated run; "CE loss recovered"
``= (CE_zero - CE_spliced) / (CE_zero - CE_clean)`` (1 for a perfect reconstruction, 0 for
one no better than zeros) (:func:`spliced_ce`). Causal LMs are scored on the next token;
encoders with a masked-LM head on BERT-style masked tokens (``objective="masked"``, the
masking from :func:`mask_tokens`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any

import torch
import torch.nn.functional as F

from hierlens.core.device import model_device
from hierlens.models.hooks import resolve_hook_names
from hierlens.models.model_inputs import forward_kwargs
from hierlens.models.tasks.base import IGNORE_INDEX

from .base import SAE

__all__ = ["mask_tokens", "spliced_ce"]


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
    kwargs = forward_kwargs(model, attention_mask, tokens)
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


def mask_tokens(
    tokens: torch.Tensor,
    mask_token_id: int,
    special_ids: Collection[int],
    vocab_size: int,
    attention_mask: torch.Tensor | None = None,
    mask_rate: float = 0.15,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style masked-LM inputs and targets ([Devlin2019], section 3.1).

    In each sequence, the candidates are the real (``attention_mask`` 1) tokens whose id is
    not in ``special_ids``. Exactly ``max(1, floor(mask_rate * n + 1/2))`` of its ``n``
    candidates (none when ``n`` is 0) are chosen uniformly without replacement; each chosen
    token is replaced by ``mask_token_id`` with probability 0.8, by a token drawn uniformly
    from the non-special ids ``< vocab_size`` with probability 0.1, and left unchanged with
    probability 0.1. All draws come from one CPU ``torch.Generator`` seeded with ``seed``
    (three ``(N, T)`` draws in a fixed order), so the same tokens and seed give the same
    masking on any device.

    Args:
        tokens: ``(N, T)`` token ids.
        mask_token_id: the tokenizer's ``[MASK]`` id.
        special_ids: ids never masked (``[CLS]``, ``[SEP]``, ``[PAD]``, ...).
        vocab_size: size of the model's vocabulary (random replacements are below it).
        attention_mask: ``(N, T)``, 1 at real tokens (default: all real).
        mask_rate: fraction of candidates to choose, in ``(0, 1]``.
        seed: the generator's seed.

    Returns:
        ``(inputs, targets)``, both ``(N, T)`` int64 on ``tokens``' device: the corrupted
        inputs, and the original ids at the chosen positions with ``-100`` elsewhere.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
        raise ValueError("tokens must be a tensor of shape (n_sequences, seq_len)")
    if not 0.0 < float(mask_rate) <= 1.0:
        raise ValueError(f"mask_rate must be in (0, 1], got {mask_rate!r}")
    special = torch.tensor(sorted({int(i) for i in special_ids}), dtype=torch.int64)
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[special[special < vocab_size]] = False
    allowed = allowed.nonzero().squeeze(1)
    if len(allowed) == 0:
        raise ValueError("every id below vocab_size is special: nothing to draw replacements from")
    tok = tokens.detach().cpu().to(torch.int64)
    real = (
        torch.ones_like(tok, dtype=torch.bool)
        if attention_mask is None
        else attention_mask.detach().cpu().bool()
    )
    if real.shape != tok.shape:
        raise ValueError(f"attention_mask {tuple(real.shape)} must match tokens {tuple(tok.shape)}")
    cand = real & ~torch.isin(tok, special)
    g = torch.Generator().manual_seed(int(seed))
    scores = torch.rand(tok.shape, generator=g)
    action = torch.rand(tok.shape, generator=g)
    replacement = allowed[torch.randint(len(allowed), tok.shape, generator=g)]
    n_cand = cand.sum(1)
    k = torch.where(n_cand > 0, torch.floor(mask_rate * n_cand + 0.5).long().clamp_min(1), 0)
    scores = scores.masked_fill(~cand, float("inf"))
    rank = scores.argsort(1).argsort(1)  # 0 = the candidate with the smallest score
    chosen = cand & (rank < k[:, None])
    inputs = tok.clone()
    inputs[chosen & (action < 0.8)] = int(mask_token_id)
    swap = chosen & (action >= 0.8) & (action < 0.9)
    inputs[swap] = replacement[swap]
    targets = torch.where(chosen, tok, torch.full_like(tok, IGNORE_INDEX))
    return inputs.to(tokens.device), targets.to(tokens.device)


_MLM_ARCHITECTURES = ("ForMaskedLM", "ForPreTraining")


def _masked_setup(model: torch.nn.Module) -> tuple[int, list[int], int]:
    """Checks that ``model`` is an encoder with a trained masked-LM head; returns its
    ``[MASK]`` id, special ids and vocabulary size."""
    cfg = getattr(model, "cfg", None)
    if getattr(cfg, "attention_dir", None) == "causal":
        raise ValueError(
            "objective='masked' needs a bidirectional encoder with a masked-LM head; this "
            "model is causal (use objective='next_token')"
        )
    hf = getattr(model, "original_model", model)
    hf_cfg = getattr(hf, "config", None)
    if hf_cfg is not None:
        archs = list(getattr(hf_cfg, "architectures", None) or [])
        if not any(a.endswith(_MLM_ARCHITECTURES) for a in archs):
            raise ValueError(
                "objective='masked' needs the model's masked-LM head, and this checkpoint "
                f"has none (config.architectures={archs}): a bare encoder such as a "
                "sentence-transformers BertModel gets a randomly initialised head when "
                "loaded; use a checkpoint saved as *ForMaskedLM or *ForPreTraining"
            )
    tok = getattr(model, "tokenizer", None)
    mask_id = getattr(tok, "mask_token_id", None)
    if not isinstance(mask_id, int):
        raise ValueError("objective='masked' needs model.tokenizer with a mask token ([MASK])")
    vocab = getattr(cfg, "d_vocab", None) or getattr(hf_cfg, "vocab_size", None)
    if not isinstance(vocab, int):
        raise ValueError("cannot tell the model's vocabulary size (cfg.d_vocab)")
    return mask_id, list(tok.all_special_ids), vocab


def _splice_hook(
    model: torch.nn.Module,
    sae: Any,
    tokens: Any,
    hook_name: str | None,
    objective: str,
    attention_mask: torch.Tensor | None,
) -> str:
    """Check the inputs of :func:`spliced_ce` (``tokens`` ``(N, T)``, the objective, the
    attention mask's shape) and return the one hook name to splice at (default: the SAE's
    ``cfg.hook_name``; a pattern must match exactly one hook)."""
    if hook_name is None:
        hook_name = getattr(getattr(sae, "cfg", None), "hook_name", None)
        if hook_name is None:
            raise ValueError("give hook_name (the SAE's cfg.hook_name is not set)")
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
        raise ValueError("tokens must be a tensor of shape (n_sequences, seq_len)")
    names = resolve_hook_names(model, hook_name)  # unknown names: ValueError with close matches
    if len(names) != 1:
        raise ValueError(f"hook_name must name one hook, {hook_name!r} matches {names}")
    if objective not in ("next_token", "masked"):
        raise ValueError(f"objective must be 'next_token' or 'masked', got {objective!r}")
    if attention_mask is not None and tuple(attention_mask.shape) != tuple(tokens.shape):
        raise ValueError(
            f"attention_mask {tuple(attention_mask.shape)} must match tokens {tuple(tokens.shape)}"
        )
    return names[0]


def _scored_inputs(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    targets: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    objective: str,
    mask_rate: float,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs and per-position targets ``(N, T)`` (``-100`` where not scored) the three
    runs share: :func:`mask_tokens` inputs and targets for ``objective="masked"``, else
    ``tokens`` with the given targets or the next-token ones (masked by ``attention_mask``)."""
    if objective == "masked":
        if targets is not None:
            raise ValueError("objective='masked' makes its own targets; do not pass targets")
        mask_id, special, vocab = _masked_setup(model)
        tokens, targets = mask_tokens(
            tokens, mask_id, special, vocab, attention_mask, mask_rate=mask_rate, seed=seed
        )
    if targets is None:
        targets = torch.full_like(tokens, IGNORE_INDEX)
        targets[:, :-1] = tokens[:, 1:]
        if attention_mask is not None:
            keep = attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()
            targets[:, :-1] = torch.where(keep, targets[:, :-1], IGNORE_INDEX)
    if targets.shape != tokens.shape:
        raise ValueError(f"targets {tuple(targets.shape)} must match tokens {tuple(tokens.shape)}")
    return tokens, targets


def _replacement(sae: Any, hook_name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """What replaces the activation at ``hook_name``: an SAE's inference reconstruction (in
    the activation's dtype, after checking its width), or the given callable itself."""
    if isinstance(sae, SAE):

        def replace(act: torch.Tensor) -> torch.Tensor:
            if act.shape[-1] != sae.d_in:
                raise ValueError(
                    f"activation at {hook_name!r} has width {act.shape[-1]}, the SAE expects d_in={sae.d_in}"
                )
            return sae.reconstruct(act).to(act.dtype)

        return replace
    if callable(sae):
        return sae
    raise TypeError("sae must be an SAE or a callable")


def _batch_sums(
    model: torch.nn.Module,
    tok: torch.Tensor,
    tgt: torch.Tensor,
    am: torch.Tensor | None,
    hook_name: str,
    replace: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[dict[str, float], int]:
    """One batch's clean, spliced and zero-ablated runs (in that order): the summed CE of
    each and the summed KL(clean || spliced) and KL(clean || zero) over the scored
    positions, and the number of those positions."""
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
    sums = {
        "clean": float(ce_c),
        "spliced": float(ce_s),
        "zero": float(ce_z),
        "kl_spliced": float(((p_c * (logp_c - logp_s)).sum(-1) * valid).sum()),
        "kl_zero": float(((p_c * (logp_c - logp_z)).sum(-1) * valid).sum()),
    }
    return sums, int(n)


def _spliced_summary(sums: dict[str, float], count: int, objective: str) -> dict[str, Any]:
    """Means per scored position of the summed CEs and KLs, and the CE loss recovered (NaN
    when zero ablation costs nothing)."""
    res = {
        "ce_clean": sums["clean"] / count,
        "ce_spliced": sums["spliced"] / count,
        "ce_zero": sums["zero"] / count,
        "kl_spliced": sums["kl_spliced"] / count,
        "kl_zero": sums["kl_zero"] / count,
        "n_positions": count,
        "objective": objective,
    }
    gap = res["ce_zero"] - res["ce_clean"]
    res["ce_loss_recovered"] = (
        (res["ce_zero"] - res["ce_spliced"]) / gap if gap != 0 else float("nan")
    )
    return res


@torch.no_grad()
def spliced_ce(
    model: torch.nn.Module,
    sae: SAE | Callable[[torch.Tensor], torch.Tensor],
    tokens: torch.Tensor | Iterable[torch.Tensor],
    hook_name: str | None = None,
    targets: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    batch_size: int = 64,
    objective: str = "next_token",
    mask_rate: float = 0.15,
    seed: int = 0,
) -> dict[str, Any]:
    """Cross-entropy and KL with the SAE reconstruction spliced in at ``hook_name``.

    Three runs on the same inputs, scored at the same positions: clean, with the
    activation at ``hook_name`` replaced by the SAE's reconstruction, and with it replaced
    by zeros. Works on TransformerBridges booted from Hugging Face folders (the attention
    mask is passed to the model).

    Args:
        model: a TransformerLens ``TransformerBridge``/``HookedTransformer`` or a plain module
            whose submodule named ``hook_name`` produces the activation.
        sae: an SAE (its inference reconstruction replaces the activation) or any callable
            mapping the activation ``(B, T, d)`` to a replacement.
        tokens: ``(N, T)`` token ids.
        hook_name: where to splice (default: the SAE's ``cfg.hook_name``).
        targets: ``(N, T)`` per-position targets with ``-100`` where not scored; default:
            next-token targets ``tokens[:, 1:]`` scored at positions ``0..T-2`` (and masked
            by ``attention_mask`` when given). Not allowed with ``objective="masked"``.
        attention_mask: ``(N, T)`` 1 at real tokens (passed to the model).
        batch_size: sequences per forward pass.
        objective: ``"next_token"`` (a causal LM, or any model with explicit ``targets``)
            or ``"masked"``: an encoder with a masked-LM head (a bridge booted from a
            ``*ForMaskedLM`` folder) is run on :func:`mask_tokens` inputs (``mask_rate`` of
            the non-special real tokens chosen with ``seed``; 80% ``[MASK]``, 10% random,
            10% unchanged) and scored on the original ids at the chosen positions; the
            three runs see the same masked inputs. A model whose checkpoint has no
            masked-LM head (e.g. the sentence-transformers MiniLM, a ``BertModel``) or a
            causal one is a ``ValueError``.
        mask_rate: fraction of candidate tokens masked (``objective="masked"``).
        seed: seed of the masking (``objective="masked"``).

    Returns:
        ``ce_clean``, ``ce_spliced``, ``ce_zero`` (mean per scored position), ``kl_spliced``
        and ``kl_zero`` (mean KL(clean || other) per scored position) and
        ``ce_loss_recovered = (ce_zero - ce_spliced) / (ce_zero - ce_clean)``, plus
        ``n_positions`` (scored positions) and ``objective``.
    """
    hook_name = _splice_hook(model, sae, tokens, hook_name, objective, attention_mask)
    tokens, targets = _scored_inputs(
        model, tokens, targets, attention_mask, objective, mask_rate, seed
    )
    replace = _replacement(sae, hook_name)

    device = model_device(model)
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
        batch, n = _batch_sums(model, tok, tgt, am, hook_name, replace)
        for key, v in batch.items():
            sums[key] += v
        count += n
    if count == 0:
        raise ValueError("no scored positions (all targets are -100)")
    return _spliced_summary(sums, count, objective)
