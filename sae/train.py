"""The fused multi-SAE trainer.

:func:`train_saes` trains a list of SAEs on one stream of activation batches, reading each
batch once. SAEs of the same architecture, shape and discrete hyperparameters (see
:meth:`SAE.stack_key`) are stacked: their tensors get a leading member axis and one batched
forward/backward trains them all, which is what makes sweeps cheap (the many small matmuls
of a Python loop over SAEs become a few large ones, and the per-step overhead is paid once).
Members of a stack never interact: gradient clipping is per member, Adam is elementwise, and
losses are summed, so each member follows exactly the trajectory it would follow alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from hierlens.models.atomic_io import append_jsonl
from hierlens.models.device import resolve_device

from .base import SAE, StepContext
from .checkpoint import load_checkpoint, save_checkpoint
from .sources import BatchStream, Source
from .sparse_step import uses_sparse_kernels
from .workspace import Workspace


@dataclasses.dataclass
class TrainResult:
    """What :func:`train_saes` returns.

    Attributes:
        saes: the trained SAEs (the same objects that were passed in, updated in place).
        history: one record per SAE per logging step (``step``, ``tokens``, ``sae``,
            ``loss``, ``mse``, ``fvu``, ``l0``, ``dead_fraction``, ``dense_fraction``, ``lr``
            and the architecture's loss terms), averaged over the logging window.
        steps: optimiser steps done in total. tokens: activation rows consumed in total.
    """

    saes: list[SAE]
    history: list[dict[str, Any]]
    steps: int
    tokens: int


def lr_multiplier(step: int, steps: int, warmup_steps: int, decay_fraction: float) -> float:
    """Learning-rate factor of 0-based ``step``: linear warmup over ``warmup_steps`` steps,
    constant, then linear decay to 0 over the last ``decay_fraction`` of the run (Conerly et
    al. 2024 decay over the last 20%)."""
    mult = 1.0
    if warmup_steps > 0:
        mult = min(1.0, (step + 1) / warmup_steps)
    decay_start = int(steps * (1.0 - decay_fraction))
    if decay_fraction > 0 and step >= decay_start:
        mult *= (steps - step) / max(1, steps - decay_start)
    return mult


class _Group:
    """One stack of SAEs trained as batched tensors."""

    def __init__(
        self,
        members: list[int],
        saes: list[SAE],
        lr: float,
        device: torch.device,
        sparse_decode: bool | None,
    ):
        first = saes[members[0]]
        self.members = members
        self.cls = type(first)
        self.cfg = first.cfg
        self.lr = lr
        self.S = len(members)
        k = getattr(self.cfg, "k", None)
        if sparse_decode is None:
            sparse_decode = k is not None and 16 * k <= self.cfg.d_sae
        self.sparse = bool(sparse_decode)
        # TopK steps on the sparse CPU kernels compute W_enc's gradient as (S, d_sae, d_in):
        # train W_enc stored that way (no transposition per step, contiguous for fused Adam)
        # and keep the steps' large temporaries in a workspace.
        transposed = (
            {"W_enc"}
            if self.sparse and self.cls.sparse_cpu_step and uses_sparse_kernels(device, first.dtype)
            else set()
        )
        self.workspace = Workspace()
        trainable = first.trainable_names()
        # tensors: in the SAEs' shapes, for everything but the forward (views of the leaves
        # for the transposed ones); leaves: what Adam trains and gradients reach.
        self.tensors: dict[str, torch.Tensor] = {}
        self.leaves: dict[str, torch.Tensor] = {}
        self.transposed = transposed
        for name in first.tensor_names:
            t = torch.stack([getattr(saes[i], name).detach() for i in members]).to(device).clone()
            leaf = t.transpose(1, 2).contiguous() if name in transposed else t
            if name in trainable:
                leaf.requires_grad_(True)
            self.leaves[name] = leaf
            self.tensors[name] = leaf.detach().transpose(1, 2) if name in transposed else leaf
        self.params = [self.leaves[n] for n in first.tensor_names if n in trainable]
        self.hp = {
            n: torch.tensor([float(getattr(saes[i].cfg, n)) for i in members], device=device)
            for n in first.continuous_hparams
        }
        d_sae = self.cfg.d_sae
        self.since_fired = torch.zeros(self.S, d_sae, dtype=torch.long, device=device)
        self.acc = self._zero_acc(device)
        self.aux_dead = False  # any member has a dead latent (refreshed at logging steps)
        self.fn = self.cls.stacked_forward

    def forward_tensors(self) -> dict[str, torch.Tensor]:
        """The stacked tensors in the SAEs' shapes, connected to the leaves for autograd."""
        return {
            n: (leaf.transpose(1, 2) if n in self.transposed else leaf)
            for n, leaf in self.leaves.items()
        }

    def _zero_acc(self, device: torch.device) -> dict[str, torch.Tensor]:
        z = torch.zeros(self.S, device=device)
        acc = {"loss": z.clone(), "sse": z.clone(), "l0": z.clone()}
        acc["fires"] = torch.zeros(self.S, self.cfg.d_sae, device=device)
        return acc

    def sync_back(self, saes: list[SAE]) -> None:
        with torch.no_grad():
            for j, i in enumerate(self.members):
                for name, t in self.tensors.items():
                    dst = getattr(saes[i], name)
                    dst.data.copy_(t[j].detach().to(dst.device, dst.dtype))


def _group_saes(saes: list[SAE], lrs: list[float]) -> list[list[int]]:
    groups: dict[tuple, list[int]] = {}
    for i, sae in enumerate(saes):
        groups.setdefault((sae.stack_key(), lrs[i]), []).append(i)
    return list(groups.values())


def _fingerprint(saes: list[SAE], config: dict[str, Any]) -> dict[str, Any]:
    return {
        "saes": [{"class": type(s).__name__, **s.cfg.to_dict()} for s in saes],
        **config,
    }


def _validate(saes: Sequence[SAE], batch_size: int, steps: int | None, tokens: int | None):
    if isinstance(saes, SAE):
        raise TypeError("train_saes takes a list of SAEs; wrap a single SAE as [sae]")
    saes = list(saes)
    if not saes:
        raise ValueError("train_saes needs at least one SAE")
    for s in saes:
        if not isinstance(s, SAE):
            raise TypeError(f"expected hierlens SAEs, got {type(s).__name__}")
    if len({id(s) for s in saes}) != len(saes):
        raise ValueError("the same SAE object appears twice in saes")
    d_ins = {s.d_in for s in saes}
    if len(d_ins) != 1:
        raise ValueError(
            f"all SAEs must read the same activation width, got d_in values {sorted(d_ins)}"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if (steps is None) == (tokens is None):
        raise ValueError("give exactly one of steps= or tokens=")
    n = steps if steps is not None else tokens
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"steps/tokens must be a positive int, got {n!r}")
    return saes, d_ins.pop(), steps if steps is not None else math.ceil(tokens / batch_size)


def train_saes(
    saes: Sequence[SAE],
    source: Source,
    *,
    steps: int | None = None,
    tokens: int | None = None,
    batch_size: int = 4096,
    lr: float | Sequence[float] = 3e-4,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    warmup_steps: int = 0,
    decay_fraction: float = 0.2,
    max_grad_norm: float | None = 1.0,
    dead_after_tokens: int = 1_000_000,
    dense_threshold: float = 0.1,
    log_every: int = 100,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    shuffle: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
    autocast: bool | None = None,
    compile: bool = False,
    fused: bool | None = None,
    sparse_decode: bool | None = None,
    progress: bool = True,
    callback: Callable[[list[dict[str, Any]]], None] | None = None,
) -> TrainResult:
    """Train ``saes`` together on one stream of activation batches.

    Args:
        saes: SAEs of any architectures with a common ``d_in``; trained in place.
        source: activations: a tensor ``(n, d_in)``, an iterable of ``(b, d_in)`` tensors
            (an activation store's ``store.batches(...)`` plugs in here), or a callable
            (see :mod:`hierlens.sae.sources`).
        steps / tokens: run length, exactly one (``tokens`` rounds up to whole batches).
        batch_size: rows per step. lr: Adam learning rate, one for all or one per SAE.
        betas, eps: Adam's. warmup_steps, decay_fraction: see :func:`lr_multiplier`.
        max_grad_norm: per-SAE gradient-norm clip (``None``: off).
        dead_after_tokens: a latent that has not fired for this many tokens counts as dead
            in the metrics. dense_threshold: a latent firing on more than this fraction of a
            logging window's rows counts as dense.
        log_every: steps between metric records (the only host-device syncs of the loop).
        checkpoint_dir, checkpoint_every: write a checkpoint (SAEs in SAELens layout,
            optimiser and tracker state) every ``checkpoint_every`` steps and at the end;
            metrics go to ``checkpoint_dir/metrics.jsonl``.
        resume: continue from the latest checkpoint in ``checkpoint_dir`` (exactly: the
            result equals an uninterrupted run for tensor and re-iterable sources).
        shuffle, seed: order of rows drawn from a tensor source.
        device: ``None``: CUDA when available, else CPU.
        autocast: bf16 autocast of the forward pass (``None``: on CUDA only; TopK steps on
            the sparse CPU kernels stay in the weights' dtype).
        compile: ``torch.compile`` each stack's forward.
        fused: fused Adam (``None``: on; PyTorch has fused Adam kernels for CUDA and CPU).
        sparse_decode: TopK steps through the ``k`` active latents only (``None``: when
            ``16 k <= d_sae``): on the CPU the whole step runs on sparse kernels
            (:mod:`hierlens.sae.sparse_step`; steps with AuxK active stay dense; ``W_enc``
            is trained stored as ``(S, d_sae, d_in)``, the layout of its sparse gradient,
            and large temporaries are kept between steps), on CUDA the decoder gathers the
            active rows.
        progress: tqdm progress bar.
        callback: called with each logging step's records (raising stops training).

    Returns:
        A :class:`TrainResult`; the SAEs are updated in place.
    """
    saes, d_in, total_steps = _validate(saes, batch_size, steps, tokens)
    lrs = list(lr) if isinstance(lr, Sequence) else [lr] * len(saes)
    if len(lrs) != len(saes) or any(not (isinstance(v, (int, float)) and v > 0) for v in lrs):
        raise ValueError("lr must be a positive number or one positive number per SAE")
    if not 0 <= decay_fraction <= 1:
        raise ValueError(f"decay_fraction must be in [0, 1], got {decay_fraction}")
    if max_grad_norm is not None and not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm}")
    if not isinstance(log_every, int) or log_every < 1:
        raise ValueError(f"log_every must be a positive int, got {log_every!r}")
    if checkpoint_every is not None and checkpoint_dir is None:
        raise ValueError("checkpoint_every needs checkpoint_dir")
    dev = resolve_device(device)
    use_autocast = (dev.type == "cuda") if autocast is None else bool(autocast)
    use_fused = True if fused is None else bool(fused)
    stream = BatchStream(source, d_in, batch_size, dev, seed=seed, shuffle=shuffle)

    groups = [
        _Group(m, saes, float(lrs[m[0]]), dev, sparse_decode)
        for m in _group_saes(saes, [float(v) for v in lrs])
    ]
    for g in groups:
        if compile:
            g.fn = torch.compile(g.cls.stacked_forward)
            # A traced step cannot set .grad from its backward: gradients go through autograd.
            g.workspace = None
    opt = torch.optim.Adam(
        [{"params": g.params, "lr": g.lr} for g in groups],
        betas=betas,
        eps=eps,
        fused=True if use_fused else None,
        foreach=None if use_fused else True,
    )
    config = {
        "batch_size": batch_size,
        "steps": total_steps,
        "lr": [float(v) for v in lrs],
        "betas": list(betas),
        "eps": eps,
        "warmup_steps": warmup_steps,
        "decay_fraction": decay_fraction,
        "max_grad_norm": max_grad_norm,
        "seed": seed,
        "shuffle": shuffle,
    }
    fingerprint = _fingerprint(saes, config)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    start_step, history, window_steps = 0, [], 0
    sst = torch.zeros((), device=dev)  # data variance summed over the logging window
    if resume:
        if ckpt is None:
            raise ValueError("resume=True needs checkpoint_dir")
        start_step, history, window_steps = load_checkpoint(ckpt, groups, opt, fingerprint, sst)

    autocast_ctx = (
        (lambda: torch.autocast(device_type=dev.type, dtype=torch.bfloat16))
        if use_autocast
        else contextlib.nullcontext
    )
    bad_input = torch.zeros((), dtype=torch.bool, device=dev)
    check_batches = stream.tensor is None
    step = start_step
    bar = tqdm(total=total_steps, initial=start_step, disable=not progress, desc="train_saes")
    batches = stream.batches(start_step)
    try:
        while step < total_steps:
            try:
                x = next(batches)
            except StopIteration:
                warnings.warn(
                    f"the activation source ran out after {step} of {total_steps} steps; "
                    "stopping early",
                    stacklevel=2,
                )
                break
            if check_batches:  # a tensor source was checked whole, up front
                if step == start_step and not bool(torch.isfinite(x).all()):
                    raise ValueError("activations contain NaN or inf values")
                bad_input |= ~torch.isfinite(x).all()
            mult = lr_multiplier(step, total_steps, warmup_steps, decay_fraction)
            for pg, g in zip(opt.param_groups, groups):
                pg["lr"] = g.lr * mult
            total = None
            outs = []
            with autocast_ctx():
                for g in groups:
                    dead = None
                    if g.aux_dead and hasattr(g.cfg, "dead_window"):
                        dead = g.since_fired >= g.cfg.dead_window
                    ctx = StepContext(
                        training=True,
                        update_buffers=True,
                        dead_mask=dead,
                        sparse_decode=g.sparse,
                        workspace=g.workspace,
                    )
                    out = g.fn(g.cfg, g.forward_tensors(), g.hp, x, ctx)
                    total = out.loss.sum() if total is None else total + out.loss.sum()
                    outs.append(out)
            total.backward()
            for g in groups:
                _prepare_grads(g, max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                xf = x.float()
                sst += (xf - xf.mean(0)).pow(2).sum()
                for g, out in zip(groups, outs):
                    g.cls.post_step_stacked(g.cfg, {n: t.data for n, t in g.tensors.items()})
                    fires = out.fires
                    if fires is None:
                        codes = out.dense_codes(g.cfg.d_sae).detach()
                        fires = (codes != 0).sum(1).float()  # (S, d_sae)
                    g.since_fired = torch.where(fires > 0, 0, g.since_fired + x.shape[0])
                    g.acc["loss"] += out.loss.detach().float()
                    g.acc["sse"] += out.terms["mse"].detach().float() * x.shape[0]
                    g.acc["l0"] += fires.sum(-1) / x.shape[0]
                    g.acc["fires"] += fires
                    for name, v in out.terms.items():
                        key = "term_" + name
                        if key not in g.acc:
                            g.acc[key] = torch.zeros_like(g.acc["loss"])
                        g.acc[key] += v.detach().float()
            step += 1
            window_steps += 1
            bar.update(1)
            if step % log_every == 0 or step == total_steps:
                if bool(bad_input):
                    raise ValueError(f"activations contain NaN or inf values (before step {step})")
                records = _log(
                    groups,
                    saes,
                    step,
                    batch_size,
                    window_steps,
                    sst,
                    opt,
                    dead_after_tokens,
                    dense_threshold,
                )
                sst.zero_()
                window_steps = 0
                history.extend(records)
                if ckpt is not None:
                    append_jsonl(ckpt / "metrics.jsonl", records)
                bar.set_postfix(loss=f"{sum(r['loss'] for r in records) / len(records):.4g}")
                if callback is not None:
                    callback(records)
            if ckpt is not None and (
                (checkpoint_every and step % checkpoint_every == 0) or step == total_steps
            ):
                save_checkpoint(ckpt, step, groups, saes, opt, fingerprint, window_steps, sst)
    finally:
        bar.close()
        for g in groups:  # also after an exception: the SAEs hold the last completed step
            g.sync_back(saes)
    return TrainResult(saes=saes, history=history, steps=step, tokens=step * batch_size)


@torch.no_grad()
def _prepare_grads(g: _Group, max_grad_norm: float | None) -> None:
    """Project decoder gradients onto the unit-norm constraint's tangent space, then clip
    each member's gradient norm (the formula of ``torch.nn.utils.clip_grad_norm_``)."""
    if g.cfg.unit_norm_decoder:
        w = g.tensors["W_dec"]
        if w.grad is not None:
            # Row-wise <grad, w> as a batch of (1, d_in) @ (d_in, 1) products: vecdot would
            # build a weight-sized product temporary first (2.4x slower, measured).
            rows = w.reshape(-1, 1, w.shape[-1])
            along = torch.bmm(w.grad.reshape(rows.shape), rows.mT).view(*w.shape[:-1], 1)
            w.grad.addcmul_(along, w, value=-1.0)
    if max_grad_norm is None:
        return
    grads = [p.grad for p in g.params if p.grad is not None]
    if not grads:
        return
    # Per-member squared norms in one pass each (no copies, whatever the gradient's layout).
    sq = sum(
        torch.linalg.vector_norm(
            gr, dim=tuple(range(1, gr.dim())), dtype=torch.promote_types(gr.dtype, torch.float32)
        )
        ** 2
        for gr in grads
    )
    coef = (max_grad_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    for gr in grads:
        gr.mul_(coef.view(-1, *([1] * (gr.dim() - 1))).to(gr.dtype))


def _log(groups, saes, step, batch_size, window_steps, sst, opt, dead_after, dense_threshold):
    records = []
    rows = window_steps * batch_size
    sst_v = float(sst)
    for gi, g in enumerate(groups):
        lr_now = opt.param_groups[gi]["lr"]
        n = max(window_steps, 1)
        loss = (g.acc["loss"] / n).tolist()
        mse = (g.acc["sse"] / max(rows, 1)).tolist()
        fvu = (g.acc["sse"] / max(sst_v, 1e-30)).tolist()
        l0 = (g.acc["l0"] / n).tolist()
        dead = (g.since_fired >= dead_after).float().mean(-1).tolist()
        dense = (g.acc["fires"] / max(rows, 1) > dense_threshold).float().mean(-1).tolist()
        terms = {k[5:]: (v / n).tolist() for k, v in g.acc.items() if k.startswith("term_")}
        if hasattr(g.cfg, "dead_window"):
            g.aux_dead = bool((g.since_fired >= g.cfg.dead_window).any())
        for j, i in enumerate(g.members):
            if not math.isfinite(loss[j]):
                raise FloatingPointError(
                    f"SAE {i} ({type(saes[i]).__name__}) loss is {loss[j]} at step {step}"
                )
            rec = {
                "step": step,
                "tokens": step * batch_size,
                "sae": i,
                "architecture": saes[i].architecture,
                "loss": loss[j],
                "mse": mse[j],
                "fvu": fvu[j],
                "l0": l0[j],
                "dead_fraction": dead[j],
                "dense_fraction": dense[j],
                "lr": lr_now,
            }
            rec.update({k: v[j] for k, v in terms.items() if k != "mse"})
            records.append(rec)
        g.acc = g._zero_acc(g.since_fired.device)
    records.sort(key=lambda r: r["sae"])
    return records
