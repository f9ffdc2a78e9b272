"""Dyck-(k, d): well-nested strings of k bracket types up to depth d, as a language-model task.

Follows the setup of [Murty2023b]. Strings come from the probabilistic automaton: with an empty
stack, open a bracket (of a uniformly random type) with probability 1/2 or end the string; below
the maximum depth, open or close with probability 1/2 each; at the maximum depth, close. Strings
shorter than ``min_length`` or longer than ``max_length`` brackets are rejected and redrawn.

Splits. A string is a concatenation of *segments*, each going from an empty stack back to an
empty stack. A seeded hash marks a fraction (``holdout_fraction``) of the segments of at least
``holdout_min_length`` brackets as held out, and another seeded hash reserves a fraction
(``test_id_fraction``) of whole strings for ``test_id``:

- ``train``: no held-out segment, not reserved;
- ``test_id``: no held-out segment, reserved (so disjoint from ``train`` as strings);
- ``test_ood``: ``ood="segments"``: at least one held-out segment (never seen in training);
  ``ood="depth"``: nesting deeper than ``max_depth`` (up to ``ood_max_depth``);
  ``ood="both"``: either.

Metric (the paper's): at every position whose next token is a closing bracket, the argmax of
the model's logits restricted to the closing brackets must be the correct closer.
``closing_acc`` is the fraction of such positions; ``seq_acc`` the fraction of strings whose
closers are all right.

Gold tree: the bracket nesting; each matched pair is a constituent, plus the whole string.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from typing import ClassVar

import numpy as np
import torch

from hierlens.core.validate import require

from .base import BOS, EOS, IGNORE_INDEX, PAD, Batch, Example, Task, gold_depths
from .ground_truth import FeatureGraph, GroundTruth, KnownLatents
from .registry import register_task

_PAIRS = ("()", "[]", "{}", "<>")
_OOD_KINDS = ("segments", "depth", "both")
_MAX_ROUNDS = 10_000


def _hash_fraction(salt: bytes, ids: np.ndarray) -> float:
    """A stable pseudo-random number in [0, 1) for a token sequence."""
    return zlib.crc32(salt + np.ascontiguousarray(ids, dtype=np.int64).tobytes()) / 2**32


@register_task
@dataclasses.dataclass(frozen=True)
class DyckTask(Task, KnownLatents):
    """Dyck-(``n_types``, ``max_depth``) language modelling with a novel-segment OOD split.

    Parameters:
        n_types: number of bracket types k (>= 1).
        max_depth: maximum nesting depth d in ``train``/``test_id`` (>= 1).
        min_length, max_length: accepted string lengths in brackets (even, 2 <= min <= max).
        ood: what makes ``test_ood`` out of distribution: "segments", "depth" or "both".
        holdout_fraction: fraction of long segments held out of training (0 < f < 1).
        holdout_min_length: segments shorter than this are never held out.
        ood_max_depth: maximum depth for "depth"/"both" OOD strings (0: ``max_depth + 2``).
        test_id_fraction: fraction of strings reserved for ``test_id`` (0 < f < 1).
        split_seed: seed of the two split hashes (changes which segments/strings are held out).
    """

    name: ClassVar[str] = "dyck"
    main_metric: ClassVar[str] = "closing_acc"
    description: ClassVar[str] = (
        "Dyck-(k,d) bracket language modelling; OOD = strings with held-out segments or deeper nesting"
    )

    n_types: int = 2
    max_depth: int = 8
    min_length: int = 2
    max_length: int = 40
    ood: str = "segments"
    holdout_fraction: float = 0.25
    holdout_min_length: int = 6
    ood_max_depth: int = 0
    test_id_fraction: float = 0.1
    split_seed: int = 0

    def __post_init__(self) -> None:
        need = functools.partial(require, self)
        need(
            isinstance(self.n_types, int) and self.n_types >= 1,
            f"n_types must be an integer >= 1, got {self.n_types!r}",
        )
        need(
            isinstance(self.max_depth, int) and self.max_depth >= 1,
            f"max_depth must be an integer >= 1, got {self.max_depth!r}",
        )
        need(
            isinstance(self.min_length, int)
            and isinstance(self.max_length, int)
            and 2 <= self.min_length <= self.max_length,
            f"need 2 <= min_length <= max_length, got min_length={self.min_length!r}, max_length={self.max_length!r}",
        )
        need(
            self.ood in _OOD_KINDS, f"ood must be one of {', '.join(_OOD_KINDS)}, got {self.ood!r}"
        )
        need(
            0.0 < self.holdout_fraction < 1.0,
            f"holdout_fraction must be in (0, 1), got {self.holdout_fraction!r}",
        )
        need(
            isinstance(self.holdout_min_length, int)
            and 2 <= self.holdout_min_length <= self.max_length,
            f"holdout_min_length must be in [2, max_length={self.max_length}], got {self.holdout_min_length!r}",
        )
        need(
            0.0 < self.test_id_fraction < 1.0,
            f"test_id_fraction must be in (0, 1), got {self.test_id_fraction!r}",
        )
        if self.ood in ("depth", "both"):
            need(
                self.ood_depth > self.max_depth and 2 * self.ood_depth <= self.max_length,
                f"ood_max_depth must be > max_depth={self.max_depth} and reachable within max_length="
                f"{self.max_length} (<= {self.max_length // 2}), got {self.ood_depth}",
            )

    # ----------------------------------------------------------------- vocabulary
    @property
    def ood_depth(self) -> int:
        """Maximum nesting of ``test_ood`` strings when OOD includes depth."""
        return self.ood_max_depth or self.max_depth + 2

    @property
    def vocab(self) -> tuple[str, ...]:
        opens = [(_PAIRS[i][0] if i < len(_PAIRS) else f"({i}") for i in range(self.n_types)]
        closes = [(_PAIRS[i][1] if i < len(_PAIRS) else f"){i}") for i in range(self.n_types)]
        return (PAD, BOS, EOS, *opens, *closes)

    @property
    def open_ids(self) -> np.ndarray:
        return np.arange(3, 3 + self.n_types)

    @property
    def close_ids(self) -> np.ndarray:
        return np.arange(3 + self.n_types, 3 + 2 * self.n_types)

    @property
    def max_len(self) -> int:
        return self.max_length + 2

    # ----------------------------------------------------------------- generation
    def generate(
        self, n: int, rng: np.random.Generator, depth_cap: int | None = None
    ) -> list[np.ndarray]:
        """Draw ``n`` raw strings (bracket ids, no BOS/EOS) from the automaton, rejecting
        those outside ``[min_length, max_length]``; all strings run in parallel as arrays."""
        cap = self.max_depth if depth_cap is None else depth_cap
        out: list[np.ndarray] = []
        rounds = 0
        while len(out) < n:
            rounds += 1
            if rounds > _MAX_ROUNDS:
                raise RuntimeError("DyckTask.generate: acceptance rate too low for these lengths")
            out.extend(self._generate_round(max(2 * (n - len(out)), 256), rng, cap))
        return out[:n]

    def _generate_round(self, B: int, rng: np.random.Generator, cap: int) -> list[np.ndarray]:
        L = self.max_length
        seq = np.zeros((B, L), dtype=np.int64)
        stack = np.zeros((B, cap + 1), dtype=np.int64)
        depth = np.zeros(B, dtype=np.int64)
        length = np.zeros(B, dtype=np.int64)
        alive = np.ones(B, dtype=bool)
        too_long = np.zeros(B, dtype=bool)
        opens, closes = self.open_ids, self.close_ids
        for t in range(L + 1):
            if not alive.any():
                break
            u = rng.random(B)
            types = rng.integers(0, self.n_types, B)
            at_empty = depth == 0
            do_open = alive & (depth < cap) & (u < 0.5)
            do_end = alive & at_empty & ~do_open
            do_close = alive & ~at_empty & ~do_open
            if t == L:
                too_long |= do_open | do_close
                break
            o = np.nonzero(do_open)[0]
            seq[o, t] = opens[types[o]]
            stack[o, depth[o]] = types[o]
            depth[o] += 1
            c = np.nonzero(do_close)[0]
            depth[c] -= 1
            seq[c, t] = closes[stack[c, depth[c]]]
            length[o] += 1
            length[c] += 1
            alive &= ~do_end
        ok = ~too_long & (length >= self.min_length)
        return [seq[i, : length[i]].copy() for i in np.nonzero(ok)[0]]

    def structure(self, brackets: np.ndarray) -> dict[str, np.ndarray]:
        """Nesting level of each bracket (1 = outermost), its type, whether it closes, and the
        index of its matching bracket."""
        is_close = brackets >= 3 + self.n_types
        step = np.where(is_close, -1, 1)
        after = np.cumsum(step)
        nesting = np.where(is_close, after + 1, after)
        types = np.where(is_close, brackets - 3 - self.n_types, brackets - 3)
        match = np.full(len(brackets), -1, dtype=np.int64)
        stack: list[int] = []
        for i, closing in enumerate(is_close.tolist()):
            if closing:
                if not stack or types[stack[-1]] != types[i]:
                    raise ValueError(f"not a well-nested bracket string (position {i})")
                j = stack.pop()
                match[i], match[j] = j, i
            else:
                stack.append(i)
        if stack:
            raise ValueError("not a well-nested bracket string (unclosed brackets)")
        return {
            "nesting": nesting,
            "type": types,
            "is_close": is_close,
            "match": match,
            "depth_after": after,
        }

    def segments(self, brackets: np.ndarray) -> list[tuple[int, int]]:
        """Half-open bracket ranges of the empty-stack-to-empty-stack segments."""
        ends = np.nonzero(np.cumsum(np.where(brackets >= 3 + self.n_types, -1, 1)) == 0)[0] + 1
        starts = np.concatenate([[0], ends[:-1]])
        return list(zip(starts.tolist(), ends.tolist()))

    def is_held_out_segment(self, segment: np.ndarray) -> bool:
        """Whether a segment (bracket ids) is held out of training."""
        if len(segment) < self.holdout_min_length:
            return False
        return (
            _hash_fraction(f"dyck-seg-{self.split_seed}|".encode(), segment) < self.holdout_fraction
        )

    def is_test_id_string(self, brackets: np.ndarray) -> bool:
        return (
            _hash_fraction(f"dyck-str-{self.split_seed}|".encode(), brackets)
            < self.test_id_fraction
        )

    def split_of(self, brackets: np.ndarray) -> str | None:
        """The split a string belongs to (``None``: none, e.g. too deep for in-domain but not
        OOD under this task's ``ood`` setting)."""
        held = self.ood != "depth" and any(
            self.is_held_out_segment(brackets[a:b]) for a, b in self.segments(brackets)
        )
        deep = (
            self.ood != "segments"
            and int(self.structure(brackets)["nesting"].max()) > self.max_depth
        )
        if held or deep:
            return "test_ood"
        if int(self.structure(brackets)["nesting"].max()) > self.max_depth:
            return None
        return "test_id" if self.is_test_id_string(brackets) else "train"

    def _sample(self, n: int, split: str, seed: int) -> list[Example]:
        rng = np.random.default_rng([seed, ("train", "test_id", "test_ood").index(split), 0xD1C])
        cap = self.ood_depth if (split == "test_ood" and self.ood != "segments") else self.max_depth
        out: list[Example] = []
        rounds = 0
        while len(out) < n:
            rounds += 1
            if rounds > _MAX_ROUNDS:
                raise RuntimeError(
                    f"DyckTask: could not draw enough {split} strings; loosen the split parameters"
                )
            for s in self._generate_round(max(4 * (n - len(out)), 256), rng, cap):
                if self.split_of(s) == split:
                    out.append(self.make_example(s))
                    if len(out) == n:
                        break
        return out

    def make_example(self, brackets: np.ndarray | list[int]) -> Example:
        """The :class:`Example` for a string of bracket ids (without BOS/EOS)."""
        b = np.asarray(brackets, dtype=np.int64)
        if b.size and (b.min() < 3 or b.max() >= 3 + 2 * self.n_types):
            raise ValueError("bracket ids out of range (pass ids without <bos>/<eos>)")
        st = self.structure(b)
        n = len(b)
        tokens = np.concatenate([[self.bos_id], b, [self.eos_id]])
        targets = np.concatenate([tokens[1:], [IGNORE_INDEX]])
        spans = {(0, n)} | {(i, int(st["match"][i]) + 1) for i in range(n) if not st["is_close"][i]}
        tree = tuple(sorted(spans, key=lambda s: (s[0], -s[1])))
        pad = [-1]
        segs = self.segments(b)
        return Example(
            tokens=tuple(tokens.tolist()),
            targets=tuple(targets.tolist()),
            word_positions=tuple(range(1, n + 1)),
            tree=tree,
            token_labels={
                "depth": tuple([0, *gold_depths(n, tree), 0]),
                "nesting": tuple(pad + st["nesting"].tolist() + pad),
                "bracket_type": tuple(pad + st["type"].tolist() + pad),
                "is_close": tuple(pad + st["is_close"].astype(int).tolist() + pad),
            },
            labels={
                "length": n,
                "max_nesting": int(st["nesting"].max()),
                "n_segments": len(segs),
                "novel_segment": any(self.is_held_out_segment(b[x:y]) for x, y in segs),
            },
        )

    # ----------------------------------------------------------------- ground truth
    def stack_state(self, brackets: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The stack after each bracket: its depth and the type of its top bracket (-1 when
        empty), both ``(len(brackets),)``."""
        st = self.structure(np.asarray(brackets, dtype=np.int64))
        top = np.full(len(st["type"]), -1, dtype=np.int64)
        stack: list[int] = []
        for i, (closing, t) in enumerate(zip(st["is_close"].tolist(), st["type"].tolist())):
            if closing:
                stack.pop()
            else:
                stack.append(t)
            top[i] = stack[-1] if stack else -1
        return st["depth_after"].astype(np.int64), top

    def ground_truth(self, data: list[Example]) -> GroundTruth:
        """Per token, the stack after reading it: level 0 holds the one-hots ``depth=d``
        (``d = 0 .. D``, ``D`` the deepest nesting any split reaches) and ``top=<type>``
        (the open bracket on top; none at depth 0); level 1 their conjunctions
        ``depth=d,top=<type>`` (``d >= 1``), each a child of its ``depth=d`` and its
        ``top=<type>``. ``<bos>`` and ``<eos>`` see the empty stack (``depth=0``)."""
        examples = list(data)
        if not examples or not all(isinstance(e, Example) for e in examples):
            raise ValueError("ground_truth needs a non-empty list of this task's Examples")
        D = self.ood_depth if self.ood != "segments" else self.max_depth
        K = self.n_types
        opens = self.vocab[3 : 3 + K]
        names = [f"depth={d}" for d in range(D + 1)] + [f"top={o}" for o in opens]
        level = [0] * (D + 1 + K)
        edges = []
        for d in range(1, D + 1):
            for t in range(K):
                edges += [(d, len(names)), (D + 1 + t, len(names))]
                names.append(f"depth={d},top={opens[t]}")
                level.append(1)
        depths, tops = [], []
        for e in examples:
            depth, top = self.stack_state(e.tokens[1:-1])
            if len(depth) and int(depth.max()) > D:
                raise ValueError(f"an example nests deeper ({int(depth.max())}) than {D}")
            depths.append(np.concatenate([[0], depth, [0]]))
            tops.append(np.concatenate([[-1], top, [-1]]))
        depth, top = np.concatenate(depths), np.concatenate(tops)
        rows = np.arange(len(depth))
        acts = np.zeros((len(depth), len(names)), dtype=np.float32)
        acts[rows, depth] = 1.0
        on = top >= 0
        acts[rows[on], D + 1 + top[on]] = 1.0
        both = D + 1 + K + (depth[on] - 1) * K + top[on]
        acts[rows[on], both] = 1.0
        graph = FeatureGraph(tuple(names), tuple(level), tuple(edges))
        return GroundTruth(torch.from_numpy(acts), graph)

    # ----------------------------------------------------------------- metric
    def metric_counts(
        self, batch: Batch, logits: torch.Tensor
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        c0 = 3 + self.n_types
        targets = batch.targets
        closing = (targets >= c0) & (targets < c0 + self.n_types)
        pred = logits[..., c0 : c0 + self.n_types].argmax(-1) + c0
        correct = closing & (pred == targets)
        has_close = closing.any(1)
        all_right = has_close & ((closing & ~correct).sum(1) == 0)
        return {
            "closing_acc": (correct.sum(), closing.sum()),
            "seq_acc": (all_right.sum(), has_close.sum()),
        }
