"""The trackers of a run stage behind a guard: :class:`MultiLogger` and :func:`make_logger`.

Trackers never stop a run. A tracker that fails to start (an unreachable server, a read-only
folder) or fails later (a full disk, a lost connection) is reported once, at ERROR level with
its error, and dropped; the run goes on writing its own files and checkpoints. The backends
themselves are :mod:`~hierlens.core.loggers`'.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import confined_io as fs
from .loggers import (
    MetricLogger,
    MlflowLogger,
    TensorBoardLogger,
    TrackerFiles,
    WandbLogger,
    _require,
    check_trackers,
    scalars,
)

__all__ = ["MultiLogger", "make_logger"]

log = logging.getLogger(__name__)


def _name(logger: object) -> str:
    return type(logger).__name__.removesuffix("Logger").lower()


class MultiLogger:
    """Several loggers as one (the empty one does nothing), behind a guard: a logger whose
    call raises is reported once (ERROR, with the error) and dropped, and the caller goes
    on; the trackers never stop a run."""

    def __init__(self, loggers: Sequence[MetricLogger] = ()) -> None:
        self.loggers = list(loggers)

    def __bool__(self) -> bool:
        return bool(self.loggers)

    def _each(self, what: str, call: Any) -> None:
        for lg in list(self.loggers):
            try:
                call(lg)
            except Exception as exc:  # a tracker's failure is never the run's
                self.drop(lg, f"{what} failed", exc)

    def drop(self, logger: MetricLogger, why: str, exc: BaseException) -> None:
        """Report ``logger``'s failure once and stop using it."""
        if logger in self.loggers:
            self.loggers.remove(logger)
        log.error(
            "tracker %s: %s (%s: %s); it is dropped and the run goes on without it",
            _name(logger),
            why,
            type(exc).__name__,
            exc,
        )
        with contextlib.suppress(Exception):  # already reported; it may not close cleanly
            logger.close()

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._each("logging the configuration", lambda lg: lg.log_params(params))

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        if values:
            self._each(f"logging step {step}", lambda lg: lg.log_scalars(values, step))

    def log_records(self, records: Iterable[Mapping[str, Any]], group_key: str | None) -> None:
        """Log each record's scalars at its ``step``, named ``<record[group_key]>/<key>``
        (``group_key`` None: under the record's own keys)."""
        if not self.loggers:
            return
        for r in records:
            group = None if group_key is None else str(r.get(group_key, ""))
            if group_key == "sae":
                group = f"sae{r.get('sae')}"
            values = scalars({k: v for k, v in r.items() if k != group_key}, group)
            self.log_scalars(values, int(r["step"]))

    def log_artifacts(self, paths: Sequence[str | os.PathLike]) -> None:
        """Attach the files and folders ``paths`` that exist; one that is or holds a link
        (or a FIFO, a device) is left out with an error naming it: a tracker library reads
        what it uploads by name, and must not be led outside the run."""
        if not self.loggers:
            return
        existing = []
        for p in paths:
            try:
                if fs.file_kind(p) is None:
                    continue
                unsafe = _unsafe_inside(Path(p))
            except fs.UnsafePathError as exc:
                unsafe = str(exc)
            if unsafe:
                log.error("artifact %s is not attached: %s", p, unsafe)
            else:
                existing.append(p)
        if existing:
            self._each("attaching artifacts", lambda lg: lg.log_artifacts(existing))

    def close(self) -> None:
        for lg in list(self.loggers):
            try:
                lg.close()
            except Exception as exc:
                self.drop(lg, "closing failed", exc)
        self.loggers = []

    def __enter__(self) -> MultiLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unsafe_inside(folder: Path) -> str | None:
    """The first link or special file anywhere in the folder ``folder``, named (None when
    there is none, or for a file)."""
    for name, kind in fs.entries(folder).items():
        if kind in ("link", "other"):
            return f"{folder / name} is a link or special file"
        if kind == "dir":
            found = _unsafe_inside(folder / name)
            if found:
                return found
    return None


def make_logger(
    log_to: Iterable[str],
    paths: TrackerFiles,
    *,
    name: str | None = None,
    params: Mapping[str, Any] | None = None,
    resume: bool = True,
    purge_step: int | None = None,
) -> MultiLogger:
    """A :class:`MultiLogger` over the backends in ``log_to`` writing under ``paths``
    (``resume``: continue the W&B/MLflow runs whose ids ``paths`` holds), with ``params``
    logged as hyperparameters. Every backend's library is checked before any starts (a
    missing one is a :class:`MissingExtraError`); a backend that then fails to start is
    reported and left out."""
    backends = check_trackers(log_to)
    for b in backends:
        _require(b)
    loggers: list[MetricLogger] = []
    try:  # the trackers' folders are no links: the libraries write through any they meet
        fs.make_dirs(paths.root)  # (inside them, the libraries keep links of their own)
        found = fs.entries(paths.root)
        links = [str(Path(paths.root) / n) for n, k in found.items() if k in ("link", "other")]
        unsafe = f"{links[0]} is a link or special file" if links else None
    except OSError as exc:
        unsafe = exc
    if unsafe:
        log.error(
            "tracker %s: could not start (%s); the run goes on without it",
            ", ".join(backends),
            unsafe,
        )
        return MultiLogger()
    try:
        for b in backends:
            try:
                if b == "tensorboard":
                    loggers.append(TensorBoardLogger(paths.tensorboard_dir, purge_step=purge_step))
                elif b == "wandb":
                    loggers.append(WandbLogger(paths, name=name, resume=resume))
                else:
                    loggers.append(MlflowLogger(paths, name=name, resume=resume))
            except Exception as exc:  # a tracker that cannot start never stops the run
                log.error(
                    "tracker %s: could not start (%s: %s); the run goes on without it",
                    b,
                    type(exc).__name__,
                    exc,
                )
    except BaseException:
        MultiLogger(loggers).close()
        raise
    out = MultiLogger(loggers)
    if params:
        out.log_params(params)
    return out
