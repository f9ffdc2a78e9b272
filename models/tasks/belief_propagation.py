"""Exact belief propagation on the (filtered) binary-tree generative model.

Follows [GarnierBrun2025]. The generative model has ``q`` symbols, a
root drawn from ``prior``, and a grammar tensor ``M[a, b, c] = P(left = b, right = c | parent
= a)``. With filtering level ``k`` (``0 <= k <= L``) the tree is cut at height ``k``: the
``2^(L-k)`` nodes at depth ``L - k`` are drawn *independently given the root* from their exact
marginals under the full model, and each of them then generates its height-``k`` subtree with
``M``. ``k = L`` is the unfiltered model; ``k = 0`` makes the leaves independent given the
root.

The model is a tree-shaped factor graph, so the sum-product algorithm (an upward pass of
"inside" messages followed by a downward pass of "outside" messages) gives the exact
posteriors of the root, of every hidden node and of every leaf, given evidence on the leaves.
All messages are computed for a whole batch at once, level by level, in float64; the root,
whose degree can be ``2^L``, combines its incoming messages in log space.
"""

from __future__ import annotations

import dataclasses

import torch

__all__ = ["BPResult", "belief_propagation", "top_link_matrices"]


@dataclasses.dataclass
class BPResult:
    """Posteriors from :func:`belief_propagation`.

    Attributes:
        root: ``(B, q)`` posterior of the root symbol.
        leaves: ``(B, N, q)`` posterior of every leaf (a delta at observed leaves).
        nodes: ``nodes[h - 1]`` is the ``(B, N / 2^h, q)`` posterior of the hidden nodes at
            height ``h`` for ``h = 1 .. k`` (only the heights that exist in the filtered tree).
    """

    root: torch.Tensor
    leaves: torch.Tensor
    nodes: list[torch.Tensor]


def top_link_matrices(grammar: torch.Tensor, n_levels: int) -> torch.Tensor:
    """``(2^n_levels, q, q)``: ``P(node_i = b | root = a)`` for the nodes at depth ``n_levels``
    of the unfiltered tree, left to right (the product of the left/right child marginals
    along the path from the root)."""
    q = grammar.shape[0]
    left = grammar.sum(2)  # P(left = b | a)
    right = grammar.sum(1)  # P(right = c | a)
    mats = torch.eye(q, dtype=grammar.dtype, device=grammar.device)[None]
    for _ in range(n_levels):
        mats = torch.stack([mats @ left, mats @ right], dim=1).reshape(-1, q, q)
    return mats


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.sum(-1, keepdim=True)


def _check_inputs(evidence: torch.Tensor, grammar: torch.Tensor, prior: torch.Tensor) -> int:
    if grammar.dim() != 3 or len(set(grammar.shape)) != 1:
        raise ValueError(f"grammar must have shape (q, q, q), got {tuple(grammar.shape)}")
    q = grammar.shape[0]
    if prior.shape != (q,):
        raise ValueError(f"prior must have shape ({q},), got {tuple(prior.shape)}")
    if evidence.dim() != 3 or evidence.shape[-1] != q:
        raise ValueError(f"evidence must have shape (B, N, {q}), got {tuple(evidence.shape)}")
    n_leaves = evidence.shape[1]
    if n_leaves < 2 or n_leaves & (n_leaves - 1):
        raise ValueError(f"the number of leaves must be a power of two >= 2, got {n_leaves}")
    if (evidence < 0).any():
        raise ValueError("evidence must be non-negative")
    return n_leaves.bit_length() - 1


def belief_propagation(
    evidence: torch.Tensor,
    grammar: torch.Tensor,
    prior: torch.Tensor,
    filter_level: int | None = None,
) -> BPResult:
    """Exact posteriors of the root, hidden nodes and leaves of the filtered tree model.

    Args:
        evidence: ``(B, N, q)`` non-negative likelihood of each leaf symbol, ``N = 2^L``
            (a one-hot row for an observed leaf, all ones for a masked one).
        grammar: ``(q, q, q)`` tensor ``M[parent, left, right]``, each ``M[a]`` summing to 1.
        prior: ``(q,)`` root prior.
        filter_level: ``k`` in ``[0, L]``; ``None`` means ``L`` (no filtering).

    Returns:
        A :class:`BPResult` (float64). Evidence that has probability zero under the model
        gives NaN posteriors in its rows.
    """
    depth = _check_inputs(evidence, grammar, prior)
    k = depth if filter_level is None else int(filter_level)
    if not 0 <= k <= depth:
        raise ValueError(f"filter_level must be in [0, {depth}], got {filter_level!r}")
    dev = evidence.device
    M = grammar.to(dev, torch.float64)
    q = M.shape[0]
    M_flat = M.reshape(q, q * q)
    ev = evidence.to(torch.float64)

    # ---- upward (inside) messages: inside[h] is (B, N / 2^h, q), normalised over q
    inside = [_normalise(ev)]
    for _ in range(k):
        u = inside[-1]
        pair = u[:, 0::2, :, None] * u[:, 1::2, None, :]  # (B, n, q, q): left x right
        up = pair.reshape(*pair.shape[:2], q * q) @ M_flat.T
        inside.append(_normalise(up))

    # ---- root: combine the 2^(L-k) top nodes through their link matrices
    links = top_link_matrices(M, depth - k)  # (n_top, q, q)
    to_root = _normalise(torch.einsum("iab,zib->zia", links, inside[k]))
    log_msgs = torch.log(to_root)  # (B, n_top, q); -inf where impossible
    log_prior = torch.log(prior.to(dev, torch.float64))
    csum = torch.cumsum(log_msgs, dim=1)
    zero = torch.zeros_like(log_msgs[:, :1])
    before = torch.cat([zero, csum[:, :-1]], dim=1)  # sum over j < i
    rev = torch.flip(torch.cumsum(torch.flip(log_msgs, [1]), dim=1), [1])
    after = torch.cat([rev[:, 1:], zero], dim=1)  # sum over j > i
    log_root = log_prior + csum[:, -1]
    root = torch.softmax(log_root, dim=-1)
    log_excl = log_prior + before + after  # (B, n_top, q): root belief without top node i
    excl = torch.softmax(log_excl, dim=-1)

    # ---- downward (outside) messages
    outside = _normalise(torch.einsum("zia,iab->zib", excl, links))  # at the top nodes
    nodes: list[torch.Tensor] = []
    for h in range(k, 0, -1):
        nodes.append(_normalise(outside * inside[h]))
        u = inside[h - 1]
        joint = (outside @ M_flat).reshape(*outside.shape[:2], q, q)  # (B, n, q_left, q_right)
        left = (joint * u[:, 1::2, None, :]).sum(-1)
        right = (joint * u[:, 0::2, :, None]).sum(-2)
        outside = _normalise(torch.stack([left, right], dim=2).reshape(u.shape))
    leaves = _normalise(outside * ev)
    nodes.reverse()
    if k == depth:
        nodes = nodes[:-1]  # the height-L node is the root itself
    return BPResult(root=root, leaves=leaves, nodes=nodes)
