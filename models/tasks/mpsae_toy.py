"""The synthetic toy of [Costa2025] (section 4 and their released toy), itself extended
from the toy of [Bussmann2025] (Matryoshka SAEs).

The features (20 in all, in ``d = 20`` dimensions: no superposition):

- 11 top-level features: 3 *parents* and 8 *singletons*. Exactly one is active per sample:
  each parent with probability 0.2, each singleton with probability 0.05.
- each parent has 3 *children*; an active parent activates exactly one of four options:
  child 1, 2 or 3 (probability 0.2 each) or no child (0.4). Children are read out.

So the expected number of active features is ``1 + 0.6 * 0.6 = 1.36``. Each active feature
has magnitude ``1.5 + 0.25 * N(0, 1)`` (binary activation times a random scale), and a sample
is ``x = sum_i a_i d_i``.

Geometry, for a within-group cosine ``c``: the 11 top-level directions have pairwise cosine
exactly ``c``; the 3 children of each parent have pairwise cosine exactly ``c``; every
other pair (a child and its parent, a child and any other top-level feature, children of
different parents) is exactly orthogonal. Construction: a random orthonormal basis
``E = [e_1 … e_20]`` is split into disjoint blocks, one per group (11 columns for the
top-level group, 3 per sibling group). A group of ``n`` unit vectors with Gram matrix
``G = (1 - c) I + c 11^T`` is ``G^{1/2}`` applied to its block's columns:
``G^{1/2} = sqrt(1 - c) I + (sqrt(1 - c + n c) - sqrt(1 - c)) / n * 11^T`` (``G`` has
eigenvalue ``1 - c`` on the vectors summing to zero and ``1 - c + n c`` on ``1``), so the
vectors are ``v_i = sqrt(1 - c) e_i + (sqrt(1 - c + n c) - sqrt(1 - c)) / n * sum_j e_j``.
Groups use disjoint basis columns, hence the exact orthogonality across groups. (The authors'
notebook mixes basis vectors with hand-tuned coefficients to reach cosines 0.1 … 0.8
approximately; this closed form hits them exactly.)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from hierlens.core.config import Config
from hierlens.core.validate import check_int

from .concepts import ConceptSample, ConceptTree, concept_ground_truth
from .ground_truth import GroundTruth, KnownLatents

__all__ = ["MPSAEToy", "group_directions"]


def group_directions(basis: np.ndarray, cosine: float) -> np.ndarray:
    """``n`` unit vectors with pairwise cosine exactly ``cosine`` spanning the columns of
    ``basis`` ``(dim, n)`` (orthonormal): rows of ``G^{1/2} basis^T`` with
    ``G = (1 - c) I + c 11^T``. Returns ``(n, dim)``."""
    n = basis.shape[1]
    a = np.sqrt(1.0 - cosine)
    b = (np.sqrt(1.0 - cosine + n * cosine) - a) / n
    root = a * np.eye(n) + b * np.ones((n, n))
    return root @ basis.T


@dataclasses.dataclass(frozen=True)
class MPSAEToy(Config, KnownLatents):
    """Costa et al.'s toy (see the module docstring) with the within-group cosine a parameter.

    Parameters:
        within_cosine: pairwise cosine of the top-level features and of siblings, in
            ``[0, 1)`` (the paper sweeps 0.0 … 0.8).
        n_parents: parents (3 in the paper). n_children: children per parent (3).
        n_singletons: top-level features without children (8).
        p_parent: probability of each parent being the active top-level feature (0.2);
            the singletons share the rest equally (0.05 each in the paper).
        p_child: probability of each child of an active parent (0.2); the rest is "no child".
        scale_mean, scale_std: the magnitude of an active feature is
            ``scale_mean + scale_std * N(0, 1)`` (1.5 and 0.25).
        seed: seed of the random orthonormal basis.

    ``dim`` is the number of features (20 in the paper).
    """

    within_cosine: float = 0.0
    n_parents: int = 3
    n_children: int = 3
    n_singletons: int = 8
    p_parent: float = 0.2
    p_child: float = 0.2
    scale_mean: float = 1.5
    scale_std: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.within_cosine < 1.0:
            raise ValueError(f"within_cosine must be in [0, 1), got {self.within_cosine!r}")
        for name in ("n_parents", "n_children", "n_singletons"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        if self.n_parents + self.n_singletons < 1:
            raise ValueError("need at least one top-level feature")
        if not 0.0 <= self.p_parent * self.n_parents <= 1.0 or (
            self.n_singletons == 0 and not np.isclose(self.p_parent * self.n_parents, 1.0)
        ):
            raise ValueError(
                f"n_parents * p_parent must be in [0, 1] (= 1 without singletons), got "
                f"{self.n_parents} * {self.p_parent}"
            )
        if not 0.0 <= self.p_child * self.n_children <= 1.0:
            raise ValueError(
                f"n_children * p_child must be in [0, 1], got {self.n_children} * {self.p_child}"
            )
        if self.scale_std < 0:
            raise ValueError(f"scale_std must be >= 0, got {self.scale_std!r}")

    @property
    def n_top(self) -> int:
        return self.n_parents + self.n_singletons

    @property
    def dim(self) -> int:
        """Number of features, which is also the dimension."""
        return self.n_top + self.n_parents * self.n_children

    @property
    def expected_l0(self) -> float:
        """Expected number of active features per sample: ``1 + P(parent) * P(child)``
        (1.36 in the paper's setting)."""
        return 1.0 + self.n_parents * self.p_parent * self.n_children * self.p_child

    def tree(self) -> ConceptTree:
        """The feature directions ``(dim, dim)`` and tree: the 3 parents first, then the 8
        singletons (level 0), then the children of each parent in order (level 1)."""
        rng = np.random.default_rng([self.seed, 0xC057A])
        q, r = np.linalg.qr(rng.standard_normal((self.dim, self.dim)))
        basis = q * np.sign(np.diag(r))[None, :]
        c = self.within_cosine
        dirs = [group_directions(basis[:, : self.n_top], c)]
        parent = [-1] * self.n_top
        family = list(range(self.n_top))
        start = self.n_top
        for p in range(self.n_parents):
            dirs.append(group_directions(basis[:, start : start + self.n_children], c))
            parent += [p] * self.n_children
            family += [p] * self.n_children
            start += self.n_children
        level = [0] * self.n_top + [1] * (self.dim - self.n_top)
        return ConceptTree(
            directions=torch.from_numpy(np.concatenate(dirs)),
            parent=torch.tensor(parent, dtype=torch.int64),
            level=torch.tensor(level, dtype=torch.int64),
            family=torch.tensor(family, dtype=torch.int64),
        )

    @property
    def parents(self) -> list[int]:
        """Indices of the parents (the top-level features with children)."""
        return list(range(self.n_parents))

    @property
    def children_of(self) -> dict[int, list[int]]:
        """Parent index -> indices of its children."""
        base = self.n_top
        return {
            p: list(range(base + p * self.n_children, base + (p + 1) * self.n_children))
            for p in range(self.n_parents)
        }

    @property
    def feature_names(self) -> tuple[str, ...]:
        """``p<j>`` for the parents, ``s<j>`` for the singletons, ``p<j>.c<m>`` for the
        children, in the order of :meth:`tree`."""
        names = [f"p{j}" for j in range(self.n_parents)]
        names += [f"s{j}" for j in range(self.n_singletons)]
        names += [f"p{j}.c{m}" for j in range(self.n_parents) for m in range(self.n_children)]
        return tuple(names)

    def ground_truth(self, data: ConceptSample) -> GroundTruth:
        """The features' magnitudes per sample, parents at level 0 and children at level 1
        (:func:`~hierlens.models.tasks.concepts.concept_ground_truth`)."""
        return concept_ground_truth(data, self.feature_names)

    def sample(self, n: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> ConceptSample:
        """``n`` samples: vectors ``(n, dim)``, ground-truth magnitudes ``(n, dim)`` and the
        tree (CPU tensors)."""
        check_int("n", n, numpy=True)
        tree = self.tree()
        rng = np.random.default_rng([seed, 0x70A])
        top_p = np.full(self.n_top, 0.0)
        top_p[: self.n_parents] = self.p_parent
        if self.n_singletons:
            top_p[self.n_parents :] = (1.0 - self.p_parent * self.n_parents) / self.n_singletons
        top = rng.choice(self.n_top, size=n, p=top_p / top_p.sum())
        active = np.zeros((n, self.dim), dtype=bool)
        active[np.arange(n), top] = True
        # one of n_children children or none, for the rows whose top-level feature is a parent
        child_p = np.append(np.full(self.n_children, self.p_child), 0.0)
        child_p[-1] = 1.0 - child_p[:-1].sum()
        pick = rng.choice(self.n_children + 1, size=n, p=child_p)
        has = (top < self.n_parents) & (pick < self.n_children)
        rows = np.nonzero(has)[0]
        active[rows, self.n_top + top[rows] * self.n_children + pick[rows]] = True
        scale = self.scale_mean + self.scale_std * rng.standard_normal((n, self.dim))
        codes = active * scale
        x = codes @ tree.directions.numpy()
        return ConceptSample.from_numpy(x, codes, tree, dtype)
