"""Batched L2-regularised logistic regression: many independent binary problems in one program.

Each problem ``p`` has its own design matrix ``X[p]`` (``n`` rows, ``k`` columns), labels
``y[p]`` in {0, 1} and sample weights ``s[p]``, and minimises scikit-learn's
``LogisticRegression`` objective (same ``C`` convention, intercept not penalised)::

    0.5 * ||w||^2 + C * sum_i s_i * log(1 + exp(-(2 y_i - 1) (x_i . w + b)))

``class_weight="balanced"`` multiplies ``s_i`` by ``S / (2 S_c)`` where ``S`` is the total weight
and ``S_c`` the weight of the example's class, as scikit-learn does. Rows of weight 0 take no
part, so a 0/1 weight is how a problem uses a subset of shared rows.

The solver is a damped Newton method with a batched Cholesky solve of the ``(k+1, k+1)``
Hessians and a backtracking (Armijo) line search per problem: for the small ``k`` of sparse
probing [Gurnee2023] it converges in a handful of
iterations to machine precision, on CPU or GPU. Cost per iteration is ``O(P n k^2)``.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from hierlens.core.device import resolve_device, resolve_dtype
from hierlens.core.validate import check_int, check_number

__all__ = [
    "LogisticFit",
    "all_finite",
    "balanced_weights",
    "fit_logistic",
    "fit_logistic_rows",
    "logistic_loss",
]

# Designs wider than this many rows get a contiguous transposed copy for the Hessians
# (measured on CPU: batched GEMM with the strided operand is slower from about 16 rows up).
_CONTIGUOUS_FROM = 15


@dataclasses.dataclass
class LogisticFit:
    """The result of :func:`fit_logistic` for ``P`` problems.

    Attributes:
        coef: ``(P, k)`` weights.
        intercept: ``(P,)`` intercepts (zeros without ``fit_intercept``).
        loss: ``(P,)`` weighted mean log loss on the training rows (the data term only,
            ``sum_i s_i l_i / sum_i s_i`` with the class-balanced weights).
        objective: ``(P,)`` the penalised objective divided by ``C * sum_i s_i``.
        n_iter: Newton iterations run.
        converged: ``(P,)`` bool, gradient below ``tol`` (or no further decrease possible).
    """

    coef: torch.Tensor
    intercept: torch.Tensor
    loss: torch.Tensor
    objective: torch.Tensor
    n_iter: int
    converged: torch.Tensor


def balanced_weights(y: torch.Tensor, sample_weight: torch.Tensor) -> torch.Tensor:
    """scikit-learn's ``class_weight="balanced"`` for binary labels, per problem.

    ``y`` and ``sample_weight`` are ``(P, n)``; returns ``sample_weight * S / (2 S_c)`` where
    ``S_c`` is the total weight of the row's class (0 where a class has no weight).
    """
    pos = (sample_weight * y).sum(-1, keepdim=True)
    tot = sample_weight.sum(-1, keepdim=True)
    neg = tot - pos
    w_pos = torch.where(pos > 0, tot / (2 * pos.clamp_min(1e-30)), torch.zeros_like(pos))
    w_neg = torch.where(neg > 0, tot / (2 * neg.clamp_min(1e-30)), torch.zeros_like(neg))
    return sample_weight * torch.where(y > 0.5, w_pos, w_neg)


def all_finite(t: torch.Tensor) -> bool:
    """Whether every entry of ``t`` is finite, in one summing pass in the common case.

    A finite sum implies finite entries (NaN and inf propagate); only when the sum is not
    finite (which overflow alone can also cause) are the entries checked one by one.
    """
    if t.is_floating_point() and bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def logistic_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Elementwise log loss of logits ``z`` for labels ``y`` in {0, 1} (numerically stable)."""
    return torch.nn.functional.softplus(z) - y * z


def _as_batched(X, y, sample_weight, device, dtype, check=True):
    X = torch.as_tensor(X)
    if not (X.is_floating_point() or X.dtype in (torch.int32, torch.int64, torch.bool)):
        raise TypeError(f"X must be a real-valued tensor, got dtype {X.dtype}")
    if X.ndim == 2:
        X = X[None]
    if X.ndim != 3:
        raise ValueError(f"X must be (n, k) or (P, n, k), got shape {tuple(X.shape)}")
    P, n, k = X.shape
    y = torch.as_tensor(y)
    if y.ndim == 1:
        y = y[None].expand(P, -1)
    if tuple(y.shape) != (P, n):
        raise ValueError(f"y must be (n,) or (P, n) = {(P, n)}, got shape {tuple(y.shape)}")
    if sample_weight is None:
        s = torch.ones(P, n, dtype=dtype, device=device)
    else:
        s = torch.as_tensor(sample_weight)
        if s.ndim == 1:
            s = s[None].expand(P, -1)
        if tuple(s.shape) != (P, n):
            raise ValueError(
                f"sample_weight must be (n,) or (P, n) = {(P, n)}, got shape {tuple(s.shape)}"
            )
    X = X.to(device=device, dtype=dtype)
    y = y.to(device=device, dtype=dtype)
    s = s.to(device=device, dtype=dtype)
    if not check:
        return X, y, s
    if not all_finite(X):
        raise ValueError("X contains NaN or infinite values")
    if not ((y == 0) | (y == 1)).all():
        raise ValueError("y must hold binary labels 0/1")
    if not all_finite(s) or (s < 0).any():
        raise ValueError("sample_weight must be finite and non-negative")
    if (s.sum(-1) <= 0).any():
        raise ValueError("every problem needs a positive total sample weight")
    return X, y, s


def fit_logistic(
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    C: float = 1.0,
    sample_weight: torch.Tensor | None = None,
    class_weight: str | None = None,
    fit_intercept: bool = True,
    max_iter: int = 100,
    tol: float = 1e-10,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    check_input: bool = True,
) -> LogisticFit:
    """Fit ``P`` independent L2-regularised logistic regressions at once (damped Newton).

    Args:
        X: ``(P, n, k)`` stacked design matrices (or ``(n, k)`` for one problem).
        y: ``(P, n)`` or ``(n,)`` labels in {0, 1}.
        C: inverse regularisation strength, as in scikit-learn (``> 0``, ``inf`` allowed
            only when the data are not separable).
        sample_weight: ``(P, n)`` or ``(n,)`` non-negative weights (0 = row not used).
        class_weight: ``None`` or ``"balanced"`` (scikit-learn's weighted heuristic).
        fit_intercept: fit an unpenalised intercept.
        max_iter: maximum Newton iterations.
        tol: stop when the largest gradient entry of the normalised objective (penalised
            objective divided by ``C * sum(s)``) is below ``tol``.
        device: where to compute (``None``: CUDA when available, else the CPU).
        dtype: compute dtype (default float64; float32 is faster and good to ~1e-4).
        init: optional starting point ``(coef (P, k), intercept (P,))`` (a warm start; the
            default starts from zero weights and the intercept-only solution).
        check_input: validate ``X``, ``y`` and the weights (NaN/inf, binary labels); callers
            that already validated them may skip the passes over the data.

    Returns:
        A :class:`LogisticFit` with tensors on ``device``.
    """
    _check_penalty(C, class_weight)
    check_int("max_iter", max_iter)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, default=torch.float64)
    X, y, s = _as_batched(X, y, sample_weight, dev, dt, check_input)
    P, n, k = X.shape
    # Feature-major layout (P, m, n): contiguous rows for the batched products below.
    Xt = X.transpose(1, 2)
    if fit_intercept:
        Xt = torch.cat([Xt, torch.ones(P, 1, n, dtype=dt, device=dev)], dim=1)
    return fit_logistic_rows(
        Xt.contiguous(),
        y,
        s,
        C=C,
        class_weight=class_weight,
        fit_intercept=fit_intercept,
        max_iter=max_iter,
        tol=tol,
        init=init,
    )


def _starting_point(init, sn, y, P: int, m: int, k: int, fit_intercept: bool, dt, dev):
    """The Newton iterations' start ``beta (P, m)``: the given ``init`` (a warm start), else
    zero weights and, with an intercept, the intercept-only optimum (the log-odds of the
    weighted positive rate under the normalised weights ``sn``)."""
    beta = torch.zeros(P, m, dtype=dt, device=dev)
    if init is not None:
        beta[:, :k] = torch.as_tensor(init[0]).to(device=dev, dtype=dt).reshape(P, k)
        if fit_intercept:
            beta[:, k] = torch.as_tensor(init[1]).to(device=dev, dtype=dt).reshape(P)
    elif fit_intercept:
        pos = (sn * y).sum(-1).clamp(1e-6, 1 - 1e-6)
        beta[:, k] = torch.log(pos / (1 - pos))
    return beta


def _line_search(state: _NewtonState, beta, f, v, step, slope, final, done):
    """Backtracking (Armijo) line search along the Newton ``step``, all problems at once
    from ``t = 1``, halving ``t`` for the problems not yet accepted (at most 30 trials).

    Problems already ``done`` are left as they are; ``final`` ones take the full step.
    Returns the new ``beta``, objective ``f``, signed logits ``v`` and the mask of problems
    whose step was accepted."""
    t = torch.ones_like(f)
    accepted = done.clone()
    new_beta, new_f, new_v = beta, f, v
    for trial in range(30):
        cand = beta + t[:, None] * step
        fc, vc = state.objective(cand)
        ok = ~accepted & (final | ((fc <= f + 1e-4 * t * slope) & (fc < f)))
        if trial == 0 and bool((ok | accepted).all()):
            new_beta, new_f, new_v = cand, fc, vc  # the common case: full steps
            accepted = accepted | ok
            break
        new_beta = torch.where(ok[:, None], cand, new_beta)
        new_f = torch.where(ok, fc, new_f)
        new_v = torch.where(ok[:, None], vc, new_v)
        accepted = accepted | ok
        if bool(accepted.all()):
            break
        t = torch.where(accepted, t, t * 0.5)
    return new_beta, new_f, new_v, accepted


def fit_logistic_rows(
    Xt: torch.Tensor,
    y: torch.Tensor,
    s: torch.Tensor,
    *,
    C: float = 1.0,
    class_weight: str | None = None,
    fit_intercept: bool = True,
    max_iter: int = 100,
    tol: float = 1e-10,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> LogisticFit:
    """The solver behind :func:`fit_logistic`, on validated tensors in feature-major layout.

    ``Xt`` is ``(P, m, n)``: row ``j`` of problem ``p`` is feature ``j`` over the ``n`` rows,
    and with ``fit_intercept`` the last row is all ones (the intercept's column). ``y`` and
    ``s`` are ``(P, n)`` on ``Xt``'s device and dtype. Nothing is checked here.
    """
    dev, dt = Xt.device, Xt.dtype
    if class_weight == "balanced":
        s = balanced_weights(y, s)
    P, m, n = Xt.shape
    k = m - 1 if fit_intercept else m
    S = s.sum(-1)
    sn = s / S[:, None]  # normalised weights: the data term is a weighted mean
    lam = (0.0 if math.isinf(C) else 1.0 / C) / S[:, None]
    reg = torch.ones(m, dtype=dt, device=dev)
    if fit_intercept:
        reg[-1] = 0.0
    lam_reg = lam * reg  # (P, m) diagonal of the penalty's Hessian
    eye = torch.eye(m, dtype=dt, device=dev)
    jitter = 1e-12 if dt == torch.float64 else 1e-6
    eps = torch.finfo(dt).eps
    # With v = (1 - 2y) z for logits z = beta . x, a row's loss is softplus(v), its gradient
    # with respect to z is (1 - 2y) sigmoid(v) and its curvature sigmoid(v) (1 - sigmoid(v)).
    sign = 1.0 - 2.0 * y
    signed_sn = sign * sn
    # Batched GEMM with a transposed (strided) operand is slow on CPU for wider designs;
    # one contiguous copy serves every Hessian of the fit.
    contiguous = m > _CONTIGUOUS_FROM
    XT = Xt.transpose(1, 2).contiguous() if contiguous else Xt.transpose(1, 2)

    beta = _starting_point(init, sn, y, P, m, k, fit_intercept, dt, dev)
    # The state of the problems still iterated (all at first); converged problems are moved
    # to the result once they are a quarter of the batch, so that later iterations only
    # touch the data of the others.
    state = _NewtonState(Xt, XT, sign, sn, signed_sn, lam_reg)
    result_beta = beta.clone()
    result_f = torch.empty(P, dtype=dt, device=dev)
    result_done = torch.zeros(P, dtype=torch.bool, device=dev)
    ids = torch.arange(P, device=dev)
    f, v = state.objective(beta)
    done = torch.zeros(P, dtype=torch.bool, device=dev)
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 (n_iter is reported)
        prob = torch.sigmoid(v)
        grad = state.gradient(prob, beta)
        done = done | (grad.abs().amax(-1) <= tol)
        if bool(done.all()):
            break
        if 4 * int(done.sum()) >= len(done):
            fin, keep = done.nonzero()[:, 0], (~done).nonzero()[:, 0]
            result_beta[ids[fin]], result_f[ids[fin]], result_done[ids[fin]] = (
                beta[fin],
                f[fin],
                True,
            )
            ids, state = ids[keep], state.select(keep, contiguous)
            beta, f, v, prob, grad, done = (t[keep] for t in (beta, f, v, prob, grad, done))
        L = state.hessian_cholesky(prob, eye, jitter)
        step = -torch.cholesky_solve(grad[..., None], L)[..., 0]
        step = torch.where(done[:, None], torch.zeros_like(step), step)
        slope = (grad * step).sum(-1)  # minus the squared Newton decrement
        # Once the predicted decrease (half the squared Newton decrement) is at the
        # resolution of the objective, take the full Newton step and stop.
        final = ~done & (-slope <= 16 * eps * f.abs().clamp_min(1.0))
        new_beta, new_f, new_v, accepted = _line_search(state, beta, f, v, step, slope, final, done)
        # A problem whose line search finds no decrease is at the precision limit.
        done = done | final | ~accepted
        beta, f, v = new_beta, new_f, new_v
    result_beta[ids], result_f[ids], result_done[ids] = beta, f, done
    beta, f, done = result_beta, result_f, result_done
    coef = beta[:, :k]
    loss = f - 0.5 * (lam_reg * beta * beta).sum(-1)
    intercept = beta[:, k] if fit_intercept else torch.zeros(P, dtype=dt, device=dev)
    return LogisticFit(coef, intercept, loss, f, n_iter, done)


class _NewtonState:
    """The per-problem data of :func:`fit_logistic_rows`'s Newton iterations, restricted
    to the problems still iterated: designs ``Xt (P, m, n)`` and their transpose ``XT``,
    label signs, normalised weights (plain and signed) and the penalty's diagonal."""

    def __init__(self, Xt, XT, sign, sn, signed_sn, lam_reg):
        self.Xt, self.XT, self.sign, self.sn = Xt, XT, sign, sn
        self.signed_sn, self.lam_reg = signed_sn, lam_reg

    def select(self, keep: torch.Tensor, contiguous: bool) -> _NewtonState:
        """The state of problems ``keep`` only (their data copied out)."""
        Xt = self.Xt.index_select(0, keep)
        XT = self.XT.index_select(0, keep) if contiguous else Xt.transpose(1, 2)
        return _NewtonState(
            Xt,
            XT,
            *(t.index_select(0, keep) for t in (self.sign, self.sn, self.signed_sn, self.lam_reg)),
        )

    def objective(self, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The penalised objective ``(P,)`` at ``beta`` and the signed logits ``v (P, n)``."""
        v = torch.bmm(beta[:, None, :], self.Xt)[:, 0].mul_(self.sign)
        softplus = torch.nn.functional.softplus(v)
        data = torch.bmm(softplus[:, None, :], self.sn[:, :, None])[:, 0, 0]
        return data + 0.5 * (self.lam_reg * beta * beta).sum(-1), v

    def gradient(self, prob: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """The objective's gradient ``(P, m)``, from ``prob = sigmoid(v)``."""
        # (1, n) @ (n, m) per problem: faster on CPU than the equivalent (m, n) @ (n, 1).
        data = torch.bmm((self.signed_sn * prob)[:, None, :], self.Xt.transpose(1, 2))[:, 0]
        return data + self.lam_reg * beta

    def hessian_cholesky(self, prob: torch.Tensor, eye: torch.Tensor, jitter: float):
        """Cholesky factors of the objective's Hessians ``(P, m, m)``."""
        h = torch.addcmul(prob, prob, prob, value=-1.0).mul_(self.sn)  # sn p (1 - p)
        H = torch.bmm(self.Xt * h[:, None, :], self.XT)
        H = H + torch.diag_embed(self.lam_reg) + jitter * eye
        L, info = torch.linalg.cholesky_ex(H)
        if bool((info != 0).any()):
            bad = info != 0
            L[bad] = torch.linalg.cholesky(H[bad] + 1e-6 * eye)
        return L


def _check_penalty(C, class_weight) -> None:
    """Reject an L2 probe's settings that are not a positive ``C`` and a ``class_weight`` of
    None or "balanced"."""
    check_number("C", C, strict=True, finite=False)
    if class_weight not in (None, "balanced"):
        raise ValueError(f"class_weight must be None or 'balanced', got {class_weight!r}")
