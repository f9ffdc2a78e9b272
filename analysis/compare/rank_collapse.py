"""Rank collapse of token representations with depth [Dong2021].

For one sequence ``X`` ``(n_tokens, d)`` the residual is ``res(X) = X - 1xᵀ`` with ``x``
minimising ``‖X - 1xᵀ‖``, and :func:`rank_residual` reports ``‖res(X)‖ / ‖X‖``:

- ``norm="fro"``: Frobenius norm; closed form ``x`` = the column mean.
- ``norm="l1_inf"``: the paper's composite norm ``‖M‖_{1,∞} = sqrt(‖M‖₁ ‖M‖_∞)`` (``‖M‖₁``
  the largest absolute column sum, ``‖M‖_∞`` the largest absolute row sum). ``f(x)=‖·‖₁``
  and ``g(x)=‖·‖_∞`` are convex and piecewise linear, so their Pareto front is a convex
  polyline and ``f·g`` (concave along each edge) is minimised at one of its vertices; the
  vertices are found exactly by weighted-sum linear programs (``scipy.optimize.linprog``,
  dichotomic search between the two lexicographic extremes). One small LP per vertex: use
  it on short sequences.

:func:`rank_collapse` runs a model and reports the residual of every layer's output, with
the paper's path decomposition on TransformerLens models (hooks rewrite each block's sums).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from hierlens.core.validate import check_choice

PATHS = ("full", "attention", "attention+skip", "attention+mlp")


def _l1_inf_min(x: np.ndarray) -> float:
    """``min_v sqrt(‖X - 1vᵀ‖₁ ‖X - 1vᵀ‖_∞)`` for ``X`` ``(n, d)`` (exact, by LPs)."""
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix, hstack, vstack

    n, d = x.shape
    nv = d + n * d  # v, then u_ij >= |x_ij - v_j|
    rows = np.arange(n * d)
    vcols = np.tile(np.arange(d), n)
    one = np.ones(n * d)
    # x_ij - v_j <= u_ij and v_j - x_ij <= u_ij
    a1 = hstack([coo_matrix((-one, (rows, vcols)), (n * d, d)), -_eye(n * d)])
    a2 = hstack([coo_matrix((one, (rows, vcols)), (n * d, d)), -_eye(n * d)])
    col_sum = coo_matrix((one, (vcols, d + rows)), (d, nv))  # Σ_i u_ij (column j)
    row_sum = coo_matrix((one, (np.repeat(np.arange(n), d), d + rows)), (n, nv))
    # extra variables F (max column sum) and G (max row sum)
    a_ub = vstack(
        [
            hstack([a1, coo_matrix((n * d, 2))]),
            hstack([a2, coo_matrix((n * d, 2))]),
            hstack([col_sum, coo_matrix((-np.ones(d), (np.arange(d), np.zeros(d))), (d, 2))]),
            hstack([row_sum, coo_matrix((-np.ones(n), (np.arange(n), np.ones(n))), (n, 2))]),
        ]
    ).tocsr()
    b_ub = np.concatenate([-x.ravel(), x.ravel(), np.zeros(d + n)])
    bounds = [(None, None)] * d + [(0, None)] * (n * d + 2)

    def solve(wf: float, wg: float, cap: tuple[int, float] | None = None) -> tuple[float, float]:
        c = np.zeros(nv + 2)
        c[nv], c[nv + 1] = wf, wg
        a, b = a_ub, b_ub
        if cap is not None:
            extra = np.zeros((1, nv + 2))
            extra[0, nv + cap[0]] = 1.0
            a, b = vstack([a_ub, coo_matrix(extra)]).tocsr(), np.append(b_ub, cap[1])
        res = linprog(c, A_ub=a, b_ub=b, bounds=bounds, method="highs")
        if res.status != 0:
            raise RuntimeError(f"l1_inf residual: linear program failed ({res.message})")
        return float(res.x[nv]), float(res.x[nv + 1])

    def lexi(first: int) -> tuple[float, float]:
        w = (1.0, 0.0) if first == 0 else (0.0, 1.0)
        best = solve(*w)[first]
        return solve(w[1], w[0], cap=(first, best * (1 + 1e-9) + 1e-12))

    a, b = lexi(0), lexi(1)  # (f, g) at the min-f and min-g ends of the front
    vertices = {a, b}
    stack = [(a, b)]
    while stack:
        p, q = stack.pop()
        wf, wg = p[1] - q[1], q[0] - p[0]  # normal to the segment p-q
        if wf <= 1e-12 or wg <= 1e-12:
            continue
        r = solve(wf, wg)
        if wf * r[0] + wg * r[1] < wf * p[0] + wg * p[1] - 1e-9 * (1 + abs(wf * p[0])):
            vertices.add(r)
            stack += [(p, r), (r, q)]
    return float(np.sqrt(max(0.0, min(f * g for f, g in vertices))))


def _eye(m: int):
    from scipy.sparse import identity

    return identity(m, format="coo")


def rank_residual(x: torch.Tensor, norm: str = "fro", relative: bool = True) -> torch.Tensor:
    """Residual of ``x`` ``(..., n_tokens, d)`` from its best token-uniform rank-1
    approximation ``1 vᵀ`` [Dong2021], one value per leading index (shape ``x.shape[:-2]``).

    ``norm="fro"`` (batched, any device) or ``"l1_inf"`` (exact LPs on the CPU, one per
    sequence); ``relative`` divides by ``‖x‖`` in the same norm (0 where ``x`` is 0)."""
    if norm not in ("fro", "l1_inf"):
        raise ValueError(f"norm must be 'fro' or 'l1_inf', got {norm!r}")
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[-2] < 1 or x.shape[-1] < 1:
        raise ValueError("expected a (..., n_tokens, d) tensor with n_tokens, d >= 1")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("rank_residual: x contains NaN or inf")
    if norm == "fro":
        res = (x - x.mean(-2, keepdim=True)).flatten(-2).norm(dim=-1)
        full = x.flatten(-2).norm(dim=-1)
    else:
        flat = x.detach().reshape(-1, *x.shape[-2:]).double().cpu().numpy()
        res = torch.tensor([_l1_inf_min(m) for m in flat]).reshape(x.shape[:-2])
        a = x.detach().double().cpu().abs()
        full = (a.sum(-2).amax(-1) * a.sum(-1).amax(-1)).sqrt()
    if not relative:
        return res
    return torch.where(full > 0, res / full.clamp_min(1e-300), torch.zeros_like(res))


def _is_bridge(model: torch.nn.Module) -> bool:
    return hasattr(model, "run_with_hooks") and hasattr(model, "blocks")


def rank_collapse(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    *,
    path: str = "full",
    modules: Sequence[str] | None = None,
    norm: str = "fro",
) -> torch.Tensor:
    """Relative residual (:func:`rank_residual`) of every layer's token representations.

    On a TransformerLens model (a ``TransformerBridge`` from
    :func:`hierlens.models.build_transformer`, or a ``HookedTransformer``) the layers are
    the embedding (``blocks.0.hook_resid_pre``) and each block's output
    (``blocks.{i}.hook_resid_post``), and ``path`` selects the paper's decomposition; each
    block ``i`` is rewritten through hooks, the attention output ``A`` and MLP output ``M``
    being read from ``hook_attn_out``/``hook_mlp_out`` and the block input ``X`` from
    ``hook_resid_pre``:

    - ``"full"``: the model as it is (``X + A + M``);
    - ``"attention"``: pure attention, skip connections and MLPs removed: the block's output
      is ``A`` (the MLP input ``hook_resid_mid`` is ``A`` too, its output is discarded);
    - ``"attention+skip"``: ``X + A`` (MLPs removed);
    - ``"attention+mlp"``: MLPs kept, skips removed: ``hook_resid_mid := A`` (the MLP reads
      ``A``) and the output is ``M`` (needs a model with MLPs).

    Layer norms stay where the model has them. On any other ``nn.Module`` only
    ``path="full"`` is possible and ``modules`` names the submodules whose outputs
    ``(batch, n_tokens, d)`` (or the first element of a tuple output) are measured.

    Args:
        inputs: what the model's forward takes, e.g. token ids ``(batch, n_tokens)``.
        norm: ``"fro"`` or ``"l1_inf"`` (see :func:`rank_residual`).

    Returns:
        ``(batch, n_layers)`` residuals; for TransformerLens models ``n_layers = 1 + n_blocks``.
    """
    check_choice("path", path, PATHS)
    if norm not in ("fro", "l1_inf"):
        raise ValueError(f"norm must be 'fro' or 'l1_inf', got {norm!r}")
    outs: list[torch.Tensor] = []
    if not _is_bridge(model):
        if path != "full":
            raise ValueError(
                f"path={path!r} needs a TransformerLens model; a plain nn.Module supports "
                "only path='full'"
            )
        if not modules:
            raise ValueError("a plain nn.Module needs modules=[names of its layers]")
        named = dict(model.named_modules())
        missing = [m for m in modules if m not in named]
        if missing:
            raise ValueError(f"unknown module(s) {missing}; the model has {list(named)[:20]}...")
        handles = [
            named[m].register_forward_hook(
                lambda _m, _i, o: outs.append((o[0] if isinstance(o, tuple) else o).detach())
            )
            for m in modules
        ]
        try:
            with torch.no_grad():
                model(inputs)
        finally:
            for h in handles:
                h.remove()
    else:
        n_blocks = len(model.blocks)
        has_mlp = "blocks.0.hook_mlp_out" in model.hook_dict
        if path == "attention+mlp" and not has_mlp:
            raise ValueError("path='attention+mlp' needs a model with MLPs (attn_only model)")
        saved: dict[str, torch.Tensor] = {}
        hooks = [("blocks.0.hook_resid_pre", lambda t, hook: outs.append(t.detach()))]
        for i in range(n_blocks):
            hooks += _block_hooks(i, path, has_mlp, saved, outs)
        with torch.no_grad():
            model.run_with_hooks(inputs, fwd_hooks=hooks)
    if not outs:
        raise ValueError("no layer output was recorded")
    stacked = torch.stack([o.float() if norm == "fro" else o for o in outs], 1)
    if stacked.ndim != 4:
        raise ValueError(f"layer outputs must be (batch, n_tokens, d), got {tuple(outs[0].shape)}")
    return rank_residual(stacked, norm=norm).cpu()


def _block_hooks(i: int, path: str, has_mlp: bool, saved: dict, outs: list) -> list:
    pre = f"blocks.{i}"

    def keep(key):
        def f(t, hook):
            saved[key] = t
            return t

        return f

    def resid_mid(t, hook):
        return saved["attn"] if path in ("attention", "attention+mlp") else t

    def resid_post(t, hook):
        if path == "attention":
            t = saved["attn"]
        elif path == "attention+skip":
            t = saved["x"] + saved["attn"]
        elif path == "attention+mlp":
            t = saved["mlp"]
        outs.append(t.detach())
        return t

    hooks = [(f"{pre}.hook_resid_pre", keep("x")), (f"{pre}.hook_attn_out", keep("attn"))]
    if has_mlp:
        hooks += [(f"{pre}.hook_resid_mid", resid_mid), (f"{pre}.hook_mlp_out", keep("mlp"))]
    return hooks + [(f"{pre}.hook_resid_post", resid_post)]
