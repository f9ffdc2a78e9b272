"""The paper values of the ``chomsky-table`` figure and where each was checked.

:data:`DELETANG_TABLE2` holds cells of Table 2 of [Deletang2023] (arXiv:2207.02098): score in
percent = test accuracy averaged over the OOD lengths 41..500, maximised over 10 seeds and 3
learning rates, for models trained on lengths 1..40 for 1,000,000 steps (batch 128). Columns
RNN, Stack-RNN, Tape-RNN, Transformer, LSTM (the Transformer cell is its best positional
encoding); a score of at least 90 counts as generalising. Tasks carry hierlens' names:
``modular_arithmetic`` is the paper's "Modular Arithmetic (Simple)" (regular),
``modular_arithmetic_brackets`` its "Modular Arithmetic" (DCF).

These values were transcribed without a copy of the paper's Table 2 at hand. Each cell is
either *corroborated* (a source other than that transcription gives the same number; the
sources are in :data:`DELETANG_SOURCES` and the numbers they give in :data:`SOURCE_VALUES`)
or an *unverified transcription* (no source was found; check it against Table 2 of
arXiv:2207.02098 before quoting it). :data:`DELETANG_TABLE2_CORROBORATED` maps each
corroborated cell to its sources; :func:`paper_provenance` answers per cell. When a source
disagrees with a transcribed value, the source's value is the one kept here (none has).
"""

from __future__ import annotations

#: (task, arch) cells of Table 2, in percent (see the module docstring)
DELETANG_TABLE2: dict[str, dict[str, float]] = {
    "even_pairs": {
        "rnn": 100.0,
        "stack_rnn": 100.0,
        "tape_rnn": 100.0,
        "transformer": 96.4,
        "lstm": 100.0,
    },
    "modular_arithmetic": {
        "rnn": 100.0,
        "stack_rnn": 100.0,
        "tape_rnn": 100.0,
        "transformer": 24.2,
        "lstm": 100.0,
    },
    "parity_check": {
        "rnn": 100.0,
        "stack_rnn": 100.0,
        "tape_rnn": 100.0,
        "transformer": 52.0,
        "lstm": 100.0,
    },
    "cycle_navigation": {
        "rnn": 100.0,
        "stack_rnn": 100.0,
        "tape_rnn": 100.0,
        "transformer": 61.9,
        "lstm": 100.0,
    },
    "stack_manipulation": {
        "rnn": 56.0,
        "stack_rnn": 100.0,
        "tape_rnn": 100.0,
        "transformer": 57.5,
        "lstm": 59.1,
    },
    "reverse_string": {
        "rnn": 62.0,
        "stack_rnn": 100.0,
        "tape_rnn": 100.0,
        "transformer": 62.3,
        "lstm": 60.9,
    },
    "modular_arithmetic_brackets": {
        "rnn": 41.3,
        "stack_rnn": 96.1,
        "tape_rnn": 95.4,
        "transformer": 32.5,
        "lstm": 59.2,
    },
    "solve_equation": {
        "rnn": 51.0,
        "stack_rnn": 56.2,
        "tape_rnn": 64.4,
        "transformer": 25.7,
        "lstm": 67.8,
    },
    "duplicate_string": {
        "rnn": 50.3,
        "stack_rnn": 52.8,
        "tape_rnn": 100.0,
        "transformer": 52.8,
        "lstm": 57.6,
    },
    "missing_duplicate": {
        "rnn": 52.3,
        "stack_rnn": 55.2,
        "tape_rnn": 100.0,
        "transformer": 100.0,
        "lstm": 54.3,
    },
    "odds_first": {
        "rnn": 51.0,
        "stack_rnn": 51.9,
        "tape_rnn": 100.0,
        "transformer": 52.8,
        "lstm": 55.6,
    },
    "binary_addition": {
        "rnn": 50.3,
        "stack_rnn": 52.7,
        "tape_rnn": 100.0,
        "transformer": 54.3,
        "lstm": 55.5,
    },
    "bucket_sort": {
        "rnn": 27.9,
        "stack_rnn": 78.1,
        "tape_rnn": 70.7,
        "transformer": 91.9,
        "lstm": 99.3,
    },
}

#: the sources a cell of :data:`DELETANG_TABLE2` was checked against, by key
DELETANG_SOURCES: dict[str, str] = {
    "deltaformer-table5": (
        'Xu, Lu, Ao, He, Zhong and Shi, "DeltaFormer: Unlock the State Space of Transformer" '
        "(NeurIPS 2025 submission), Table 5, which reprints the RNN, Stack-RNN, Tape-RNN, "
        "Transformer and LSTM columns of Delétang et al.'s Table 2 for six tasks"
    ),
    "deletang-b1": (
        "Delétang et al. 2023 (arXiv:2207.02098v3), Appendix B.1, in words: all the networks "
        'except Transformers "solve all regular tasks perfectly for all the seeds" (read as 100.0)'
    ),
    "deletang-b32": (
        "Delétang et al. 2023 (arXiv:2207.02098v3), Appendix B.3.2: the Transformer's "
        '"non-trivial generalization score (61.9% with baseline 20%)" on Cycle Navigation'
    ),
}

_RECURRENT = ("rnn", "stack_rnn", "tape_rnn", "lstm")
_SIX_TASKS = {
    # DeltaFormer's Table 5, columns RNN, Stack-RNN, Tape-RNN, Transformer, LSTM
    "modular_arithmetic": (100.0, 100.0, 100.0, 24.2, 100.0),
    "parity_check": (100.0, 100.0, 100.0, 52.0, 100.0),
    "stack_manipulation": (56.0, 100.0, 100.0, 57.5, 59.1),
    "reverse_string": (62.0, 100.0, 100.0, 62.3, 60.9),
    "duplicate_string": (50.3, 52.8, 100.0, 52.8, 57.6),
    "odds_first": (51.0, 51.9, 100.0, 52.8, 55.6),
}
_REGULAR = ("even_pairs", "modular_arithmetic", "parity_check", "cycle_navigation")

#: ``{source: {task: {arch: value}}}``: the numbers each source gives, as read there
SOURCE_VALUES: dict[str, dict[str, dict[str, float]]] = {
    "deltaformer-table5": {
        task: dict(zip(("rnn", "stack_rnn", "tape_rnn", "transformer", "lstm"), row))
        for task, row in _SIX_TASKS.items()
    },
    "deletang-b1": {task: {arch: 100.0 for arch in _RECURRENT} for task in _REGULAR},
    "deletang-b32": {"cycle_navigation": {"transformer": 61.9}},
}


def _corroborated() -> dict[str, dict[str, tuple[str, ...]]]:
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for source, table in SOURCE_VALUES.items():
        for task, row in table.items():
            for arch in row:
                cell = out.setdefault(task, {})
                cell[arch] = (*cell.get(arch, ()), source)
    return out


#: ``{task: {arch: (source, ...)}}``: the cells of :data:`DELETANG_TABLE2` a source gives
#: (a cell absent here is an unverified transcription)
DELETANG_TABLE2_CORROBORATED: dict[str, dict[str, tuple[str, ...]]] = _corroborated()


def paper_provenance(task: str, arch: str) -> tuple[str, ...]:
    """The keys of :data:`DELETANG_SOURCES` that give cell (``task``, ``arch``) of
    :data:`DELETANG_TABLE2`; empty for an unverified transcription (or a cell the table
    does not hold)."""
    return DELETANG_TABLE2_CORROBORATED.get(task, {}).get(arch, ())
