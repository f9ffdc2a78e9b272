"""The ``chomsky-table`` figure: [Deletang2023] Table 2 at CPU scale.

:func:`chomsky_table` trains the grid of :func:`hierlens.analysis.chomsky_grid.chomsky_grid`
(tasks x architectures x seeds x learning rates; runs already finished in ``out_dir`` are
reused) and returns per cell the paper's score (``test_ood`` accuracy averaged over lengths,
best over seeds and learning rates), the paper's reported value for the same cell
(:data:`~hierlens.analysis.figures.deletang_table2.DELETANG_TABLE2`) with the sources that
corroborate it (none: an unverified transcription) and the accuracy-vs-length curve of the
best run. :func:`plot_chomsky_table` draws the two tables side by side, each cell coloured by
the paper's threshold (>= 90% generalises), the paper's cells marked corroborated (``✓``) or
unverified (``?``), above one length curve per task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .deletang_table2 import DELETANG_SOURCES, DELETANG_TABLE2, paper_provenance

ARCH_LABELS = {
    "rnn": "RNN",
    "lstm": "LSTM",
    "stack_rnn": "Stack-RNN",
    "tape_rnn": "Tape-RNN",
    "transformer": "Transformer",
}


def chomsky_table(
    out_dir: Path,
    device: str | None,
    progress: bool,
    *,
    tasks: list[str],
    archs: list[str],
    seeds: list[int],
    lrs: list[float],
    task_params: dict[str, Any],
    model: dict[str, Any],
    train: dict[str, Any],
    eval_n: int,
    steps: int | None = None,
    arch_options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train (or reuse) the grid under ``out_dir/chomsky_runs`` and tabulate it."""
    from hierlens.analysis.chomsky_grid import THRESHOLD, chomsky_grid, chomsky_scores

    config = {**train, "device": device}
    if steps is not None:
        config.update(
            steps=steps, checkpoint_every=min(config.get("checkpoint_every", steps), steps)
        )
    rows = chomsky_grid(
        tasks,
        archs,
        seeds,
        lrs,
        config,
        out_dir / "chomsky_runs",
        task_params=task_params,
        model=model,
        arch_options=arch_options,
        eval_n=eval_n,
    )
    table = chomsky_scores(rows)
    from hierlens.models.tasks.registry import get_task

    t0 = get_task(tasks[0], **task_params)
    return {
        "tasks": tasks,
        "archs": archs,
        "threshold": THRESHOLD,
        "n_train": t0.n_train,
        "n_test": t0.n_test,
        "seeds": seeds,
        "lrs": lrs,
        "steps": config["steps"],
        "measured": {t: {a: 100 * table[t][a]["score"] for a in archs} for t in tasks},
        "best_run": {
            t: {a: {"lr": table[t][a]["lr"], "seed": table[t][a]["seed"]} for a in archs}
            for t in tasks
        },
        "test_id": {t: {a: 100 * table[t][a]["test_id"] for a in archs} for t in tasks},
        "paper": {t: {a: DELETANG_TABLE2.get(t, {}).get(a) for a in archs} for t in tasks},
        **paper_sources(tasks, archs),
        "curves": {
            t: {a: {k: 100 * v for k, v in table[t][a]["by_length"].items()} for a in archs}
            for t in tasks
        },
    }


def paper_sources(tasks: list[str], archs: list[str]) -> dict[str, Any]:
    """``paper_sources`` ``{task: {arch: [source key, ...]}}`` (empty list: an unverified
    transcription) and ``sources`` ``{key: citation}`` for the keys used."""
    cells = {t: {a: list(paper_provenance(t, a)) for a in archs} for t in tasks}
    used = sorted({k for row in cells.values() for keys in row.values() for k in keys})
    return {"paper_sources": cells, "sources": {k: DELETANG_SOURCES[k] for k in used}}


def paper_marks(data: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Per paper cell ``"corroborated"``, ``"unverified"`` or ``"missing"`` (no value); data
    written before the sources were recorded reads its marks from the current record."""
    if "paper_sources" in data:
        sources = data["paper_sources"]
    else:
        sources = paper_sources(data["tasks"], data["archs"])["paper_sources"]
    return {
        t: {
            a: "missing"
            if data["paper"][t].get(a) is None
            else ("corroborated" if sources.get(t, {}).get(a) else "unverified")
            for a in data["archs"]
        }
        for t in data["tasks"]
    }


_MARK = {"corroborated": " ✓", "unverified": " ?", "missing": ""}


def _table(
    ax,
    values: dict[str, dict[str, float | None]],
    tasks: list[str],
    archs: list[str],
    threshold: float,
    title: str,
    marks: dict[str, dict[str, str]] | None = None,
) -> None:
    import numpy as np
    from matplotlib.colors import ListedColormap

    grid = np.array(
        [[np.nan if values[t][a] is None else values[t][a] for a in archs] for t in tasks]
    )
    passed = np.where(np.isnan(grid), np.nan, (grid >= 100 * threshold).astype(float))
    ax.imshow(passed, cmap=ListedColormap(["#f4c7c3", "#b7e1cd"]), vmin=0, vmax=1, aspect="auto")
    for i in range(len(tasks)):
        for j in range(len(archs)):
            v = grid[i, j]
            mark = _MARK[marks[tasks[i]][archs[j]]] if marks else ""
            text = "—" if np.isnan(v) else f"{v:.1f}{mark}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8)
    ax.set_xticks(
        range(len(archs)), [ARCH_LABELS.get(a, a) for a in archs], rotation=30, fontsize=8
    )
    ax.set_yticks(range(len(tasks)), tasks, fontsize=8)
    ax.set_title(title, fontsize=9)


def plot_chomsky_table(data: dict[str, Any]):
    """Measured and paper tables (green: >= threshold) above accuracy-vs-length curves."""
    import matplotlib.pyplot as plt

    tasks, archs, thr = data["tasks"], data["archs"], data["threshold"]
    n_cols = 4
    n_rows = 1 + -(-len(tasks) // n_cols)
    fig = plt.figure(figsize=(4 * n_cols, 3.6 * n_rows))
    gs = fig.add_gridspec(n_rows, n_cols, height_ratios=[1.4] + [1] * (n_rows - 1))
    _table(
        fig.add_subplot(gs[0, :2]),
        data["measured"],
        tasks,
        archs,
        thr,
        f"hierlens (train lengths 1..{data['n_train']}, OOD {data['n_train'] + 1}..{data['n_test']},"
        f" {data['steps']} steps, best of {len(data['seeds'])} seed(s) x {len(data['lrs'])} lr)",
    )
    _table(
        fig.add_subplot(gs[0, 2:]),
        data["paper"],
        tasks,
        archs,
        thr,
        "Delétang et al. 2023, Table 2 (train 1..40, OOD 41..500, 1M steps, best of 10 seeds x 3"
        " lr)\n✓: the same number in a second source (named in chomsky-table.json); ?: unverified"
        " transcription",
        marks=paper_marks(data),
    )
    for k, task in enumerate(tasks):
        ax = fig.add_subplot(gs[1 + k // n_cols, k % n_cols])
        for arch in archs:
            curve = data["curves"][task][arch]
            lengths = sorted(curve, key=int)
            ax.plot(
                [int(x) for x in lengths],
                [curve[x] for x in lengths],
                label=ARCH_LABELS.get(arch, arch),
            )
        ax.axvline(data["n_train"] + 0.5, color="grey", ls=":", lw=1)
        ax.set_ylim(0, 102)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("input length", fontsize=8)
        ax.set_ylabel("accuracy (%)", fontsize=8)
        if k == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
