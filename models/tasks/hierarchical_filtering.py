"""Hierarchical filtering: sequences generated on a binary tree with a tunable correlation range.

Follows [GarnierBrun2025].

Generative model. ``q`` symbols; a full binary tree of depth ``L`` (``2^L`` leaves); the root
is uniform; a seeded random grammar ``M[parent, left, right]`` gives each parent ``n_rules``
productions (child pairs), either a disjoint block of pairs per parent (``disjoint=True``,
so the parent is determined by its children) or pairs drawn independently per parent
(ambiguous), with uniform or random (Dirichlet(1)) probabilities. Filtering level ``k``
(``0 <= k <= L``, ``filter_level``): the ``2^(L-k)`` nodes at depth ``L - k`` are drawn
independently given the root from their exact marginals, then each grows its height-``k``
subtree with ``M``. So two leaves are correlated beyond what the root induces only if their
lowest common ancestor is at height ``<= k``; ``k = L`` is the unfiltered model and ``k = 0``
makes the leaves independent given the root (``k`` counts the intact levels from the leaves
up).

Token format (objective ``"masked"``: train a bidirectional model)::

    <bos> s_{x_1} ... s_{x_N} <eos>

- ``subtask="root"`` (root classification): the target at position 0 (``<bos>``) is the token
  id of the root symbol; the model reads the root out at its first position.
- ``subtask="mask"`` (masked-leaf prediction): ``n_masked`` leaves chosen uniformly are
  replaced by ``<mask>``; their targets are the true leaf symbols.

Metric: ``root_acc`` / ``leaf_acc``, the argmax of the logits restricted to the symbol tokens.
The Bayes-optimal reference is exact belief propagation (:mod:`.belief_propagation`):
:meth:`HierarchicalFilteringTask.bp_accuracy`.

Splits: ``train`` and ``test_id`` are the task's model, disjoint as leaf sequences (a seeded
hash reserves ``test_id_fraction`` of all sequences for ``test_id``); ``test_ood`` is drawn
with filtering level ``ood_filter_level`` (-1: ``L``, the unfiltered model), e.g. to test a
model trained on filtered data on the full correlations.

Gold tree: the constituents of the generating tree: the whole sequence, the subtrees of the
top nodes and every node below them (spans of at least two leaves). Token labels: ``depth``,
``symbol`` (leaf symbol, also at masked positions) and ``ancestor_h{h}`` (the symbol of the
leaf's ancestor at height ``h``; -1 where the filtered tree has no node at that height).
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch

from hierlens.core.validate import is_int, require

from .base import BOS, EOS, IGNORE_INDEX, PAD, Batch, Example, Task, gold_depths
from .belief_propagation import BPResult, belief_propagation, top_link_matrices
from .ground_truth import FeatureGraph, GroundTruth, KnownLatents, one_hot_rows
from .registry import register_task

MASK = "<mask>"
_SUBTASKS = ("root", "mask")
_WEIGHTS = ("uniform", "random")
_MAX_ROUNDS = 1000


@functools.lru_cache(maxsize=64)
def _grammar(q: int, n_rules: int, disjoint: bool, weights: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, q, n_rules, int(disjoint), 0x9A3])
    M = np.zeros((q, q * q))
    if disjoint:
        perm = rng.permutation(q * q)
        rules = perm[: q * n_rules].reshape(q, n_rules)
    else:
        rules = np.stack([rng.choice(q * q, size=n_rules, replace=False) for _ in range(q)])
    for a in range(q):
        w = np.ones(n_rules) if weights == "uniform" else rng.dirichlet(np.ones(n_rules))
        M[a, rules[a]] = w / w.sum()
    M = M.reshape(q, q, q)
    M.setflags(write=False)
    return M


def _categorical(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row of ``probs`` (``(..., K)``, rows summing to 1)."""
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random(probs.shape[:-1] + (1,)) * cdf[..., -1:]
    return np.minimum((cdf <= u).sum(-1), probs.shape[-1] - 1)


def leaf_pair_mutual_information(
    leaves: np.ndarray, q: int, given: np.ndarray | None = None
) -> np.ndarray:
    """Plug-in mutual information (nats) between every pair of leaf positions.

    Args:
        leaves: ``(n, N)`` integer symbols in ``[0, q)``.
        q: number of symbols.
        given: optional ``(n,)`` integer variable to condition on (e.g. the root): returns
            the conditional mutual information ``I(x_i; x_j | given)``.

    Returns:
        ``(N, N)`` float64 matrix (the diagonal holds the entropies).
    """
    leaves = np.asarray(leaves, dtype=np.int64)
    if leaves.ndim != 2 or leaves.shape[0] == 0:
        raise ValueError(f"leaves must be a non-empty (n, N) array, got shape {leaves.shape}")
    groups = (
        [np.arange(len(leaves))]
        if given is None
        else [np.nonzero(given == g)[0] for g in np.unique(given)]
    )
    n, N = leaves.shape
    out = np.zeros((N, N))
    for idx in groups:
        x = leaves[idx]
        onehot = np.eye(q)[x]  # (m, N, q)
        joint = np.einsum("mia,mjb->ijab", onehot, onehot) / len(idx)
        pi = joint.sum(3)  # (N, N, q): marginal of i
        pj = joint.sum(2)
        ratio = joint / (pi[..., :, None] * pj[..., None, :] + (joint == 0))
        with np.errstate(divide="ignore"):
            term = np.where(joint > 0, joint * np.log(np.where(joint > 0, ratio, 1.0)), 0.0)
        out += (len(idx) / n) * term.sum((2, 3))
    return out


@register_task
@dataclasses.dataclass(frozen=True)
class HierarchicalFilteringTask(Task, KnownLatents):
    """Root classification / masked-leaf prediction on filtered tree-generated sequences.

    Parameters:
        q: number of symbols (>= 2).
        depth: tree depth L (>= 1); sequences have ``2^depth`` leaves.
        filter_level: k in ``[0, depth]``; -1 means ``depth`` (unfiltered).
        n_rules: productions per parent, in ``[1, q]`` if ``disjoint`` else ``[1, q^2]``.
        disjoint: each parent owns a disjoint block of child pairs.
        rule_weights: "uniform" or "random" (Dirichlet(1)) production probabilities.
        grammar_seed: seed of the random grammar.
        subtask: "root" (root classification) or "mask" (masked-leaf prediction).
        n_masked: masked leaves per sequence for ``subtask="mask"``, in ``[1, 2^depth]``.
        ood_filter_level: filtering level of ``test_ood`` (-1: ``depth``), in ``[-1, depth]``.
        test_id_fraction: fraction of sequences reserved for ``test_id`` (0 < f < 1).
        split_seed: seed of the split hash.
    """

    name: ClassVar[str] = "hierarchical_filtering"
    description: ClassVar[str] = (
        "tree-generated sequences with filtered correlations (root classification or masked "
        "leaves; bidirectional); exact belief propagation gives the optimum"
    )
    objective: ClassVar[str] = "masked"

    q: int = 4
    depth: int = 4
    filter_level: int = -1
    n_rules: int = 2
    disjoint: bool = True
    rule_weights: str = "uniform"
    grammar_seed: int = 0
    subtask: str = "root"
    n_masked: int = 1
    ood_filter_level: int = -1
    test_id_fraction: float = 0.1
    split_seed: int = 0

    @property
    def main_metric(self) -> str:  # type: ignore[override]
        """``root_acc`` for root classification, ``leaf_acc`` for masked leaves."""
        return "root_acc" if self.subtask == "root" else "leaf_acc"

    def __post_init__(self) -> None:
        need = functools.partial(require, self)
        need(is_int(self.q) and self.q >= 2, f"q must be an integer >= 2, got {self.q!r}")
        need(
            is_int(self.depth) and 1 <= self.depth <= 12,
            f"depth must be an integer in [1, 12], got {self.depth!r}",
        )
        for field in ("filter_level", "ood_filter_level"):
            v = getattr(self, field)
            need(
                is_int(v) and -1 <= v <= self.depth,
                f"{field} must be an integer in [0, depth={self.depth}] (or -1 for depth), "
                f"got {v!r}",
            )
        hi = self.q if self.disjoint else self.q * self.q
        need(
            is_int(self.n_rules) and 1 <= self.n_rules <= hi,
            f"n_rules must be an integer in [1, {hi}] (q={self.q}, disjoint={self.disjoint}), "
            f"got {self.n_rules!r}",
        )
        need(
            self.rule_weights in _WEIGHTS,
            f"rule_weights must be one of {', '.join(_WEIGHTS)}, got {self.rule_weights!r}",
        )
        need(
            self.subtask in _SUBTASKS,
            f"subtask must be one of {', '.join(_SUBTASKS)}, got {self.subtask!r}",
        )
        need(
            is_int(self.n_masked) and 1 <= self.n_masked <= self.n_leaves,
            f"n_masked must be an integer in [1, {self.n_leaves}], got {self.n_masked!r}",
        )
        need(
            0.0 < self.test_id_fraction < 1.0,
            f"test_id_fraction must be in (0, 1), got {self.test_id_fraction!r}",
        )

    # ----------------------------------------------------------------- model
    @property
    def n_leaves(self) -> int:
        return 2**self.depth

    @property
    def k(self) -> int:
        """The effective filtering level of ``train``/``test_id``."""
        return self.depth if self.filter_level < 0 else self.filter_level

    @property
    def ood_k(self) -> int:
        """The effective filtering level of ``test_ood``."""
        return self.depth if self.ood_filter_level < 0 else self.ood_filter_level

    def split_filter_level(self, split: str) -> int:
        return self.ood_k if split == "test_ood" else self.k

    @property
    def grammar(self) -> np.ndarray:
        """``(q, q, q)`` float64 read-only array ``M[parent, left, right]``."""
        return _grammar(self.q, self.n_rules, self.disjoint, self.rule_weights, self.grammar_seed)

    @property
    def prior(self) -> np.ndarray:
        return np.full(self.q, 1.0 / self.q)

    # ----------------------------------------------------------------- vocabulary
    @property
    def vocab(self) -> tuple[str, ...]:
        return (PAD, BOS, EOS, MASK, *(f"s{i}" for i in range(self.q)))

    @property
    def mask_id(self) -> int:
        return 3

    @property
    def symbol_offset(self) -> int:
        """Token id of symbol 0 (symbol ``s`` has id ``symbol_offset + s``)."""
        return 4

    @property
    def max_len(self) -> int:
        return self.n_leaves + 2

    # ----------------------------------------------------------------- generation
    def generate(
        self, n: int, rng: np.random.Generator, filter_level: int | None = None
    ) -> dict[str, np.ndarray]:
        """Draw ``n`` trees. Returns ``root`` ``(n,)``, ``leaves`` ``(n, N)`` and
        ``levels``: ``levels[h]`` is ``(n, N / 2^h)`` for the heights ``h = 0 .. k`` that the
        filtered tree has (``levels[0]`` are the leaves)."""
        k = self.k if filter_level is None else int(filter_level)
        q, L = self.q, self.depth
        M = self.grammar
        root = rng.integers(0, q, size=n)
        links = top_link_matrices(torch.from_numpy(np.array(M)), L - k).numpy()
        top = _categorical(np.transpose(links[:, root], (1, 0, 2)), rng)  # (n, n_top)
        levels = [top]
        flat = M.reshape(q, q * q)
        for _ in range(k):
            parents = levels[-1]
            pair = _categorical(flat[parents], rng)
            levels.append(np.stack([pair // q, pair % q], axis=-1).reshape(n, -1))
        levels.reverse()
        return {"root": root, "leaves": levels[0], "levels": levels}

    def _is_test_id(self, leaves: np.ndarray) -> np.ndarray:
        salt = f"hf-{self.split_seed}|".encode()
        rows = np.ascontiguousarray(leaves, dtype=np.int64)
        return np.array(
            [zlib.crc32(salt + r.tobytes()) / 2**32 < self.test_id_fraction for r in rows],
            dtype=bool,
        )

    def _sample(self, n: int, split: str, seed: int) -> list[Example]:
        rng = np.random.default_rng([seed, ("train", "test_id", "test_ood").index(split), 0x4F1])
        k = self.split_filter_level(split)
        out: list[Example] = []
        for _ in range(_MAX_ROUNDS):
            draw = self.generate(max(2 * (n - len(out)), 64), rng, k)
            keep = np.ones(len(draw["root"]), dtype=bool)
            if split != "test_ood":
                reserved = self._is_test_id(draw["leaves"])
                keep = reserved if split == "test_id" else ~reserved
            for i in np.nonzero(keep)[0]:
                masked = None
                if self.subtask == "mask":
                    masked = np.sort(rng.choice(self.n_leaves, self.n_masked, replace=False))
                out.append(
                    self._example(int(draw["root"][i]), [lv[i] for lv in draw["levels"]], k, masked)
                )
                if len(out) == n:
                    return out
        raise RuntimeError(
            f"HierarchicalFilteringTask: could not draw {n} {split} examples; "
            "the grammar may have too few distinct sequences for this split"
        )

    def _example(
        self, root: int, levels: Sequence[np.ndarray], k: int, masked: np.ndarray | None
    ) -> Example:
        N, L, off = self.n_leaves, self.depth, self.symbol_offset
        leaves = levels[0]
        tokens = np.concatenate([[self.bos_id], leaves + off, [self.eos_id]])
        targets = np.full(N + 2, IGNORE_INDEX, dtype=np.int64)
        if masked is None:
            targets[0] = root + off
        else:
            targets[masked + 1] = leaves[masked] + off
            tokens[masked + 1] = self.mask_id
        spans = {(0, N)} | {
            (i * 2**h, (i + 1) * 2**h) for h in range(1, k + 1) for i in range(N >> h)
        }
        tree = tuple(sorted(spans, key=lambda s: (s[0], -s[1])))
        pad = [-1]
        token_labels = {
            "depth": tuple([0, *gold_depths(N, tree), 0]),
            "symbol": tuple(pad + leaves.tolist() + pad),
        }
        pos = np.arange(N)
        for h in range(1, L + 1):
            if h <= k:
                anc = levels[h][pos >> h].tolist()
            elif h == L:
                anc = [root] * N
            else:
                anc = [-1] * N
            token_labels[f"ancestor_h{h}"] = tuple(pad + anc + pad)
        return Example(
            tokens=tuple(tokens.tolist()),
            targets=tuple(targets.tolist()),
            word_positions=tuple(range(1, N + 1)),
            tree=tree,
            token_labels=token_labels,
            labels={"root": root, "filter_level": k},
        )

    # ----------------------------------------------------------------- exact inference
    def posteriors(self, tokens: torch.Tensor | np.ndarray, split: str = "train") -> BPResult:
        """Exact belief propagation on ``(B, 2^depth + 2)`` token ids (``<mask>`` leaves are
        unobserved) under the generative model of ``split`` (its filtering level)."""
        tokens = torch.as_tensor(tokens)
        if tokens.dim() != 2 or tokens.shape[1] < self.n_leaves + 1:
            raise ValueError(
                f"tokens must be (B, >= {self.n_leaves + 1}), got {tuple(tokens.shape)}"
            )
        leaf_tok = tokens[:, 1 : 1 + self.n_leaves].long()
        sym = leaf_tok - self.symbol_offset
        observed = (sym >= 0) & (sym < self.q)
        if not bool((observed | (leaf_tok == self.mask_id)).all()):
            raise ValueError("leaf tokens must be symbols or <mask>")
        ev = torch.nn.functional.one_hot(sym.clamp(0, self.q - 1), self.q).double()
        ev = torch.where(observed[..., None], ev, torch.ones_like(ev))
        return belief_propagation(
            ev,
            torch.from_numpy(np.array(self.grammar)),
            torch.from_numpy(self.prior),
            self.split_filter_level(split),
        )

    def bp_accuracy(
        self,
        split: str = "test_id",
        n: int = 1000,
        *,
        seed: int = 12345,
        examples: Sequence[Example] | None = None,
    ) -> float:
        """Accuracy of the Bayes-optimal (BP argmax) prediction on ``split``: the optimum a
        trained model is compared with (same defaults as :meth:`Task.evaluate`)."""
        if examples is None:
            examples = self.sample(n, split, seed)
        tokens = torch.tensor([e.tokens for e in examples])
        targets = torch.tensor([e.targets for e in examples])
        post = self.posteriors(tokens, split)
        if self.subtask == "root":
            pred = post.root.argmax(-1) + self.symbol_offset
            return float((pred == targets[:, 0]).double().mean())
        pred = post.leaves.argmax(-1) + self.symbol_offset
        tgt = targets[:, 1 : 1 + self.n_leaves]
        sel = tgt != IGNORE_INDEX
        return float((pred[sel] == tgt[sel]).double().mean())

    # ----------------------------------------------------------------- ground truth
    def ground_truth(self, data: Sequence[Example]) -> GroundTruth:
        """Per token, the value of each of its ancestor nodes: feature ``h{h}=s{s}`` is 1 on
        the tokens whose ancestor at height ``h`` has symbol ``s`` (``h = 0``: the leaf
        itself, also where it is masked; ``h = depth``: the root), for the heights the
        filtered tree has. ``<bos>``/``<eos>`` rows are all zero.

        Level 0 is the root's height; a value at height ``h`` is a child of a value at the
        next height up wherever the grammar can produce one below the other (through
        several generations across the filtered gap), so a symbol may have several parents.

        Raises:
            ValueError: no examples, or examples of different filtering levels.
        """
        examples = list(data)
        if not examples or not all(isinstance(e, Example) for e in examples):
            raise ValueError("ground_truth needs a non-empty list of this task's Examples")
        ks = {int(e.labels["filter_level"]) for e in examples}
        if len(ks) != 1:
            raise ValueError(f"examples of different filtering levels {sorted(ks)}: pass one split")
        k, q, L = ks.pop(), self.q, self.depth
        heights = sorted(set(range(k + 1)) | {L}, reverse=True)
        names = [f"h{h}=s{s}" for h in heights for s in range(q)]
        level = [i for i in range(len(heights)) for _ in range(q)]
        M = self.grammar
        step = (M.sum(2) + M.sum(1)) > 0  # step[s, s']: s can have a child s'
        edges = []
        for i in range(len(heights) - 1):
            reach = np.linalg.matrix_power(step.astype(np.int64), heights[i] - heights[i + 1])
            for s, t in zip(*np.nonzero(reach > 0)):
                edges.append((i * q + int(s), (i + 1) * q + int(t)))
        blocks = []
        for h in heights:
            key = "symbol" if h == 0 else f"ancestor_h{h}"
            values = np.concatenate([np.asarray(e.token_labels[key]) for e in examples])
            blocks.append(one_hot_rows(values, q))
        acts = torch.from_numpy(np.concatenate(blocks, axis=1))
        return GroundTruth(acts, FeatureGraph(tuple(names), tuple(level), tuple(edges)))

    # ----------------------------------------------------------------- metric
    def metric_counts(
        self, batch: Batch, logits: torch.Tensor
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        off = self.symbol_offset
        pred = logits[..., off : off + self.q].argmax(-1) + off
        sel = batch.targets != IGNORE_INDEX
        correct = sel & (pred == batch.targets)
        key = "root_acc" if self.subtask == "root" else "leaf_acc"
        return {key: (correct.sum(), sel.sum())}
