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
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from hierlens.core import distributed as D
from hierlens.core.atomic_io import append_jsonl
from hierlens.core.device import resolve_device
from hierlens.core.trackers import MultiLogger, make_logger
from hierlens.models.tracker_paths import TrackerPaths

from .base import SAE
from .checkpoint import load_trainer_checkpoint, save_trainer_checkpoint
from .heldout import heldout_evaluation, prepare_rows
from .outputs import StepContext
from .sources import BatchStream, Source
from .sparse_step import uses_sparse_kernels
from .train_config import SAETrainConfig
from .workspace import Workspace

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SAETrainResult:
    """What :func:`train_saes` returns.

    Attributes:
        saes: the trained SAEs (the same objects that were passed in, updated in place).
        history: one record per SAE per logging step (``step``, ``tokens``, ``sae``,
            ``loss``, ``mse``, ``fvu``, ``l0``, ``dead_fraction``, ``dense_fraction``, ``lr``
            and the architecture's loss terms), averaged over the logging window.
        steps: optimiser steps done in total. tokens: activation rows consumed in total.
        config: the settings the run used (``batch_size`` as capped by the rows).
        evaluation: one record per SAE after training, for a tensor source: ``fvu_train`` on
            its training rows beside ``fvu_heldout`` on the rows held out by
            ``config.heldout_fraction`` (see :func:`hierlens.sae.heldout.heldout_evaluation`).
    """

    saes: list[SAE]
    history: list[dict[str, Any]]
    steps: int
    tokens: int
    config: SAETrainConfig | None = None
    evaluation: list[dict[str, Any]] = dataclasses.field(default_factory=list)


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


def _validate(saes: Sequence[SAE], config: SAETrainConfig) -> tuple[list[SAE], int]:
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
    return saes, d_ins.pop()


def _config_of(config: SAETrainConfig | None, fields: dict[str, Any]) -> SAETrainConfig:
    """``config`` with keyword ``fields`` applied (a fresh :class:`SAETrainConfig` without)."""
    if config is not None and not isinstance(config, SAETrainConfig):
        raise TypeError(f"config must be an SAETrainConfig, got {type(config).__name__}")
    valid = {f.name for f in dataclasses.fields(SAETrainConfig)}
    unknown = sorted(set(fields) - valid)
    if unknown:
        raise TypeError(
            f"train_saes got unknown argument(s) {unknown}; SAETrainConfig fields: {sorted(valid)}"
        )
    if isinstance(fields.get("lr"), Sequence):
        fields["lr"] = tuple(fields["lr"])
    if config is None:
        return SAETrainConfig(**fields)
    if "steps" in fields or "tokens" in fields:  # one run length replaces the other
        fields = {"steps": None, "tokens": None, **fields}
    return config.replace(**fields)


def train_saes(
    saes: Sequence[SAE],
    source: Source,
    *,
    config: SAETrainConfig | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[list[dict[str, Any]]], None] | None = None,
    distribute: str | None = None,
    log_dir: str | Path | None = None,
    **fields: Any,
) -> SAETrainResult:
    """Train ``saes`` together on one stream of activation batches.

    Args:
        saes: SAEs of any architectures with a common ``d_in``; trained in place.
        source: activations: a tensor ``(n, d_in)``, an iterable of ``(b, d_in)`` tensors
            (an activation store's ``store.batches(...)`` plugs in here), or a callable
            (see :mod:`hierlens.sae.sources`).
        config: the optimisation settings (:class:`SAETrainConfig`: run length, batch size,
            learning rate and schedule, clipping, dead-latent settings, checkpoint cadence,
            seed, device, autocast, compile, fused Adam, sparse TopK steps).
        **fields: :class:`SAETrainConfig` fields given as keywords, applied over ``config``
            (``train_saes(saes, x, steps=100, lr=1e-3)`` builds the config from them).
        checkpoint_dir: write a checkpoint (SAEs in SAELens layout, optimiser and tracker
            state) every ``config.checkpoint_every`` steps and at the end; metrics go to
            ``checkpoint_dir/metrics.jsonl``.
        resume: continue from the latest checkpoint in ``checkpoint_dir`` (exactly: the
            result equals an uninterrupted run for tensor and re-iterable sources).
        progress: tqdm progress bar.
        callback: called with each logging step's records (raising stops training).
        distribute: under ``torchrun`` (see :mod:`hierlens.core.distributed`):
            ``"data"``: every rank computes a disjoint contiguous slice of each batch and the
            gradients are all-reduced (the same result as one process on the same batches;
            ``batch_size`` must divide by the number of processes; rank 0 writes the
            checkpoints); ``"saes"``: the SAEs are dealt out to the ranks (SAE ``i`` to rank
            ``i % world``), each rank trains its own on the same batches (each SAE ends as it
            would trained alone) and checkpoints them under ``checkpoint_dir/part-R-of-W``;
            the trained weights are then broadcast so every rank returns all SAEs. None
            (or a single process): no distribution.
        log_dir: where the trackers of ``config.log_to`` keep their files and run ids
            (default: ``checkpoint_dir/trackers``); each SAE's records are logged as
            ``sae<i>/<metric>`` at their step.

    Returns:
        A :class:`SAETrainResult`; the SAEs are updated in place.

    Raises:
        TypeError / ValueError: bad SAEs, settings or activations, before any step.
    """
    cfg = _config_of(config, fields)
    saes, d_in = _validate(saes, cfg)
    source, heldout, cfg = prepare_rows(source, cfg)  # held-out rows; batch <= rows
    if distribute not in (None, "data", "saes"):
        raise ValueError(f"distribute must be None, 'data' or 'saes', got {distribute!r}")
    if distribute is not None:
        D.init_from_env(cfg.device)
    data_parallel = distribute == "data" and D.is_distributed()
    if distribute == "saes" and D.is_distributed():
        from .distributed import train_grid_parallel

        part_cfg = cfg.replace(heldout_fraction=0.0)  # the rows were split here already
        steps, history = train_grid_parallel(
            train_saes, saes, source, part_cfg, checkpoint_dir, resume, progress, callback, log_dir
        )
        return SAETrainResult(
            saes=saes,
            history=history,
            steps=steps,
            tokens=steps * cfg.batch_size,
            config=cfg,
            evaluation=heldout_evaluation(saes, source, heldout, cfg.seed),
        )
    world = D.world_size() if data_parallel else 1
    if data_parallel:
        if cfg.batch_size % world:
            raise ValueError(
                f"distribute='data' needs batch_size ({cfg.batch_size}) divisible by the "
                f"{world} processes"
            )
        coupled = sorted({s.name for s in saes if s.name == "batch_topk"})
        if coupled:
            raise ValueError(
                f"distribute='data' cannot split {coupled} SAEs: their top-k runs over the "
                "whole batch; use distribute='saes'"
            )
        progress = progress and D.is_main()
    lo, hi = D.shard_range(cfg.batch_size) if data_parallel else (0, cfg.batch_size)
    total_steps = cfg.total_steps
    lrs = cfg.lrs(len(saes))
    if cfg.checkpoint_every is not None and checkpoint_dir is None:
        raise ValueError("checkpoint_every needs checkpoint_dir")
    batch_size, max_grad_norm, log_every = cfg.batch_size, cfg.max_grad_norm, cfg.log_every
    warmup_steps, decay_fraction, checkpoint_every = (
        cfg.warmup_steps,
        cfg.decay_fraction,
        cfg.checkpoint_every,
    )
    autocast, fused, sparse_decode = cfg.autocast, cfg.fused, cfg.sparse_decode
    dev = D.local_device(resolve_device(cfg.device))
    use_autocast = (dev.type == "cuda") if autocast is None else bool(autocast)
    use_fused = True if fused is None else bool(fused)
    stream = BatchStream(source, d_in, batch_size, dev, seed=cfg.seed, shuffle=cfg.shuffle)

    groups = [
        _Group(m, saes, float(lrs[m[0]]), dev, sparse_decode)
        for m in _group_saes(saes, [float(v) for v in lrs])
    ]
    for g in groups:
        if cfg.compile:
            g.fn = torch.compile(g.cls.stacked_forward)
            # A traced step cannot set .grad from its backward: gradients go through autograd.
            g.workspace = None
    opt = torch.optim.Adam(
        [{"params": g.params, "lr": g.lr} for g in groups],
        betas=cfg.betas,
        eps=cfg.eps,
        fused=True if use_fused else None,
        foreach=None if use_fused else True,
    )
    config = {
        "batch_size": batch_size,
        "steps": total_steps,
        "lr": [float(v) for v in lrs],
        "betas": list(cfg.betas),
        "eps": cfg.eps,
        "warmup_steps": warmup_steps,
        "decay_fraction": decay_fraction,
        "max_grad_norm": max_grad_norm,
        "seed": cfg.seed,
        "shuffle": cfg.shuffle,
    }
    fingerprint = _fingerprint(saes, config)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    start_step, history, window_steps = 0, [], 0
    sst = torch.zeros((), device=dev)  # data variance summed over the logging window
    if resume:
        if ckpt is None:
            raise ValueError("resume=True needs checkpoint_dir")
        start_step, history, window_steps = load_trainer_checkpoint(
            ckpt, groups, opt, fingerprint, sst
        )
        if start_step:
            log.info(
                "resuming SAE training at step %d of %d from %s", start_step, total_steps, ckpt
            )

    autocast_ctx = (
        (lambda: torch.autocast(device_type=dev.type, dtype=torch.bfloat16))
        if use_autocast
        else contextlib.nullcontext
    )
    tracker = MultiLogger()
    if cfg.log_to and (D.is_main() or not data_parallel):
        root = log_dir if log_dir is not None else (ckpt / "trackers" if ckpt else None)
        if root is None:
            raise ValueError("log_to needs log_dir or checkpoint_dir (where the trackers write)")
        tracker = make_logger(
            cfg.log_to,
            TrackerPaths(root),
            name=Path(root).name,
            params={**fingerprint, "log_to": list(cfg.log_to)},
            resume=resume,
            purge_step=start_step + 1 if start_step > 0 else 0,
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
            x_all = x
            if data_parallel:
                x = x[lo:hi]
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
            if data_parallel:  # average the gradients over the ranks' equal slices
                _average_grads([p for g in groups for p in g.params], world)
            for g in groups:
                _prepare_grads(g, max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                xf = x_all.float()
                sst += (xf - xf.mean(0)).pow(2).sum()
                for g, out in zip(groups, outs):
                    g.cls.post_step_stacked(g.cfg, {n: t.data for n, t in g.tensors.items()})
                    fires = out.fires
                    if fires is None:
                        codes = out.dense_codes(g.cfg.d_sae).detach()
                        fires = (codes != 0).sum(1).float()  # (S, d_sae)
                    if data_parallel:  # firing counts of the whole batch on every rank
                        fires = fires.clone()
                        D.all_reduce_sum([fires])
                    g.since_fired = torch.where(fires > 0, 0, g.since_fired + x_all.shape[0])
                    g.acc["loss"] += out.loss.detach().float()
                    g.acc["sse"] += out.terms["mse"].detach().float() * x.shape[0]
                    g.acc["l0"] += fires.sum(-1) / x_all.shape[0]
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
                if data_parallel:
                    _reduce_window(groups, world)
                records = _log(
                    groups,
                    saes,
                    step,
                    batch_size,
                    window_steps,
                    sst,
                    opt,
                    cfg.dead_after_tokens,
                    cfg.dense_threshold,
                )
                sst.zero_()
                window_steps = 0
                history.extend(records)
                tracker.log_records(records, "sae")
                if ckpt is not None and D.is_main():
                    append_jsonl(ckpt / "metrics.jsonl", records)
                bar.set_postfix(loss=f"{sum(r['loss'] for r in records) / len(records):.4g}")
                if callback is not None:
                    callback(records)
            if ckpt is not None and (
                (checkpoint_every and step % checkpoint_every == 0) or step == total_steps
            ):
                if D.is_main() or not data_parallel:
                    save_trainer_checkpoint(
                        ckpt, step, groups, saes, opt, fingerprint, window_steps, sst
                    )
                if data_parallel:
                    D.barrier()
    finally:
        bar.close()
        tracker.close()
        for g in groups:  # also after an exception: the SAEs hold the last completed step
            g.sync_back(saes)
    return SAETrainResult(
        saes=saes,
        history=history,
        steps=step,
        tokens=step * batch_size,
        config=cfg,
        evaluation=heldout_evaluation(saes, source, heldout, cfg.seed),
    )


@torch.no_grad()
def _average_grads(params: list[torch.Tensor], world: int) -> None:
    """All-reduce the gradients (sum over ranks, then divide by their number)."""
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


@torch.no_grad()
def _reduce_window(groups: list[_Group], world: int) -> None:
    """Make the logging window's accumulators those of the whole batches: per-rank means
    (loss and loss terms) are averaged, per-rank sums (squared error) added; firing counts
    were reduced every step."""
    for g in groups:
        keys = ["loss", "sse"] + sorted(k for k in g.acc if k.startswith("term_"))
        tensors = [g.acc[k] for k in keys]
        D.all_reduce_sum(tensors)
        for k in keys:
            if k != "sse":
                g.acc[k] /= world


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
                "architecture": saes[i].name,
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
