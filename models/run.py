"""A run directory: :class:`Run` is its layout (:class:`~hierlens.models.run_layout.RunLayout`:
every path, what it holds, the writer lock) with what loads from it (config, task, model,
checkpoints, pretrained model, data; :mod:`~hierlens.models.run_load`).
:func:`open_run` opens an existing run and checks its ``config.json``; a pretrained run is
created (or reopened with its settings checked) by
:func:`~hierlens.models.pretrained_run.open_pretrained_run`.

The three parts: layout (``run_layout.py``), locking (``run_lock.py``) and loading
(``run_load.py``); this module joins them into the one :class:`Run` users hold.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any

import torch

from hierlens.core.atomic_io import read_json
from hierlens.core.checksums import CorruptFileError

from .corpus import Corpus
from .run_layout import CONFIG, PRETRAINED, SPECIAL_TOKENS, RunLayout
from .run_load import load_model, model_config_from_dict, model_id
from .special_tokens import SpecialTokens
from .tasks.base import Task
from .tasks.registry import get_task
from .train_config import TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens.model_bridge import TransformerBridge

    from .architectures import ArchConfig
    from .pretrained import Pretrained
    from .tasks.base import Example
    from .transformer import ModelConfig

__all__ = ["Run", "open_run", "write_run_config"]


class Run(RunLayout):
    """A run directory: the paths of its layout (:class:`RunLayout`) and readers for what is
    in it: its config, task, model at each checkpoint, pretrained model and data.

    ``Run(path)`` does not touch the disk, so a writer can name the paths of a run it is
    about to create; ``config`` (and what derives from it: ``task``, ``model_config``,
    ``train_config``) is read from ``config.json`` when first asked for, unless given.
    """

    def _repr_html_(self) -> str:
        """A table of what the run holds (see :func:`hierlens.models.run_display.run_summary`)."""
        from hierlens.core.html_table import key_value_table

        from .run_display import run_summary

        return key_value_table(run_summary(self), caption=f"Run {self.path.name}")

    def pretrained(self, device: str | torch.device | None = None) -> Pretrained:
        """The pretrained model of the run (loaded once per device)."""
        from hierlens.core.device import resolve_device

        from .pretrained import load_pretrained

        if not self.is_pretrained:
            raise ValueError(f"{self.path} is a trained run, not a pretrained model")
        cache = self.__dict__.setdefault("_pretrained", {})
        key = str(resolve_device(device))
        if key not in cache:
            cache[key] = load_pretrained(self.config[PRETRAINED]["path"], device=device)
        return cache[key]

    @property
    def special_tokens(self) -> SpecialTokens:
        """The special tokens that frame a pretrained run's sentences: resolved once, when
        the run was created, and stored in ``config.json`` (``"special_tokens"``). A run
        whose ``config.json`` predates that key framed them as its tokenizer did by default
        (policy ``template``), and keeps doing so."""
        if not self.is_pretrained:
            raise ValueError(f"{self.path} is a trained run; its tokens come from its task")
        stored = self.config.get(SPECIAL_TOKENS)
        if stored is not None:
            return SpecialTokens.from_dict(stored)
        if "_legacy_frame" not in self.__dict__:
            from .pretrained import load_tokenizer

            tokenizer = load_tokenizer(self.config[PRETRAINED]["path"])
            self.__dict__["_legacy_frame"] = SpecialTokens("template").resolve(tokenizer)
        return self.__dict__["_legacy_frame"]

    def examples(
        self, split: str, n: int | None = None, seed: int = 0, drop_punct: bool | None = None
    ) -> list[Example]:
        """The run's data: ``n`` examples of the task's ``split`` drawn with ``seed`` (trained
        runs), or the corpus's sentences of ``split`` tokenised for the model and framed by
        :attr:`special_tokens` (pretrained runs: ``all``, ``train``, ``dev``, ``test``; all
        of them when ``n`` is None). ``drop_punct=True`` reads a corpus that keeps its
        punctuation without it (the same sentences, punctuation words removed); None: the
        corpus as the run reads it. A task marks no punctuation, so a trained run takes
        only None."""
        if self.is_pretrained:
            from .pretrained import load_tokenizer

            corpus = self.corpus
            if drop_punct is not None and drop_punct != corpus.drop_punct:
                if not drop_punct:
                    raise ValueError(
                        f"{self.path} reads its corpus without punctuation (drop_punct); it "
                        "cannot be put back: create a run without drop_punct to keep it"
                    )
                corpus = Corpus(corpus.path, corpus.format, True)
            tokenizer = load_tokenizer(self.config[PRETRAINED]["path"])
            return corpus.examples(tokenizer, split, n, seed, special_tokens=self.special_tokens)
        if drop_punct is not None:
            raise ValueError(
                f"{self.path} is a trained run: its task's sequences mark no punctuation"
            )
        if n is None:
            raise ValueError("a task's examples need a count n")
        return self.task.sample(n, split, seed)

    def label_names(self) -> dict[str, list[str]]:
        """The stored label names (:attr:`label_names_path`, checked against its checksum);
        ``{}`` when the run has none (a trained run, a text corpus, or a run written before
        they were stored)."""
        if not self.has(self.label_names_path):
            return {}
        with self.confined():
            names = read_json(self.label_names_path)
        if not isinstance(names, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in names.values()
        ):
            raise CorruptFileError(
                f"{self.label_names_path}: expected an object of label-name lists"
            )
        return names

    def model_id(self, step: int) -> dict[str, Any]:
        """What identifies the model at ``step`` in the stores captured from it
        (:func:`~hierlens.models.run_load.model_id`)."""
        return model_id(self, step)

    @property
    def task(self) -> Task:
        if self.is_pretrained:
            raise ValueError(
                f"{self.path} analyses a pretrained model on a corpus and has no task; "
                "its data are run.examples(split)"
            )
        t = self.config["task"]
        return get_task(t["name"], **t.get("params", {}))

    @property
    def model_config(self) -> ModelConfig | ArchConfig:
        """The model's config: an :class:`~hierlens.models.architectures.ArchConfig` when
        ``config.json``'s ``model`` has an ``"arch"`` key, else a :class:`ModelConfig`."""
        return model_config_from_dict(self.config["model"])

    @property
    def train_config(self) -> TrainConfig | None:
        return TrainConfig.from_dict(self.config["train"]) if "train" in self.config else None

    def load_model(
        self, step: int | None = None, device: str | torch.device | None = None
    ) -> TransformerBridge | torch.nn.Module:
        """The model at checkpoint ``step`` (default: the newest valid checkpoint)."""
        return load_model(self, step, device)


def write_run_config(run_dir: str | os.PathLike, config: dict[str, Any]) -> None:
    """Write ``config`` as the ``config.json`` of ``run_dir`` (atomically)."""
    Run(run_dir).write_config(config)


def _not_a_run(run: Run) -> FileNotFoundError:
    """The error for a folder without ``config.json`` (naming the missing file)."""
    return FileNotFoundError(
        errno.ENOENT,
        f"{run.path} is not a hierlens run directory (no {CONFIG})",
        str(run.config_path),
    )


def open_run(run_dir: str | os.PathLike | Run) -> Run:
    """Open an existing run directory (written by :func:`hierlens.models.train`), checking
    that its ``config.json`` names a task and a model."""
    run = run_dir if isinstance(run_dir, Run) else Run(run_dir)
    if not run.has(run.config_path):
        raise _not_a_run(run)
    with run.confined():
        config = read_json(run.config_path)
    trained = isinstance(config, dict) and "task" in config and "model" in config
    pretrained = isinstance(config, dict) and PRETRAINED in config and "data" in config
    if not (trained or pretrained):
        raise ValueError(
            f"{run.config_path}: expected keys 'task' and 'model' (a trained run) or "
            f"'{PRETRAINED}' and 'data' (a pretrained model on a corpus)"
        )
    return Run(run.path, config)
