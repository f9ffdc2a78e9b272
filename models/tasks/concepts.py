"""Synthetic hierarchical concepts: vectors built from a tree of concept directions.

Follows the toy setting of MP-SAE [Costa2025]: concepts form a tree; in each sample
at most one top-level concept is active; an active concept activates at most one of its
children; a child's direction is orthogonal to its parent's (and to every ancestor's) while
siblings may share a configurable cosine. Each active concept contributes its direction times
a random magnitude; optional Gaussian noise is added. With ``superposition=True`` the concept
families live in independent random subspaces, so there can be more concepts than
dimensions (only within-family geometry is exact); otherwise all families are mutually
orthogonal and must fit in ``dim``.

Sibling geometry: the children of a node are ``sqrt(c) s + sqrt(1 - c) e_i`` with ``s`` and
the ``e_i`` orthonormal and orthogonal to the node and its ancestors, so each child has unit
norm, siblings have cosine exactly ``c`` and each child is orthogonal to its ancestors.

This is not a token task: it returns tensors for checking how well a dictionary (SAE,
MP-SAE) recovers each level of the tree.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
import torch

from hierlens.core.config import Config
from hierlens.core.validate import check_int, is_int, require

from .base import require_probabilities
from .ground_truth import FeatureGraph, GroundTruth, KnownLatents

__all__ = ["ConceptSample", "ConceptTree", "HierarchicalConcepts", "concept_ground_truth"]


@dataclasses.dataclass
class ConceptTree:
    """The ground-truth concept tree.

    Attributes:
        directions: ``(n_concepts, dim)`` unit vectors; top-level concepts come first, then
            each level in order (breadth first).
        parent: ``(n_concepts,)`` int64 index of each concept's parent, -1 for top level.
        level: ``(n_concepts,)`` int64 depth in the tree (0 for top-level concepts).
        family: ``(n_concepts,)`` int64 index of the top-level ancestor.
    """

    directions: torch.Tensor
    parent: torch.Tensor
    level: torch.Tensor
    family: torch.Tensor

    @property
    def n_concepts(self) -> int:
        return int(self.parent.shape[0])

    def children(self, index: int) -> list[int]:
        """Indices of the children of concept ``index``."""
        return torch.nonzero(self.parent == index).flatten().tolist()


@dataclasses.dataclass
class ConceptSample:
    """Samples from :meth:`HierarchicalConcepts.sample`.

    Attributes:
        x: ``(n, dim)`` vectors ``codes @ tree.directions + noise``.
        codes: ``(n, n_concepts)`` ground-truth magnitudes (0 where inactive).
        tree: the :class:`ConceptTree`.
    """

    x: torch.Tensor
    codes: torch.Tensor
    tree: ConceptTree

    @property
    def active(self) -> torch.Tensor:
        """``(n, n_concepts)`` bool: which concepts fire in each sample."""
        return self.codes != 0

    @classmethod
    def from_numpy(
        cls, x: np.ndarray, codes: np.ndarray, tree: ConceptTree, dtype: torch.dtype
    ) -> ConceptSample:
        """A sample from numpy vectors and codes, everything (the tree's directions too) in
        ``dtype``."""
        return cls(
            x=torch.from_numpy(x).to(dtype),
            codes=torch.from_numpy(codes).to(dtype),
            tree=dataclasses.replace(tree, directions=tree.directions.to(dtype)),
        )


@dataclasses.dataclass(frozen=True)
class HierarchicalConcepts(Config, KnownLatents):
    """Configuration of the synthetic hierarchical-concepts generator.

    Parameters:
        n_top: number of top-level concepts (>= 1).
        n_children: children per concept at each level below the top, e.g. ``(4,)`` for two
            levels or ``(3, 2)`` for three (each entry >= 1; empty: no children).
        n_with_children: how many top-level concepts have a subtree, in ``[0, n_top]``
            (-1: all of them); the first ones do.
        dim: dimension of the vectors (>= 1).
        sibling_cosine: cosine between siblings' directions, in ``[0, 1)``.
        p_active: probability that a sample has an active top-level concept, in ``[0, 1]``.
        p_child: probability that an active concept with children activates one, in
            ``[0, 1]``.
        magnitude_low, magnitude_high: magnitudes are uniform in this range
            (``0 < low <= high``).
        noise_std: standard deviation of the Gaussian noise per coordinate (>= 0).
        superposition: put each family in an independent random subspace (allows more
            concepts than dimensions) instead of making all families orthogonal.
        seed: seed of the directions.
    """

    n_top: int = 8
    n_children: tuple[int, ...] = (4,)
    n_with_children: int = -1
    dim: int = 64
    sibling_cosine: float = 0.0
    p_active: float = 0.9
    p_child: float = 0.8
    magnitude_low: float = 0.5
    magnitude_high: float = 1.5
    noise_std: float = 0.0
    superposition: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        need = functools.partial(require, self)
        if isinstance(self.n_children, list):
            object.__setattr__(self, "n_children", tuple(self.n_children))
        need(is_int(self.n_top) and self.n_top >= 1, f"n_top must be >= 1, got {self.n_top!r}")
        need(
            isinstance(self.n_children, tuple)
            and all(is_int(m) and m >= 1 for m in self.n_children),
            f"n_children must be a tuple of integers >= 1, got {self.n_children!r}",
        )
        need(
            is_int(self.n_with_children) and -1 <= self.n_with_children <= self.n_top,
            f"n_with_children must be in [0, n_top={self.n_top}] (or -1 for all), "
            f"got {self.n_with_children!r}",
        )
        need(is_int(self.dim) and self.dim >= 1, f"dim must be an integer >= 1, got {self.dim!r}")
        need(
            0.0 <= self.sibling_cosine < 1.0,
            f"sibling_cosine must be in [0, 1), got {self.sibling_cosine!r}",
        )
        require_probabilities(self, "p_active", "p_child")
        need(
            0.0 < self.magnitude_low <= self.magnitude_high,
            "need 0 < magnitude_low <= magnitude_high, got "
            f"magnitude_low={self.magnitude_low!r}, magnitude_high={self.magnitude_high!r}",
        )
        need(self.noise_std >= 0.0, f"noise_std must be >= 0, got {self.noise_std!r}")
        per_family = self._columns_per_family()
        if self.superposition:
            need(
                max(per_family) <= self.dim,
                f"dim must be >= {max(per_family)} to hold one concept family, got {self.dim}",
            )
        else:
            need(
                sum(per_family) <= self.dim,
                f"dim must be >= {sum(per_family)} for mutually orthogonal families "
                f"(or set superposition=True), got {self.dim}",
            )

    # ----------------------------------------------------------------- structure
    @property
    def n_families_with_children(self) -> int:
        return self.n_top if self.n_with_children < 0 else self.n_with_children

    def _columns_per_family(self) -> list[int]:
        """Orthonormal basis vectors each family needs."""
        shared = 1 if self.sibling_cosine > 0 else 0
        # internal nodes of a full subtree: each needs `shared` + m columns for its children
        cols_full, nodes = 1, 1
        for m in self.n_children:
            cols_full += nodes * (shared + m)
            nodes *= m
        k = self.n_families_with_children
        return [cols_full] * k + [1] * (self.n_top - k)

    def tree(self) -> ConceptTree:
        """The concept directions and tree (a deterministic function of the config)."""
        rng = np.random.default_rng([self.seed, 0xC0C])
        cols = self._columns_per_family()
        c = self.sibling_cosine
        if not self.superposition:
            basis = _orthonormal(rng, self.dim, sum(cols))
            bases = np.split(basis, np.cumsum(cols)[:-1], axis=1)
        else:
            bases = [_orthonormal(rng, self.dim, k) for k in cols]
        # breadth-first: level 0 for all families, then level 1, ...
        dirs: list[np.ndarray] = []
        parent: list[int] = []
        level: list[int] = []
        family: list[int] = []
        cursor = [1] * self.n_top  # next unused basis column per family
        frontier: list[int] = []
        for f in range(self.n_top):
            dirs.append(bases[f][:, 0])
            parent.append(-1)
            level.append(0)
            family.append(f)
            if f < self.n_families_with_children:
                frontier.append(f)
        for depth, m in enumerate(self.n_children, start=1):
            nxt: list[int] = []
            for node in frontier:
                f = family[node]
                B = bases[f]
                s = None
                if c > 0:
                    s = B[:, cursor[f]]
                    cursor[f] += 1
                for _ in range(m):
                    e = B[:, cursor[f]]
                    cursor[f] += 1
                    d = e if s is None else np.sqrt(c) * s + np.sqrt(1 - c) * e
                    nxt.append(len(dirs))
                    dirs.append(d)
                    parent.append(node)
                    level.append(depth)
                    family.append(f)
            frontier = nxt
        return ConceptTree(
            directions=torch.from_numpy(np.stack(dirs)),
            parent=torch.tensor(parent, dtype=torch.int64),
            level=torch.tensor(level, dtype=torch.int64),
            family=torch.tensor(family, dtype=torch.int64),
        )

    # ----------------------------------------------------------------- ground truth
    def ground_truth(self, data: ConceptSample) -> GroundTruth:
        """The concepts' magnitudes per sample and the concept tree
        (:func:`concept_ground_truth`)."""
        return concept_ground_truth(data)

    # ----------------------------------------------------------------- sampling
    def sample(self, n: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> ConceptSample:
        """``n`` samples: vectors, ground-truth codes and the tree (CPU tensors)."""
        check_int("n", n, numpy=True)
        tree = self.tree()
        rng = np.random.default_rng([seed, 0x5A3])
        n_c = tree.n_concepts
        parent = tree.parent.numpy()
        n_kids = np.bincount(parent[parent >= 0], minlength=n_c)
        kids = np.zeros((n_c, max(int(n_kids.max(initial=0)), 1)), dtype=np.int64)
        for i in range(n_c):
            kids[i, : n_kids[i]] = np.nonzero(parent == i)[0]
        codes = np.zeros((n, n_c))
        on = rng.random(n) < self.p_active
        current = np.where(on, rng.integers(0, self.n_top, n), -1)
        while (current >= 0).any():
            idx = np.nonzero(current >= 0)[0]
            codes[idx, current[idx]] = rng.uniform(
                self.magnitude_low, self.magnitude_high, len(idx)
            )
            cur = current[idx]
            go = (rng.random(len(idx)) < self.p_child) & (n_kids[cur] > 0)
            slot = (rng.random(len(idx)) * n_kids[cur]).astype(np.int64)
            slot = np.minimum(slot, np.maximum(n_kids[cur] - 1, 0))
            nxt = np.full(n, -1)
            nxt[idx[go]] = kids[cur[go], slot[go]]
            current = nxt
        x = codes @ tree.directions.numpy()
        if self.noise_std > 0:
            x = x + rng.normal(0.0, self.noise_std, x.shape)
        return ConceptSample.from_numpy(x, codes, tree, dtype)


def concept_ground_truth(sample: ConceptSample, names: Sequence[str] | None = None) -> GroundTruth:
    """The ground truth of directly observed concept vectors: one row per sample, the
    concepts' magnitudes as activations, the concept tree as the feature graph (default
    names ``c<i>``)."""
    if not isinstance(sample, ConceptSample):
        raise TypeError(f"expected a ConceptSample, got {type(sample).__name__}")
    tree = sample.tree
    n = tree.n_concepts
    names = tuple(names) if names is not None else tuple(f"c{i}" for i in range(n))
    parent = tree.parent.tolist()
    edges = tuple((p, c) for c, p in enumerate(parent) if p >= 0)
    graph = FeatureGraph(names, tuple(tree.level.tolist()), edges)
    return GroundTruth(sample.codes.float(), graph)


def _orthonormal(rng: np.random.Generator, dim: int, k: int) -> np.ndarray:
    """``(dim, k)`` random orthonormal columns (``k <= dim``)."""
    q, r = np.linalg.qr(rng.standard_normal((dim, k)))
    return q * np.sign(np.diag(r))[None, :]
