"""Provenance of the paper values of the ``chomsky-table`` figure: every corroborated cell
equals the number its source gives, and the figure marks corroborated and unverified cells."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from hierlens.analysis.figures.chomsky import paper_marks, paper_sources, plot_chomsky_table
from hierlens.analysis.figures.deletang_table2 import (
    DELETANG_SOURCES,
    DELETANG_TABLE2,
    DELETANG_TABLE2_CORROBORATED,
    SOURCE_VALUES,
    paper_provenance,
)
from tests.analysis.grid_tables import grid_table

ARCHS = ["rnn", "lstm", "stack_rnn", "tape_rnn", "transformer"]


def test_every_source_value_is_the_kept_value():
    assert set(SOURCE_VALUES) == set(DELETANG_SOURCES)
    for source, table in SOURCE_VALUES.items():
        for task, row in table.items():
            for arch, value in row.items():
                assert DELETANG_TABLE2[task][arch] == value, (source, task, arch)
                assert source in paper_provenance(task, arch)


def test_corroborated_cells_are_cells_of_the_table():
    for task, row in DELETANG_TABLE2_CORROBORATED.items():
        for arch, sources in row.items():
            assert arch in DELETANG_TABLE2[task]
            assert sources and set(sources) <= set(DELETANG_SOURCES)
    # a cell no source gives is unverified, not corroborated
    assert paper_provenance("binary_addition", "tape_rnn") == ()
    assert paper_provenance("no_such_task", "rnn") == ()
    assert "deltaformer-table5" in paper_provenance("reverse_string", "stack_rnn")


def _data(tasks: list[str]) -> dict:
    return grid_table(
        tasks,
        ARCHS,
        measured={t: {a: 42.0 for a in ARCHS} for t in tasks},
        paper={t: {a: DELETANG_TABLE2[t][a] for a in ARCHS} for t in tasks},
        **paper_sources(tasks, ARCHS),
        curves={t: {a: {"1": 100.0, "5": 40.0} for a in ARCHS} for t in tasks},
    )


def _cell_texts(fig) -> set[str]:
    return {t.get_text() for ax in fig.axes for t in ax.texts}


def test_figure_marks_corroborated_and_unverified_cells():
    tasks = ["parity_check", "cycle_navigation", "modular_arithmetic_brackets", "binary_addition"]
    data = _data(tasks)
    marks = paper_marks(data)
    texts = _cell_texts(plot_chomsky_table(data))
    n_corr = n_unver = 0
    for t in tasks:
        for a in ARCHS:
            value = f"{DELETANG_TABLE2[t][a]:.1f}"
            if paper_provenance(t, a):
                assert marks[t][a] == "corroborated"
                assert f"{value} ✓" in texts, (t, a)
                n_corr += 1
            else:
                assert marks[t][a] == "unverified"
                assert f"{value} ?" in texts, (t, a)
                n_unver += 1
    assert n_corr == 10 and n_unver == 10
    # measured cells carry no mark
    assert "42.0" in texts and not any(x.startswith("42.0 ") for x in texts)
    assert set(data["sources"]) == {"deltaformer-table5", "deletang-b1", "deletang-b32"}


def test_data_without_sources_is_marked_from_the_record():
    data = _data(["binary_addition", "reverse_string"])
    del data["paper_sources"], data["sources"]
    marks = paper_marks(data)
    assert set(marks["binary_addition"].values()) == {"unverified"}
    assert set(marks["reverse_string"].values()) == {"corroborated"}
