"""A TopK SAE training step that touches only the ``k`` active latents of each row.

In a TopK SAE (Gao et al. 2024) only the encoder's forward product needs every latent: the
top-k selection has to see all pre-activations. Every other product of a training step is
k-sparse: the decoder forward ``codes @ W_dec``, the decoder-weight gradient
``codes^T @ g``, the code gradient ``g @ W_dec^T`` (needed only at the active latents) and
the encoder-weight gradient ``x^T @ g_pre``. :func:`sparse_topk_step` computes them with
sparse CSR kernels (``torch.sparse.mm`` and ``torch.sparse.sampled_addmm``), so a step costs
one dense product plus ``O(B k d_in)`` work instead of five dense products. ``S`` stacked
SAEs share one block-diagonal sparse matrix (member ``s``'s latents are columns
``s * d_sae ...``), so the whole stack runs as single sparse products.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["selection_preacts", "sparse_topk_step", "uses_sparse_kernels"]


def uses_sparse_kernels(x: torch.Tensor, p: dict[str, torch.Tensor]) -> bool:
    """Whether :func:`sparse_topk_step` runs on these tensors: on the CPU, in float32 or
    float64 (CUDA keeps the gather-based decoding of :func:`hierlens.sae.base.sparse_decode`)."""
    W = p["W_dec"]
    return W.device.type == "cpu" and x.device.type == "cpu" and W.dtype in (
        torch.float32,
        torch.float64,
    )


def _csr(values: torch.Tensor, columns: torch.Tensor, n_cols: int) -> torch.Tensor:
    """A CSR matrix with ``k`` entries per row: ``values``/``columns`` ``(R, k)``."""
    R, k = columns.shape
    crow = torch.arange(0, R * k + 1, k, device=columns.device)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the kernels we use are not
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            crow, columns.reshape(-1), values.reshape(-1), size=(R, n_cols)
        )


def _spmm(sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``sparse @ dense`` into a fresh uninitialised output (``torch.sparse.mm`` zero-fills a
    temporary and copies it, which costs more than the product itself here)."""
    out = dense.new_empty(sparse.shape[0], dense.shape[1])
    return torch.addmm(out, sparse, dense, beta=0.0, out=out)


class _Transposer:
    """The transpose of a sparsity pattern with ``k`` entries per row, as CSR: sorting the
    entries by column once serves every matrix with that pattern."""

    def __init__(self, columns: torch.Tensor, n_cols: int) -> None:
        R, k = columns.shape
        flat = columns.reshape(-1)
        self.order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=n_cols)
        self.crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        self.cols = torch.div(self.order, k, rounding_mode="floor")  # the entry's row
        self.shape = (n_cols, R)

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                self.crow, self.cols, values.reshape(-1)[self.order], size=self.shape
            )


class _SparseTopK(torch.autograd.Function):
    """``(vals, recon)`` of stacked TopK SAEs from the selected latents, with sparse
    backward products (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, b_dec, W_dec, idx, pre_sel, apply_b_dec):
        S, d_sae, d_in = W_dec.shape
        B, k = idx.shape[1], idx.shape[2]
        columns = (idx + torch.arange(S, device=idx.device).view(S, 1, 1) * d_sae).reshape(-1, k)
        vals = torch.relu(pre_sel)
        codes = _csr(vals, columns, S * d_sae)
        recon = _spmm(codes, W_dec.reshape(S * d_sae, d_in)).view(S, B, d_in)
        recon = recon + b_dec.unsqueeze(1)
        ctx.save_for_backward(x, W_enc, b_dec, W_dec, columns, vals, pre_sel > 0)
        ctx.apply_b_dec = apply_b_dec
        return vals, recon

    @staticmethod
    def backward(ctx, g_vals, g_recon):
        x, W_enc, b_dec, W_dec, columns, vals, active = ctx.saved_tensors
        S, d_sae, d_in = W_dec.shape
        B = x.shape[0]
        g = g_recon.reshape(S * B, d_in)
        transpose = _Transposer(columns, S * d_sae)
        W_flat = W_dec.reshape(S * d_sae, d_in)
        pattern = _csr(vals, columns, S * d_sae)
        # Code gradient at the active latents only: (g @ W_dec^T) sampled at the pattern.
        g_codes = torch.sparse.sampled_addmm(pattern, g, W_flat.T, beta=0.0).values()
        g_codes = g_codes.view_as(vals)
        if g_vals is not None:
            g_codes = g_codes + g_vals
        g_pre = g_codes * active
        grad_W_dec = _spmm(transpose(vals), g).view(S, d_sae, d_in)
        grad_b_enc = torch.zeros(S * d_sae, dtype=g_pre.dtype, device=g_pre.device)
        grad_b_enc.index_add_(0, columns.reshape(-1), g_pre.reshape(-1))
        grad_b_enc = grad_b_enc.view(S, d_sae)
        x_in = x.to(W_enc.dtype).unsqueeze(0)
        if ctx.apply_b_dec:
            x_in = x_in - b_dec.unsqueeze(1)
        x_in = x_in.expand(S, B, d_in).reshape(S * B, d_in)
        grad_W_enc = _spmm(transpose(g_pre), x_in).view(S, d_sae, d_in).transpose(1, 2)
        grad_b_dec = g_recon.sum(1)
        if ctx.apply_b_dec:
            grad_b_dec = grad_b_dec - torch.bmm(W_enc, grad_b_enc.unsqueeze(-1)).squeeze(-1)
        return None, grad_W_enc, grad_b_enc, grad_b_dec, grad_W_dec, None, None, None


@torch.no_grad()
def selection_preacts(x: torch.Tensor, p: dict[str, torch.Tensor], apply_b_dec: bool):
    """The stacked pre-activations ``(S, B, d_sae)`` the top-k selection reads, without
    gradient: one batched product with the bias folded in as an extra input column (cheaper
    than adding it to the large output)."""
    W = p["W_enc"]
    S, d_in, d_sae = W.shape
    bias = p["b_enc"]
    if apply_b_dec:
        bias = bias - torch.bmm(p["b_dec"].unsqueeze(1).to(W.dtype), W).squeeze(1)
    W_aug = torch.cat([W, bias.unsqueeze(1)], 1)  # (S, d_in + 1, d_sae)
    x_aug = torch.cat([x.to(W.dtype), x.new_ones(x.shape[0], 1, dtype=W.dtype)], 1)
    return torch.bmm(x_aug.expand(S, *x_aug.shape), W_aug)


def sparse_topk_step(
    x: torch.Tensor,
    p: dict[str, torch.Tensor],
    k: int,
    apply_b_dec: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Select the top ``k`` stacked pre-activations of ``x`` ``(B, d_in)`` (computed without
    gradient) and decode them: returns ``(vals, idx, recon)``, with gradients to ``W_enc``,
    ``b_enc``, ``b_dec`` and ``W_dec`` in ``p`` through sparse products only."""
    with torch.no_grad():
        pre_sel, idx = selection_preacts(x, p, apply_b_dec).topk(k, dim=-1, sorted=False)
    vals, recon = _SparseTopK.apply(
        x, p["W_enc"], p["b_enc"], p["b_dec"], p["W_dec"], idx, pre_sel, apply_b_dec
    )
    return vals, idx, recon
