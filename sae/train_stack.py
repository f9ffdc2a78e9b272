"""The stacked program behind :func:`~hierlens.sae.train_saes`: SAEs of one architecture,
shape and discrete hyperparameters stacked on a leading member axis ``S`` (:class:`SAEStack`),
and one run's state (:class:`TrainState`): its stacks, batch stream, logging window,
trackers and checkpoints, with :meth:`TrainState.train_step` (one training step of every
stack on one batch: the stacked forward and backward, then the one optimizer step of
:class:`hierlens.core.optim.StackedAdamW`) and :meth:`TrainState.log_window` /
:meth:`TrainState.checkpoint_if_due` (records and checkpoints).
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path
from typing import Any

import torch

from hierlens.core import distributed as D
from hierlens.core.atomic_io import append_jsonl
from hierlens.core.device import resolve_device
from hierlens.core.optim import StackedAdamW, lr_at
from hierlens.core.trackers import MultiLogger, make_logger
from hierlens.models.tracker_paths import TrackerPaths

from .base import SAE
from .checkpoint import load_trainer_checkpoint, save_trainer_checkpoint
from .outputs import StepContext
from .sources import BatchStream, Source
from .sparse_step import uses_sparse_kernels
from .train_config import SAETrainConfig
from .workspace import Workspace

__all__ = ["SAEStack", "TrainState"]

log = logging.getLogger(__name__)


def _lr_at(cfg: SAETrainConfig, step: int, base_lr: float) -> float:
    """The learning rate of 0-based ``step`` for an SAE with peak rate ``base_lr``: linear
    warmup over ``warmup_steps``, constant, then linear decay to 0 over the last
    ``decay_fraction`` of the run ([Conerly2024] decay over the last 20%)."""
    total = cfg.total_steps
    return lr_at(
        step,
        base_lr=base_lr,
        total_steps=total,
        warmup_steps=cfg.warmup_steps,
        schedule="linear",
        decay_start=int(total * (1.0 - cfg.decay_fraction)),
    )


class SAEStack:
    """One stack of SAEs trained as batched tensors ``(S, ...)``, with its optimizer."""

    def __init__(
        self,
        members: list[int],
        saes: list[SAE],
        lrs: list[float],
        device: torch.device,
        config: SAETrainConfig,
    ):
        first = saes[members[0]]
        self.members = members
        self.cls = type(first)
        self.cfg = first.cfg
        self.lrs = [lrs[i] for i in members]  # each member's peak learning rate
        self.S = len(members)
        sparse_decode = config.sparse_decode
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
        if config.compile:
            self.fn = torch.compile(self.cls.stacked_forward)
            # A traced step cannot set .grad from its backward: gradients go through autograd.
            self.workspace = None
        self.optimizer = StackedAdamW(
            {n: self.leaves[n] for n in first.tensor_names if n in trainable},
            betas=config.betas,
            eps=config.eps,
            grad_clip=config.grad_clip,
            fused=None if config.fused is None else bool(config.fused),
        )

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


def _group_saes(saes: list[SAE]) -> list[list[int]]:
    """The indices of the SAEs of each stack (equal :meth:`SAE.stack_key`)."""
    groups: dict[tuple, list[int]] = {}
    for i, sae in enumerate(saes):
        groups.setdefault(sae.stack_key(), []).append(i)
    return list(groups.values())


def _fingerprint(saes: list[SAE], config: dict[str, Any]) -> dict[str, Any]:
    return {
        "saes": [{"class": type(s).__name__, **s.cfg.to_dict()} for s in saes],
        **config,
    }


class TrainState:
    """The state of one :func:`~hierlens.sae.train_saes` run over ``saes`` (on this rank's
    slice of every batch under ``data_parallel``), resumed from ``checkpoint_dir`` when
    ``resume``."""

    def __init__(
        self,
        saes: list[SAE],
        source: Source,
        cfg: SAETrainConfig,
        d_in: int,
        data_parallel: bool,
        checkpoint_dir: str | Path | None,
        resume: bool,
        log_dir: str | Path | None,
    ) -> None:
        self.saes, self.cfg, self.data_parallel = saes, cfg, data_parallel
        self.world = D.world_size() if data_parallel else 1
        self.lo, self.hi = D.shard_range(cfg.batch_size) if data_parallel else (0, cfg.batch_size)
        lrs = cfg.lrs(len(saes))
        self.device = dev = D.local_device(resolve_device(cfg.device))
        use_autocast = (dev.type == "cuda") if cfg.autocast is None else bool(cfg.autocast)
        self.autocast = (
            (lambda: torch.autocast(device_type=dev.type, dtype=torch.bfloat16))
            if use_autocast
            else contextlib.nullcontext
        )
        self.stream = BatchStream(
            source, d_in, cfg.batch_size, dev, seed=cfg.seed, shuffle=cfg.shuffle
        )
        self.groups = [SAEStack(m, saes, lrs, dev, cfg) for m in _group_saes(saes)]
        settings = {
            "batch_size": cfg.batch_size,
            "steps": cfg.total_steps,
            "lr": [float(v) for v in lrs],
            "betas": list(cfg.betas),
            "eps": cfg.eps,
            "warmup_steps": cfg.warmup_steps,
            "decay_fraction": cfg.decay_fraction,
            "grad_clip": cfg.grad_clip,
            "seed": cfg.seed,
            "shuffle": cfg.shuffle,
        }
        self.fingerprint = _fingerprint(saes, settings)
        self.ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.step, self.history, self.window_steps = 0, [], 0
        self.sst = torch.zeros((), device=dev)  # data variance summed over the logging window
        if resume:
            self.step, self.history, self.window_steps = load_trainer_checkpoint(
                self.ckpt, self.groups, self.fingerprint, self.sst
            )
            if self.step:
                log.info(
                    "resuming SAE training at step %d of %d from %s",
                    self.step,
                    cfg.total_steps,
                    self.ckpt,
                )
        self.tracker = MultiLogger()
        if cfg.log_to and (D.is_main() or not data_parallel):
            root = (
                log_dir if log_dir is not None else (self.ckpt / "trackers" if self.ckpt else None)
            )
            if root is None:
                raise ValueError(
                    "log_to needs log_dir or checkpoint_dir (where the trackers write)"
                )
            self.tracker = make_logger(
                cfg.log_to,
                TrackerPaths(root),
                name=Path(root).name,
                params={**self.fingerprint, "log_to": list(cfg.log_to)},
                resume=resume,
                purge_step=self.step + 1 if self.step > 0 else 0,
            )
        self.bad_input = torch.zeros((), dtype=torch.bool, device=dev)
        self.check_batches = self.stream.tensor is None  # a tensor source was checked whole
        self.start = self.step

    def train_step(self, x: torch.Tensor) -> None:
        """One training step of every stack on the batch ``x`` ``(batch_size, d_in)``:
        forward and backward (on this rank's slice, gradients averaged over the ranks), the
        optimizer step, then the decoder constraint, dead-latent trackers and the logging
        window's accumulators."""
        if self.check_batches:
            if self.step == self.start and not bool(torch.isfinite(x).all()):
                raise ValueError("activations contain NaN or inf values")
            self.bad_input |= ~torch.isfinite(x).all()
        x_all = x
        if self.data_parallel:
            x = x[self.lo : self.hi]
        total, outs = None, []
        with self.autocast():
            for g in self.groups:
                dead = None
                if g.aux_dead and hasattr(g.cfg, "aux_coefficient"):  # AuxK [Gao2024]
                    dead = g.since_fired >= self.cfg.dead_after_tokens
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
        if self.data_parallel:  # average the gradients over the ranks' equal slices
            _average_grads([p for g in self.groups for p in g.params], self.world)
        for g in self.groups:
            _project_decoder_grads(g)
            g.optimizer.step([_lr_at(self.cfg, self.step, lr) for lr in g.lrs])
            g.optimizer.zero_grad()
        with torch.no_grad():
            xf = x_all.float()
            self.sst += (xf - xf.mean(0)).pow(2).sum()
            for g, out in zip(self.groups, outs, strict=True):
                g.cls.post_step_stacked(g.cfg, {n: t.data for n, t in g.tensors.items()})
                fires = out.fires
                if fires is None:
                    codes = out.dense_codes(g.cfg.d_sae).detach()
                    fires = (codes != 0).sum(1).float()  # (S, d_sae)
                if self.data_parallel:  # firing counts of the whole batch on every rank
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
        self.step += 1
        self.window_steps += 1

    def log_window(self) -> list[dict[str, Any]]:
        """The records of the step just done when it is a logging step (written, logged and
        kept in ``history``; else ``[]``)."""
        cfg, step = self.cfg, self.step
        if not (step % cfg.log_every == 0 or step == cfg.total_steps):
            return []
        if bool(self.bad_input):
            raise ValueError(f"activations contain NaN or inf values (before step {step})")
        if self.data_parallel:
            _reduce_window(self.groups, self.world)
        records = self._records()
        self.sst.zero_()
        self.window_steps = 0
        self.history.extend(records)
        self.tracker.log_records(records, "sae")
        if self.ckpt is not None and D.is_main():
            append_jsonl(self.ckpt / "metrics.jsonl", records)
        return records

    def checkpoint_if_due(self) -> None:
        """Write the checkpoint of the step just done when one is due."""
        cfg, step = self.cfg, self.step
        every = cfg.checkpoint_every
        if self.ckpt is not None and ((every and step % every == 0) or step == cfg.total_steps):
            if D.is_main() or not self.data_parallel:
                save_trainer_checkpoint(
                    self.ckpt,
                    step,
                    self.groups,
                    self.saes,
                    self.fingerprint,
                    self.window_steps,
                    self.sst,
                )
            if self.data_parallel:
                D.barrier()

    def _records(self) -> list[dict[str, Any]]:
        """One record per SAE of the logging window that ends at this step; a
        ``FloatingPointError`` names an SAE whose loss is not finite."""
        cfg, step = self.cfg, self.step
        records = []
        rows = self.window_steps * cfg.batch_size
        sst_v = float(self.sst)
        n = max(self.window_steps, 1)
        for g in self.groups:
            loss = (g.acc["loss"] / n).tolist()
            mse = (g.acc["sse"] / max(rows, 1)).tolist()
            fvu = (g.acc["sse"] / max(sst_v, 1e-30)).tolist()
            l0 = (g.acc["l0"] / n).tolist()
            dead = (g.since_fired >= cfg.dead_after_tokens).float().mean(-1).tolist()
            dense = (g.acc["fires"] / max(rows, 1) > cfg.dense_threshold).float().mean(-1).tolist()
            terms = {k[5:]: (v / n).tolist() for k, v in g.acc.items() if k.startswith("term_")}
            g.aux_dead = any(d > 0 for d in dead)
            for j, i in enumerate(g.members):
                if not math.isfinite(loss[j]):
                    raise FloatingPointError(
                        f"SAE {i} ({type(self.saes[i]).__name__}) loss is {loss[j]} at step {step}"
                    )
                rec = {
                    "step": step,
                    "tokens": step * cfg.batch_size,
                    "sae": i,
                    "architecture": self.saes[i].name,
                    "loss": loss[j],
                    "mse": mse[j],
                    "fvu": fvu[j],
                    "l0": l0[j],
                    "dead_fraction": dead[j],
                    "dense_fraction": dense[j],
                    "lr": _lr_at(cfg, step - 1, g.lrs[j]),
                }
                rec.update({k: v[j] for k, v in terms.items() if k != "mse"})
                records.append(rec)
            g.acc = g._zero_acc(g.since_fired.device)
        records.sort(key=lambda r: r["sae"])
        return records


@torch.no_grad()
def _average_grads(params: list[torch.Tensor], world: int) -> None:
    """All-reduce the gradients (sum over ranks, then divide by their number)."""
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


@torch.no_grad()
def _reduce_window(groups: list[SAEStack], world: int) -> None:
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
def _project_decoder_grads(g: SAEStack) -> None:
    """Project decoder gradients onto the unit-norm constraint's tangent space (before the
    optimizer step clips them)."""
    if not g.cfg.unit_norm_decoder:
        return
    w = g.tensors["W_dec"]
    if w.grad is not None:
        # Row-wise <grad, w> as a batch of (1, d_in) @ (d_in, 1) products: vecdot would
        # build a weight-sized product temporary first (2.4x slower, measured).
        rows = w.reshape(-1, 1, w.shape[-1])
        along = torch.bmm(w.grad.reshape(rows.shape), rows.mT).view(*w.shape[:-1], 1)
        w.grad.addcmul_(along, w, value=-1.0)
