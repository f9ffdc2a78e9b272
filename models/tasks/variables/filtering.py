"""Causal model of hierarchical filtering (root classification): the generative tree's nodes.

With a disjoint grammar (each child pair belongs to one parent) and no filtering
(``filter_level`` = ``depth``), the root is a deterministic function of the leaves, computed
bottom-up through the tree's internal nodes. Variables: ``node_h{h}_i{i}``, the symbol of
the ``i``-th node at height ``h`` (``1 <= h < depth``; height 0 are the leaves, ``depth`` the
root). Setting a node to its value on a source input and recomputing its ancestors gives the
counterfactual root (minimal pairs for a node agree on its sibling: its ancestors are
functions of it, so they cannot stay fixed) (``None`` where the new child pair is no production of the grammar).
Regenerating a node grows a fresh subtree under the new symbol; its root is then read by
exact belief propagation (:meth:`~..hierarchical_filtering.HierarchicalFilteringTask.posteriors`).

The query is position 0 (``<bos>``, where the model reads the root out); inputs keep all
their tokens, since the task is bidirectional.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..hierarchical_filtering import HierarchicalFilteringTask
from .base import CausalInput, CausalModel, register_causal_model


@register_causal_model
class FilteringVariables(CausalModel):
    """Causal model of :class:`~hierlens.models.tasks.HierarchicalFilteringTask`."""

    task_name = "hierarchical_filtering"

    def __init__(self, task: HierarchicalFilteringTask) -> None:
        super().__init__(task)
        if task.subtask != "root" or not task.disjoint or task.k != task.depth:
            raise ValueError(
                "the hierarchical-filtering causal model needs subtask='root', disjoint=True "
                f"and no filtering (filter_level=-1 or {task.depth}); got subtask="
                f"{task.subtask!r}, disjoint={task.disjoint}, filter_level={task.filter_level}"
            )
        if task.depth < 2:
            raise ValueError("the tree needs depth >= 2 to have internal nodes")
        M = np.asarray(task.grammar)
        self.parent = np.full((task.q, task.q), -1, dtype=np.int64)
        for a, b, c in zip(*np.nonzero(M > 0)):
            self.parent[b, c] = a

    @property
    def variables(self) -> Mapping[str, str]:
        L = self.task.depth
        return {
            f"node_h{h}_i{i}": f"symbol of node {i} at height {h} (covers leaves "
            f"{i * 2**h}..{(i + 1) * 2**h - 1})"
            for h in range(1, L)
            for i in range(2 ** (L - h))
        }

    def held_fixed(self, variable: str) -> tuple[str, ...]:
        """A node's ancestors are functions of it, so a pair differing in one node differs in
        them too: pairs agree on the node's sibling (what the counterfactual combines it
        with) instead of on every other node."""
        self.check_variable(variable)
        h, i = self.parse_name(variable)
        return (f"node_h{h}_i{i ^ 1}",)

    @staticmethod
    def parse_name(variable: str) -> tuple[int, int]:
        h, i = variable[len("node_h") :].split("_i")
        return int(h), int(i)

    def make(self, levels: list[np.ndarray], output: int | None = None) -> CausalInput:
        """The causal input of one tree (``levels[h]``: the symbols at height ``h``); its
        output is the root's token unless ``output`` is given."""
        task: HierarchicalFilteringTask = self.task  # type: ignore[assignment]
        ex = task._example(int(levels[-1][0]), levels, task.depth, None)
        values = {
            f"node_h{h}_i{i}": int(levels[h][i])
            for h in range(1, task.depth)
            for i in range(len(levels[h]))
        }
        return CausalInput(
            tokens=ex.tokens,
            query=0,
            output=int(levels[-1][0]) + task.symbol_offset if output is None else output,
            values=values,
            state=tuple(np.array(lv) for lv in levels),
        )

    def draw(self, n: int, split: str, rng: np.random.Generator) -> list[CausalInput]:
        task: HierarchicalFilteringTask = self.task  # type: ignore[assignment]
        out: list[CausalInput] = []
        for _ in range(100):
            d = task.generate(max(2 * n, 64), rng, task.split_filter_level(split))
            keep = np.ones(len(d["root"]), dtype=bool)
            if split != "test_ood":
                held = task._is_test_id(d["leaves"])
                keep = held if split == "test_id" else ~held
            for i in np.nonzero(keep)[0]:
                levels = [lv[i] for lv in d["levels"]]
                levels[-1] = np.array([d["root"][i]])
                out.append(self.make(levels))
                if len(out) == n:
                    return out
        raise RuntimeError(f"could not draw {n} {split} trees")

    def candidates(self, inp: CausalInput) -> tuple[int, ...]:
        off = self.task.symbol_offset
        return tuple(range(off, off + self.task.q))

    def counterfactual(self, base: CausalInput, source: CausalInput, variable: str) -> int | None:
        self.check_variable(variable)
        h, i = self.parse_name(variable)
        value = source.values[variable]
        levels = base.state
        for height in range(h, self.task.depth):
            sibling = int(levels[height][i ^ 1])
            pair = (value, sibling) if i % 2 == 0 else (sibling, value)
            value = int(self.parent[pair])
            if value < 0:
                return None
            i //= 2
        return value + self.task.symbol_offset

    def regenerate(
        self, inp: CausalInput, variable: str, value: int, rng: np.random.Generator
    ) -> CausalInput | None:
        self.check_variable(variable)
        task: HierarchicalFilteringTask = self.task  # type: ignore[assignment]
        h, i = self.parse_name(variable)
        if not 0 <= value < task.q:
            return None
        flat = np.asarray(task.grammar).reshape(task.q, task.q * task.q)
        sub = [np.array([value])]
        for _ in range(h):  # grow a fresh subtree of height h under the new symbol
            pairs = np.array([rng.choice(task.q * task.q, p=flat[s]) for s in sub[-1]])
            sub.append(np.stack([pairs // task.q, pairs % task.q], -1).reshape(-1))
        leaves = np.array(inp.state[0])
        width = 2**h
        leaves[i * width : (i + 1) * width] = sub[-1]
        tokens = np.array(inp.tokens)
        tokens[1 : 1 + task.n_leaves] = leaves + task.symbol_offset
        levels = [leaves]
        for _ in range(task.depth):
            below = levels[-1]
            if (below < 0).any():
                return None  # the new subtree's symbol forms no production with its sibling
            levels.append(self.parent[below[0::2], below[1::2]])
        if (levels[-1] < 0).any():
            return None
        root = int(task.posteriors(tokens[None]).root[0].argmax())  # exact inference
        return self.make(levels, output=root + task.symbol_offset)
