"""A run directory: :class:`Run` is its layout (:class:`~hierlens.models.run_layout.RunLayout`:
every path, what it holds, the writer lock) with what loads from it (config, task, model,
checkpoints, pretrained model, data; :mod:`~hierlens.models.run_load`).
:func:`open_run` opens an existing run and checks its ``config.json``.

The three parts: layout (``run_layout.py``), locking (``run_lock.py``) and loading
(``run_load.py``); this module joins them into the one :class:`Run` users hold.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import TYPE_CHECKING, Any

import torch

from hierlens.core import confined_io as fs
from hierlens.core.atomic_io import read_json
from hierlens.core.checksums import CHECKSUMS, CorruptFileError

from .run_layout import CONFIG, PRETRAINED, RunLayout
from .run_load import load_model, model_config_from_dict, model_id
from .run_lock import LOCK_FILE
from .tasks.base import Task
from .tasks.registry import get_task
from .train_config import TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens.model_bridge import TransformerBridge

    from .architectures import ArchConfig
    from .pretrained import Pretrained
    from .tasks.base import Example
    from .transformer import ModelConfig

log = logging.getLogger(__name__)

__all__ = ["Run", "open_or_create_run", "open_run", "write_run_config"]


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

    def examples(self, split: str, n: int | None = None, seed: int = 0) -> list[Example]:
        """The run's data: ``n`` examples of the task's ``split`` drawn with ``seed`` (trained
        runs), or the corpus's sentences of ``split`` tokenised for the model (pretrained
        runs: ``all``, ``train``, ``dev``, ``test``; all of them when ``n`` is None)."""
        if self.is_pretrained:
            from .pretrained import load_tokenizer

            tokenizer = load_tokenizer(self.config[PRETRAINED]["path"])
            return self.corpus.examples(tokenizer, split, n, seed)
        if n is None:
            raise ValueError("a task's examples need a count n")
        return self.task.sample(n, split, seed)

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


def open_or_create_run(run_dir: str | os.PathLike, config: dict[str, Any]) -> Run:
    """The run in ``run_dir`` with ``config``: created if there is none; an existing run
    with the same config is opened. A run with another config is an error, unless it holds
    nothing but its config (a command that failed before writing a result, whose corrected
    retry then replaces it)."""
    run = Run(run_dir)
    with run.lock():
        if run.has(run.config_path):
            try:
                same = open_run(run).config == config
            except (CorruptFileError, ValueError):
                same = False
            if not same:
                extra = set(fs.entries(run.path)) - {CONFIG, CHECKSUMS, LOCK_FILE}
                if extra:
                    raise ValueError(
                        f"{run.path} already holds another run; choose another run directory"
                    )
                log.info("%s held only the config of a failed attempt; replacing it", run.path)
                run.write_config(config)
        else:
            run.write_config(config)
    return open_run(run.path)


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
