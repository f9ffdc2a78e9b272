"""Creating or reopening a pretrained run: :func:`open_pretrained_run`.

A pretrained run's settings are fixed when it is created, since every result in it was
computed with them: the model folder, the corpus file, its format and whether its
punctuation is dropped (``config.json``'s ``"pretrained"`` and ``"data"``), and the special
tokens that frame each sentence (``"special_tokens"``, resolved to token ids). Creating the
run also stores the names of its string labels (``label_names.json``: POS tags and phrase
labels, whose ids the activation stores and probes hold).

Reopening compares only the settings a caller gives (None: "whatever the run has"):

- the same settings: the run is reopened as it is;
- other settings on a run that holds no results yet (a command that failed before writing
  any left only its ``config.json``): the run is created afresh with the new settings;
- other settings on a run whose only results are activation stores, with
  ``overwrite=True``: the stores are deleted and the run is created afresh;
- otherwise :class:`PretrainedRunConflict`, naming each differing setting and the results
  that were computed with the stored ones. Nothing is changed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hierlens.core import confined_io as fs
from hierlens.core.atomic_io import write_checked_json
from hierlens.core.checksums import CHECKSUMS

from .corpus import Corpus
from .run import Run, open_run
from .run_clean import clear_run
from .run_layout import ACTIVATIONS, CONFIG, LABEL_NAMES, PRETRAINED
from .run_load import pretrained_run_config
from .run_lock import LOCK_FILE
from .special_tokens import SpecialTokens

__all__ = ["PretrainedRunConflict", "open_pretrained_run", "run_outputs"]

log = logging.getLogger(__name__)

#: the files that hold a run's settings rather than its results
SETTINGS_FILES = frozenset({CONFIG, LABEL_NAMES, CHECKSUMS, LOCK_FILE})


class PretrainedRunConflict(ValueError):
    """A run directory holds a run whose settings differ from the ones asked for.

    Attributes:
        path: the run directory.
        differs: ``{setting: (stored, asked)}`` for each differing setting (``model``,
            ``treebank``, ``format``, ``drop_punct``, ``special_tokens``, or ``kind`` for a
            trained run asked to be a pretrained one).
        outputs: the results in the run (file and folder names), computed with the stored
            settings.
    """

    def __init__(self, path: Path, differs: dict[str, tuple[Any, Any]], outputs: list[str]):
        self.path, self.differs, self.outputs = path, differs, outputs
        shown = "; ".join(f"{k}: {a!r} in the run, {b!r} asked" for k, a, b in self._rows())
        held = f"; it holds results computed with them ({', '.join(outputs)})" if outputs else ""
        super().__init__(
            f"{path} holds a run with other settings ({shown}){held}; choose another run "
            "directory for these settings"
        )

    def _rows(self) -> list[tuple[str, Any, Any]]:
        return [(k, a, b) for k, (a, b) in self.differs.items()]


def run_outputs(run: Run) -> list[str]:
    """The names of the entries of ``run``'s directory that hold results (anything but
    ``config.json``, ``label_names.json``, the checksum list and the lock file), sorted."""
    with run.confined():
        return sorted(n for n in fs.entries(run.path) if n not in SETTINGS_FILES)


def _stored(run: Run) -> dict[str, Any]:
    cfg = run.config
    data = cfg["data"]
    return {
        "model": cfg[PRETRAINED]["path"],
        "treebank": data["path"],
        "format": data.get("format"),
        "drop_punct": bool(data.get("drop_punct", False)),
        "special_tokens": run.special_tokens.policy,
    }


def _asked(
    model: str | os.PathLike | None,
    treebank: str | os.PathLike | None,
    format: str | None,
    drop_punct: bool | None,
    special_tokens: str | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if model is not None:
        out["model"] = str(Path(model).expanduser().resolve())
    if treebank is not None:
        out["treebank"] = str(Path(treebank).expanduser().resolve())
    if format is not None:
        out["format"] = format
    if drop_punct is not None:
        out["drop_punct"] = bool(drop_punct)
    if special_tokens is not None:
        out["special_tokens"] = SpecialTokens(special_tokens).policy
    return out


def _create(
    run: Run,
    model: str | os.PathLike,
    corpus: Corpus,
    special_tokens: str | None,
) -> Run:
    config = pretrained_run_config(model, corpus, special_tokens)
    run.write_config(config)
    _write_label_names(run, corpus)
    return open_run(run.path)


def _write_label_names(run: Run, corpus: Corpus) -> None:
    names = corpus.label_names()
    if names is not None:
        with run.confined():
            write_checked_json(run.label_names_path, {k: list(v) for k, v in names.items()})


def open_pretrained_run(
    run_dir: str | os.PathLike | Run,
    model: str | os.PathLike | None = None,
    treebank: str | os.PathLike | None = None,
    *,
    format: str | None = None,
    drop_punct: bool | None = None,
    special_tokens: str | None = None,
    overwrite: bool = False,
) -> Run:
    """The pretrained run in ``run_dir`` for the local Hugging Face folder ``model`` on the
    corpus file ``treebank`` (read as ``format``, default from its suffix; without its
    punctuation with ``drop_punct``; sentences framed by the ``special_tokens`` policy, see
    :class:`~hierlens.models.special_tokens.SpecialTokens`): created when the directory
    holds no run, reopened when it holds this one (see the module docstring for other
    settings and ``overwrite``). Settings left None are not compared; a new run needs
    ``model`` and ``treebank`` and takes the defaults for the others. Holds the run's
    writer lock while it decides.

    Raises:
        PretrainedRunConflict: the directory holds a run with other settings that cannot be
            replaced (a trained run, or results computed with the stored settings).
        ValueError: ``model`` without ``treebank`` or the reverse, for a new run.
        FileNotFoundError: no run in ``run_dir`` and no ``model``/``treebank`` to make one.
    """
    run = run_dir if isinstance(run_dir, Run) else Run(run_dir)
    asked = _asked(model, treebank, format, drop_punct, special_tokens)
    if not asked:
        return open_run(run)  # a missing config.json: the error naming it
    complete = model is not None and treebank is not None
    if not run.has(run.config_path) and not complete:
        raise ValueError("a new pretrained run needs both a model folder and a treebank")
    with run.lock():
        if not run.has(run.config_path):
            return _create(
                run, model, Corpus(str(treebank), format, bool(drop_punct)), special_tokens
            )
        existing = open_run(run.path)
        if not existing.is_pretrained:
            raise PretrainedRunConflict(
                run.path, {"kind": ("trained run", "pretrained model")}, run_outputs(run)
            )
        stored = _stored(existing)
        differs = {k: (stored[k], v) for k, v in asked.items() if stored[k] != v}
        if not differs:
            if not existing.has(existing.label_names_path):
                _write_label_names(existing, existing.corpus)
            return existing
        outputs = run_outputs(run)
        replaceable = not outputs or (overwrite and outputs == [ACTIVATIONS])
        if not complete or not replaceable:
            raise PretrainedRunConflict(run.path, differs, outputs)
        corpus = Corpus(str(treebank), format, bool(drop_punct))
        if outputs:
            log.warning(
                "%s: deleting the activations of the previous settings (overwrite)", run.path
            )
        else:
            log.info("%s holds no results yet: replacing its settings", run.path)
        clear_run(run.path)  # the run's own files only; anything else stays, named in a warning
        return _create(Run(run.path), model, corpus, special_tokens)
