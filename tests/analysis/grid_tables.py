"""Hand-made Chomsky-grid result tables for the figure tests."""

from __future__ import annotations


def grid_table(tasks: list[str], archs: list[str], **cells) -> dict:
    """A grid's result table: its settings (accuracy threshold 0.9, 3 training and 5 test
    lengths, seed 0, learning rate 0.01, 10 steps) and ``cells`` (``measured``, ``paper``,
    ``curves``, ...)."""
    return {
        "tasks": tasks,
        "archs": archs,
        "threshold": 0.9,
        "n_train": 3,
        "n_test": 5,
        "seeds": [0],
        "lrs": [0.01],
        "steps": 10,
        **cells,
    }
