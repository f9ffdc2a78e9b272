"""The one optimizer step of hierlens: AdamW over a stack of members.

A *stack* holds ``S`` members of one shape (models, SAEs, structural probes) as tensors with
a leading member axis ``(S, *shape)``. :class:`StackedAdamW` takes one optimizer step for
all of them at once:

1. each member's gradients are clipped to its own global norm, with the formula of
   ``torch.nn.utils.clip_grad_norm_`` (:func:`clip_grad_norms_`);
2. AdamW ([Loshchilov2019]: Adam [Kingma2015] with decoupled weight decay) updates each
   member with its own learning rate, betas, epsilon and weight decay, through PyTorch's public functional AdamW
   (``torch.optim.adamw.adamw``; its fused kernel where the device and dtype have one, else
   the multi-tensor one). Members that share every setting and their step count are
   updated by one call.

Members never interact (the norms are per member and AdamW is elementwise), so each follows
the trajectory ``torch.optim.AdamW`` with ``clip_grad_norm_`` gives it alone. One member
(``S = 1``) may also be trained on a module's own parameters, without a member axis
(``stacked=False``).

:func:`lr_at` is the one learning-rate schedule (warmup, hold, decay). The optimizer state
is checkpointed the same way everywhere: :meth:`StackedAdamW.state_dict` is a flat
``{key: tensor}`` of every member's step count and moments, with the member axis, which any
stack of the same tensors loads with :meth:`StackedAdamW.load_state_dict` (a whole stack's
or one member's rows).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import torch
from torch.optim.adamw import adamw

from hierlens.core.validate import check_choice

__all__ = ["SCHEDULES", "StackedAdamW", "clip_grad_norms_", "lr_at", "state_dict_problem"]

SCHEDULES = ("cosine", "linear", "constant")


def lr_at(
    step: int,
    *,
    base_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    schedule: str = "cosine",
    min_lr_ratio: float = 0.0,
    decay_start: int | None = None,
) -> float:
    """Learning rate of the optimizer step that takes a member from ``step`` to ``step + 1``.

    The rate holds at ``base_lr`` until ``decay_start`` (default: ``warmup_steps``), then
    decays, ``"cosine"`` or ``"linear"``, to ``min_lr_ratio * base_lr`` at ``total_steps``
    (``"constant"``: no decay); during the first ``warmup_steps`` steps it is also scaled by
    the linear warmup factor ``(step + 1) / warmup_steps``. A pure function of the step, so
    resuming needs no scheduler state. Transformer training warms up and decays from the end
    of the warmup (cosine, [Loshchilov2017]); SAE training holds the rate and decays linearly
    to 0 over the final share of the run ([Conerly2024]).
    """
    check_choice("schedule", schedule, SCHEDULES)
    start = warmup_steps if decay_start is None else decay_start
    lr = base_lr
    if schedule != "constant" and step >= start:
        progress = min((step - start) / max(total_steps - start, 1), 1.0)
        floor = base_lr * min_lr_ratio
        if schedule == "linear":
            lr = floor + (base_lr - floor) * (1.0 - progress)
        else:
            lr = floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if warmup_steps > 0 and step < warmup_steps:
        lr = lr * (step + 1) / warmup_steps
    return lr


def _per_member(value, n: int, name: str, one=lambda v: not isinstance(v, Sequence)) -> list:
    """``value`` for each of ``n`` members: one value for all (``one(value)``), or a
    sequence of ``n`` values."""
    if one(value):
        return [value] * n
    if len(value) != n:
        raise ValueError(f"{name}: {len(value)} values for {n} members")
    return list(value)


def _member_norms(grad: torch.Tensor) -> torch.Tensor:
    """``(S,)`` 2-norms of each member's slice of ``grad`` ``(S, *shape)``, in at least
    float32, read in one pass whatever the layout."""
    dtype = torch.promote_types(grad.dtype, torch.float32)
    if grad.dim() == 1:
        return grad.abs().to(dtype)
    return torch.linalg.vector_norm(grad, dim=tuple(range(1, grad.dim())), dtype=dtype)


@torch.no_grad()
def clip_grad_norms_(
    tensors: Sequence[torch.Tensor],
    max_norms: Sequence[float | None],
    *,
    limits: torch.Tensor | None = None,
) -> None:
    """Scale each member's gradients (the ``.grad`` of ``tensors``) in place so that their
    global 2-norm is at most its ``max_norms[s]`` (``None``: that member is not clipped).

    ``tensors``: ``(S, *shape)`` with ``S = len(max_norms)``; those without a gradient are
    skipped. Member ``s`` is scaled by ``min(1, max_norm / (norm + 1e-6))`` where ``norm`` is
    the 2-norm of the per-tensor 2-norms of its slices: what
    ``torch.nn.utils.clip_grad_norm_`` does to one model's gradients, and for one member
    (``S = 1``, the member axis optional) that function itself. ``limits``: ``max_norms``
    as a tensor on the gradients' device (``inf`` where ``None``), to skip building it.
    """
    held = [t for t in tensors if t.grad is not None]
    if all(c is None for c in max_norms) or not held:
        return
    n = len(max_norms)
    if n == 1:
        torch.nn.utils.clip_grad_norm_(held, max_norms[0], foreach=True)
        return
    if limits is None:
        limits = torch.tensor(
            [math.inf if c is None else float(c) for c in max_norms], device=held[0].device
        )
    grads = [t.grad for t in held]
    total = torch.linalg.vector_norm(torch.stack([_member_norms(g) for g in grads]), dim=0)
    coef = (limits / (total + 1e-6)).clamp(max=1.0)
    coef = torch.where(torch.isinf(limits), torch.ones_like(coef), coef)
    for g in grads:
        g.mul_(coef.view(n, *([1] * (g.dim() - 1))).to(g.dtype))


def _fused_supported(tensor: torch.Tensor) -> bool:
    """Whether PyTorch has a fused AdamW kernel for ``tensor``'s device and dtype (asked
    through the public constructor's own check)."""
    probe = torch.empty(0, device=tensor.device, dtype=tensor.dtype, requires_grad=True)
    try:
        torch.optim.AdamW([probe], fused=True)
    except (RuntimeError, ValueError):
        return False
    return True


def _adamw(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    *,
    done: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    fused: bool,
) -> None:
    """One AdamW update of ``params`` in place, after ``done`` earlier updates, through
    ``torch.optim.adamw.adamw`` (the function ``torch.optim.AdamW.step`` runs)."""
    where = params[0].device if fused else torch.device("cpu")
    steps = list(torch.full((len(params),), float(done), device=where).unbind())
    adamw(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        [],
        steps,
        foreach=None if fused else True,
        fused=fused or None,
        amsgrad=False,
        beta1=betas[0],
        beta2=betas[1],
        lr=lr,
        weight_decay=weight_decay,
        eps=eps,
        maximize=False,
    )


def state_dict_problem(state: Mapping[str, torch.Tensor]) -> str | None:
    """What makes ``state`` not a :meth:`StackedAdamW.state_dict` of ``M`` members, in words
    (``None`` when it is one): ``"step"`` ``(M,)`` holding whole numbers ``>= 0``, and for
    each parameter name both ``"exp_avg.<name>"`` and ``"exp_avg_sq.<name>"``, floating-point
    tensors of one shape ``(M, *shape)``. Whether they fit a given stack is
    :meth:`StackedAdamW.load_state_dict`'s check."""
    step = state.get("step")
    if not isinstance(step, torch.Tensor) or step.dim() != 1 or len(step) == 0:
        return "expected 'step', a 1-d tensor with one entry per member"
    if not (
        step.is_floating_point()
        and bool(torch.isfinite(step).all())
        and bool((step >= 0).all())
        and bool((step == step.round()).all())
    ):
        return "'step' must hold whole numbers >= 0"
    moments: dict[str, dict[str, torch.Tensor]] = {"exp_avg": {}, "exp_avg_sq": {}}
    for key, value in state.items():
        if key == "step":
            continue
        prefix, _, name = key.partition(".")
        if prefix not in moments or not name:
            return f"unexpected key {key!r} (expected 'exp_avg.<name>' or 'exp_avg_sq.<name>')"
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            return f"{key!r} must be a floating-point tensor"
        if value.dim() == 0 or value.shape[0] != len(step):
            return f"{key!r} has shape {tuple(value.shape)}, expected ({len(step)}, ...)"
        moments[prefix][name] = value
    first, second = moments["exp_avg"], moments["exp_avg_sq"]
    if set(first) != set(second):
        odd = sorted(set(first) ^ set(second))
        return f"parameters {odd[:4]} lack one of their two moments"
    for name, value in first.items():
        if value.shape != second[name].shape:
            return f"the two moments of {name!r} differ in shape"
    return None


class StackedAdamW:
    """AdamW [Loshchilov2019] with per-member gradient clipping for ``S`` members stacked on a
    leading axis.

    Args:
        params: ``{name: tensor}``, each ``(S, *shape)`` (``stacked=True``) or one member's
            own tensor (``stacked=False``, ``S = 1``, e.g. a module's parameters); updated in
            place from their ``.grad`` by :meth:`step`.
        betas, eps, weight_decay, grad_clip: one value for every member, or one per member
            (``grad_clip=None``: not clipped).
        decay: the names that get weight decay (``None``: all of them).
        fused: use the fused AdamW kernel (``None``: where PyTorch has one for the tensors'
            device and dtype; else the multi-tensor implementation).

    The state (moments ``(S, *shape)`` and one step count per member) starts at zero;
    :meth:`state_dict` / :meth:`load_state_dict` save and restore it, for the whole stack
    or some of its members.
    """

    def __init__(
        self,
        params: Mapping[str, torch.Tensor],
        *,
        stacked: bool = True,
        betas: tuple[float, float] | Sequence[tuple[float, float]] = (0.9, 0.999),
        eps: float | Sequence[float] = 1e-8,
        weight_decay: float | Sequence[float] = 0.0,
        grad_clip: float | None | Sequence[float | None] = None,
        decay: Collection[str] | None = None,
        fused: bool | None = None,
    ) -> None:
        if not params:
            raise ValueError("StackedAdamW needs at least one tensor")
        first = next(iter(params.values()))
        self.stacked = stacked
        self.members = int(first.shape[0]) if stacked else 1
        if stacked and any(t.dim() == 0 or t.shape[0] != self.members for t in params.values()):
            raise ValueError(f"every stacked tensor needs the member axis of {self.members}")
        n = self.members
        self.settings = [
            (tuple(float(b) for b in betas_), float(eps_), float(wd))
            for betas_, eps_, wd in zip(
                _per_member(betas, n, "betas", one=lambda b: isinstance(b[0], (int, float))),
                _per_member(eps, n, "eps"),
                _per_member(weight_decay, n, "weight_decay"),
                strict=True,
            )
        ]
        self.grad_clip = _per_member(grad_clip, n, "grad_clip")
        self.decay = set(params) if decay is None else set(decay)
        self.fused = _fused_supported(first) if fused is None else bool(fused)
        self.done = [0] * n  # updates each member has had
        with torch.no_grad():
            self.exp_avg = {k: torch.zeros_like(t) for k, t in params.items()}
            self.exp_avg_sq = {k: torch.zeros_like(t) for k, t in params.items()}
        self._bind(params)

    def _bind(self, params: Mapping[str, torch.Tensor]) -> None:
        self.params = dict(params)
        self._limits = torch.tensor(
            [math.inf if c is None else float(c) for c in self.grad_clip],
            device=next(iter(self.params.values())).device,
        )
        self._rows: dict[int, tuple] = {}  # each member's views, built when first needed

    def _row(self, r: int, names: list[str]) -> tuple[list, list, list]:
        key = (r, tuple(names))
        if key not in self._rows:
            self._rows[key] = tuple(
                [d[k][r] for k in names] for d in (self.params, self.exp_avg, self.exp_avg_sq)
            )
        return self._rows[key]

    def zero_grad(self) -> None:
        """Drop the gradients (``.grad = None``)."""
        for t in self.params.values():
            t.grad = None

    @torch.no_grad()
    def step(self, lr: float | Sequence[float]) -> None:
        """Clip every member's gradients (``.grad`` of the tensors) and update it with AdamW
        at learning rate ``lr`` (one for all members or one per member). Tensors without a
        gradient are left alone, as ``torch.optim`` does."""
        lrs = _per_member(lr, self.members, "lr")
        names = [k for k, t in self.params.items() if t.grad is not None]
        if not names:
            return
        if any(c is not None for c in self.grad_clip):
            clip_grad_norms_(list(self.params.values()), self.grad_clip, limits=self._limits)
        grads = {k: self.params[k].grad for k in names}
        groups: dict[tuple, list[int]] = {}
        for r in range(self.members):
            groups.setdefault((float(lrs[r]), self.settings[r], self.done[r]), []).append(r)
        classes = [
            (wd_on, [k for k in names if (k in self.decay) == wd_on]) for wd_on in (True, False)
        ]
        for (lr_, (betas, eps, wd), done), rows in groups.items():
            for wd_on, keys in classes:
                if not keys:
                    continue
                if len(rows) == self.members:  # everyone: the whole tensors
                    lists = tuple(
                        [d[k] for k in keys] for d in (self.params, self.exp_avg, self.exp_avg_sq)
                    )
                    g = [grads[k] for k in keys]
                else:
                    lists = ([], [], [])
                    g = []
                    for r in rows:
                        for out, part in zip(lists, self._row(r, keys), strict=True):
                            out.extend(part)
                        g.extend(grads[k][r] for k in keys)
                _adamw(
                    lists[0],
                    g,
                    lists[1],
                    lists[2],
                    done=done,
                    lr=lr_,
                    betas=betas,
                    eps=eps,
                    weight_decay=wd if wd_on else 0.0,
                    fused=self.fused,
                )
        self.done = [d + 1 for d in self.done]

    def _stacked(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.stacked else t.unsqueeze(0)

    def state_dict(self, rows: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """The state of members ``rows`` (default: all), each tensor with the member axis:
        ``"step"`` ``(len(rows),)`` (updates done, float32), ``"exp_avg.<name>"`` and
        ``"exp_avg_sq.<name>"`` ``(len(rows), *shape)`` (copies)."""
        rows = list(range(self.members)) if rows is None else list(rows)
        out = {"step": torch.tensor([float(self.done[r]) for r in rows], dtype=torch.float32)}
        for prefix, moments in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
            for k, t in moments.items():
                out[f"{prefix}.{k}"] = self._stacked(t.detach())[rows]
        return out

    @torch.no_grad()
    def load_state_dict(
        self, state: Mapping[str, torch.Tensor], rows: Sequence[int] | None = None
    ) -> None:
        """Restore members ``rows`` (default: all) from a :meth:`state_dict` of as many
        members; a ``ValueError`` names missing keys or wrong shapes."""
        rows = list(range(self.members)) if rows is None else list(rows)
        want = {"step"} | {f"{p}.{k}" for p in ("exp_avg", "exp_avg_sq") for k in self.params}
        missing = sorted(want - set(state))
        if missing:
            raise ValueError(f"optimizer state lacks {missing[:4]} (of {len(missing)} keys)")
        steps = state["step"].reshape(-1)
        if len(steps) != len(rows):
            raise ValueError(f"optimizer state holds {len(steps)} members, expected {len(rows)}")
        for prefix, moments in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
            for k, t in moments.items():
                value = state[f"{prefix}.{k}"]
                dst = self._stacked(t)
                if tuple(value.shape) != (len(rows), *dst.shape[1:]):
                    raise ValueError(
                        f"optimizer state {prefix}.{k} has shape {tuple(value.shape)}, expected "
                        f"{(len(rows), *dst.shape[1:])}"
                    )
                dst[rows] = value.to(dst.device, dst.dtype)
        for r, s in zip(rows, steps.tolist(), strict=True):
            self.done[r] = int(s)

    @torch.no_grad()
    def keep(self, rows: Sequence[int], params: Mapping[str, torch.Tensor]) -> None:
        """Keep members ``rows`` only (in that order), now stored in ``params`` (the same
        names, ``(len(rows), *shape)``)."""
        if not self.stacked:
            raise ValueError("a StackedAdamW over unstacked tensors holds one member")
        rows = list(rows)
        idx = torch.tensor(rows, dtype=torch.long, device=next(iter(params.values())).device)
        self.exp_avg = {k: t.index_select(0, idx) for k, t in self.exp_avg.items()}
        self.exp_avg_sq = {k: t.index_select(0, idx) for k, t in self.exp_avg_sq.items()}
        self.settings = [self.settings[r] for r in rows]
        self.grad_clip = [self.grad_clip[r] for r in rows]
        self.done = [self.done[r] for r in rows]
        self.members = len(rows)
        self._bind(params)
