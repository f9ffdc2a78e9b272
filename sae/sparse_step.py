"""A TopK SAE training step that touches only the ``k`` active latents of each row.

In a TopK SAE [Gao2024] only the encoder's forward product needs every latent: the
top-k selection has to see all pre-activations. Every other product of a training step is
k-sparse: the decoder forward ``codes @ W_dec``, the decoder-weight gradient
``codes^T @ g``, the code gradient ``g @ W_dec^T`` (needed only at the active latents) and
the encoder-weight gradient ``x^T @ g_pre``. :func:`sparse_topk_step` computes them with
sparse CSR kernels (``torch.sparse.mm`` and ``torch.sparse.sampled_addmm``), so a step costs
one dense product plus ``O(B k d_in)`` work instead of five dense products. ``S`` stacked
SAEs share one block-diagonal sparse matrix (member ``s``'s latents are columns
``s * d_sae ...``), so the whole stack runs as single sparse products.

The selection itself is :func:`hierlens.sae.topk_select.grouped_topk` (exact, faster than
``torch.topk`` on wide rows). Given a :class:`~hierlens.sae.workspace.Workspace`, the step
keeps its large tensors (the pre-activations, the augmented encoder weight, the weight
gradients) between calls instead of zero-filling fresh pages for them at every step (see
:mod:`hierlens.sae.workspace`).
"""

from __future__ import annotations

import warnings

import torch

from .topk_select import grouped_topk
from .workspace import Workspace

__all__ = [
    "selection_preacts",
    "sparse_topk_step",
    "uses_sparse_kernels",
]


def uses_sparse_kernels(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether :func:`sparse_topk_step` runs for weights on ``device`` in ``dtype``: on the
    CPU, in float32 or float64 (CUDA keeps the gather-based decoding of
    :func:`hierlens.sae.base.sparse_decode`)."""
    return torch.device(device).type == "cpu" and dtype in (torch.float32, torch.float64)


def _csr(values: torch.Tensor, columns: torch.Tensor, n_cols: int) -> torch.Tensor:
    """A CSR matrix with ``k`` entries per row: ``values``/``columns`` ``(R, k)``."""
    R, k = columns.shape
    crow = torch.arange(0, R * k + 1, k, device=columns.device)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the kernels we use are not
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            crow, columns.reshape(-1), values.reshape(-1), size=(R, n_cols)
        )


def _spmm(
    sparse: torch.Tensor, dense: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``sparse @ dense`` written into ``out`` (``None``: a fresh uninitialised tensor);
    ``torch.sparse.mm`` zero-fills a temporary and copies it, which costs more than the
    product itself here."""
    if out is None:
        out = dense.new_empty(sparse.shape[0], dense.shape[1])
    return torch.addmm(out, sparse, dense, beta=0.0, out=out)


class _Transposer:
    """The transpose of a sparsity pattern with ``k`` entries per row, as CSR: sorting the
    entries by column once serves every matrix with that pattern."""

    def __init__(self, columns: torch.Tensor, n_cols: int) -> None:
        R, k = columns.shape
        flat = columns.reshape(-1)
        # int32 keys sort in half the time of int64 (measured); the order is the same
        keys = flat.to(torch.int32) if n_cols <= torch.iinfo(torch.int32).max else flat
        self.order = torch.argsort(keys, stable=True)
        counts = torch.bincount(flat, minlength=n_cols)
        self.crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        self.cols = torch.div(self.order, k, rounding_mode="floor")  # the entry's row
        self.shape = (n_cols, R)

    def permute(self, values: torch.Tensor) -> torch.Tensor:
        """Entry values ``(R, k)`` in the transpose's (column-major) order, flat."""
        return values.reshape(-1)[self.order]

    def csr(self, permuted: torch.Tensor) -> torch.Tensor:
        """The transposed CSR matrix with values already in its order (see :meth:`permute`)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(self.crow, self.cols, permuted, size=self.shape)


class _SparseTopK(torch.autograd.Function):
    """``(vals, recon)`` of stacked TopK SAEs from the selected latents, with sparse
    backward products (see the module docstring).

    With a :class:`~hierlens.sae.workspace.Workspace`, the weight gradients are written into
    its kept buffers and handed to ``W_enc.grad`` / ``W_dec.grad`` directly (added when a
    gradient is already there), so a training loop allocates no weight-sized memory per step.
    This needs leaf weights whose strides match the buffers: ``W_dec`` contiguous and
    ``W_enc`` stored as the transpose of a contiguous ``(S, d_sae, d_in)`` tensor, as the
    trainer keeps it (either the leaf itself or its ``.mT`` view); otherwise the gradient
    goes back through autograd.
    """

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, b_dec, W_dec, idx, pre_sel, apply_b_dec, workspace):
        S, d_sae, d_in = W_dec.shape
        B, k = idx.shape[1], idx.shape[2]
        columns = (idx + torch.arange(S, device=idx.device).view(S, 1, 1) * d_sae).reshape(-1, k)
        vals = torch.relu(pre_sel)
        codes = _csr(vals, columns, S * d_sae)
        recon = _spmm(codes, W_dec.reshape(S * d_sae, d_in)).view(S, B, d_in)
        recon.add_(b_dec.unsqueeze(1))
        ctx.save_for_backward(x, W_enc, b_dec, W_dec, columns, vals, pre_sel > 0)
        ctx.apply_b_dec = apply_b_dec
        ctx.workspace = workspace
        # With a workspace: the leaves whose .grad the backward fills in directly (the
        # gradients are computed as contiguous (S, d_sae, d_in) tensors; W_enc's transposed).
        ctx.leaves = None
        if workspace is not None:
            enc_stride, dec_stride = (d_sae * d_in, 1, d_in), (d_sae * d_in, d_in, 1)
            ctx.leaves = (_grad_leaf(W_enc, enc_stride), _grad_leaf(W_dec, dec_stride))
        return vals, recon

    @staticmethod
    def backward(ctx, g_vals, g_recon):
        x, W_enc, b_dec, W_dec, columns, vals, active = ctx.saved_tensors
        S, d_sae, d_in = W_dec.shape
        B = x.shape[0]
        ws = ctx.workspace
        enc_leaf, dec_leaf = ctx.leaves if ws is not None else (None, None)
        g = g_recon.reshape(S * B, d_in)
        transpose = _Transposer(columns, S * d_sae)
        codes_t = transpose.csr(transpose.permute(vals))
        # Code gradient at the active latents only: (W_dec @ g^T) sampled at the transposed
        # pattern, visited latent by latent so that each decoder row is read once (16 vs
        # 23 ms in row order at S = 8, d_sae = 4096, B = 1024, k = 32, measured).
        W_flat = W_dec.reshape(S * d_sae, d_in)
        g_codes_t = torch.sparse.sampled_addmm(codes_t, W_flat, g.T, beta=0.0).values()
        if g_vals is not None:
            g_codes_t = g_codes_t + transpose.permute(g_vals)
        g_pre_t = transpose.csr(g_codes_t * transpose.permute(active))
        grad_W_dec = _spmm(codes_t, g, _buffer(ws, "grad_W_dec", dec_leaf, codes_t, g))
        grad_W_dec = grad_W_dec.view(S, d_sae, d_in)
        grad_b_enc = _spmm(g_pre_t, g.new_ones(S * B, 1)).view(S, d_sae)  # row sums
        x_in = x.to(W_enc.dtype).unsqueeze(0)
        if ctx.apply_b_dec:
            x_in = x_in - b_dec.unsqueeze(1)
        x_in = x_in.expand(S, B, d_in).reshape(S * B, d_in)
        grad_W_enc = _spmm(g_pre_t, x_in, _buffer(ws, "grad_W_enc", enc_leaf, g_pre_t, x_in))
        grad_W_enc = grad_W_enc.view(S, d_sae, d_in).transpose(1, 2)
        grad_b_dec = g_recon.sum(1)
        if ctx.apply_b_dec:
            grad_b_dec = grad_b_dec - torch.bmm(W_enc, grad_b_enc.unsqueeze(-1)).squeeze(-1)
        if ws is not None:
            grad_W_enc = _deliver(W_enc, enc_leaf, grad_W_enc)
            grad_W_dec = _deliver(W_dec, dec_leaf, grad_W_dec)
        return None, grad_W_enc, grad_b_enc, grad_b_dec, grad_W_dec, None, None, None, None


def _grad_leaf(weight: torch.Tensor, grad_stride: tuple[int, ...]) -> torch.Tensor | None:
    """The leaf whose ``.grad`` can take ``weight``'s gradient (computed with strides
    ``grad_stride``) without a copy: ``weight`` itself when it is a leaf with those strides,
    or the leaf ``weight`` is the plain transpose of (as the trainer passes ``W_enc``).
    ``None`` when neither holds: the gradient then goes through autograd."""
    if weight.is_leaf:
        leaf, stride = weight, weight.stride()
    else:
        leaf = weight._base
        if leaf is None or weight.shape != leaf.mT.shape or weight.data_ptr() != leaf.data_ptr():
            return None
        stride = leaf.mT.stride()
    if not (leaf.is_leaf and leaf.requires_grad) or weight.stride() != stride:
        return None
    return leaf if stride == grad_stride else None


def _buffer(ws, name: str, leaf, sparse: torch.Tensor, dense: torch.Tensor):
    """The workspace's output buffer for ``sparse @ dense``, the gradient of ``leaf``
    (``None``: a fresh tensor, without a workspace or leaf, or while ``leaf.grad`` still
    holds that buffer, as in a loop that zeroes gradients instead of dropping them)."""
    if ws is None or leaf is None:
        return None
    out = ws.get(name, (sparse.shape[0], dense.shape[1]), dense.dtype, dense.device)
    held = leaf.grad
    if held is not None and held.untyped_storage().data_ptr() == out.untyped_storage().data_ptr():
        return None
    return out


def _deliver(weight: torch.Tensor, leaf, grad: torch.Tensor) -> torch.Tensor | None:
    """Put ``grad`` (``weight``'s gradient) into ``leaf.grad`` (see :func:`_grad_leaf`) and
    return ``None`` for autograd; without a leaf, return ``grad`` to autograd."""
    if leaf is None:
        return grad
    g = grad if leaf is weight else grad.mT
    if leaf.grad is None:
        leaf.grad = g
    else:
        leaf.grad.add_(g)
    return None


def _stored_transposed(W: torch.Tensor) -> bool:
    return W.shape[-1] > 1 and W.transpose(-1, -2).is_contiguous()


@torch.no_grad()
def selection_preacts(
    x: torch.Tensor,
    p: dict[str, torch.Tensor],
    apply_b_dec: bool,
    workspace: Workspace | None = None,
) -> torch.Tensor:
    """The stacked pre-activations ``(S, B, d_sae)`` the top-k selection reads, without
    gradient: one batched product with the bias folded in as an extra input column (cheaper
    than adding it to the large output). ``workspace``: keep the large tensors there (the
    result is then the workspace's buffer, overwritten by the next call)."""
    W = p["W_enc"]
    S, d_in, d_sae = W.shape
    bias = p["b_enc"]
    if apply_b_dec:
        bias = bias - torch.bmm(p["b_dec"].unsqueeze(1).to(W.dtype), W).squeeze(1)
    x_aug = torch.cat([x.to(W.dtype), x.new_ones(x.shape[0], 1, dtype=W.dtype)], 1)
    if _stored_transposed(W):  # build the augmented weight in the storage's order
        parts, dim, shape = [W.transpose(1, 2), bias.unsqueeze(2)], 2, (S, d_sae, d_in + 1)
    else:
        parts, dim, shape = [W, bias.unsqueeze(1)], 1, (S, d_in + 1, d_sae)
    if workspace is None:
        W_aug = torch.cat(parts, dim)
        pre = None
    else:
        W_aug = torch.cat(parts, dim, out=workspace.get("W_aug", shape, W.dtype, W.device))
        pre = workspace.get("preacts", (S, x.shape[0], d_sae), W.dtype, W.device)
    if dim == 2:
        W_aug = W_aug.transpose(1, 2)
    return torch.bmm(x_aug.expand(S, *x_aug.shape), W_aug, out=pre)


def sparse_topk_step(
    x: torch.Tensor,
    p: dict[str, torch.Tensor],
    k: int,
    apply_b_dec: bool,
    workspace: Workspace | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Select the top ``k`` stacked pre-activations of ``x`` ``(B, d_in)`` (computed without
    gradient) and decode them: returns ``(vals, idx, recon)``, with gradients to ``W_enc``,
    ``b_enc``, ``b_dec`` and ``W_dec`` in ``p`` through sparse products only.

    ``workspace``: keep the step's large temporaries there between calls, and write the
    weight gradients into kept buffers set as the weights' ``.grad`` (see
    :class:`_SparseTopK`); for a training loop that owns the weights.
    """
    # The sparse kernels take one dtype: the step runs in the weights' dtype under autocast.
    with torch.autocast(device_type=x.device.type, enabled=False):
        with torch.no_grad():
            pre = selection_preacts(x, p, apply_b_dec, workspace)
            pre_sel, idx = grouped_topk(pre, k, workspace=workspace)
        vals, recon = _SparseTopK.apply(
            x, p["W_enc"], p["b_enc"], p["b_dec"], p["W_dec"], idx, pre_sel, apply_b_dec, workspace
        )
    return vals, idx, recon
