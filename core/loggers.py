"""Experiment trackers: the scalars of ``metrics.jsonl`` (and of SAE training and tracking)
sent to TensorBoard, Weights & Biases or MLflow as they are written.

A :class:`MetricLogger` takes the same records the run directory gets (``step`` plus metric
values) and logs their numeric values under ``<group>/<metric>`` names at the record's own
step; the run's configuration as hyperparameters; and files (the report, figures) as
artifacts where the backend has them. Each backend goes through its own library, imported
only when a logger is made (the ``tracking`` extra: ``pip install 'hierlens[tracking]'``):

- ``"tensorboard"``: :class:`torch.utils.tensorboard.SummaryWriter` event files; no artifacts.
- ``"wandb"``: a W&B run (``WANDB_MODE``, ``WANDB_PROJECT``, ``WANDB_ENTITY`` are respected;
  ``mode="offline"`` writes the run folder only). Every value is logged with a ``step``
  column that W&B plots against, so steps need not be increasing.
- ``"mlflow"``: an MLflow run on ``MLFLOW_TRACKING_URI`` or, by default, a local file store
  in the run directory.

The W&B and MLflow run ids are kept beside the tracker files (:class:`TrackerFiles`; a run
directory gives them with :meth:`hierlens.models.Run.trackers`), so a resumed run continues
the same tracker run.

Trackers never stop a run: they run behind the guard of :mod:`~hierlens.core.trackers`.
Connecting to a tracking server is bounded by :data:`CONNECT_TIMEOUT_S` (an MLflow server is
probed before its client, which would otherwise retry for minutes, is made).
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from . import confined_io as fs
from .atomic_io import atomic_write_json, read_json
from .checksums import CorruptFileError

__all__ = [
    "CONNECT_TIMEOUT_S",
    "TRACKERS",
    "MetricLogger",
    "MissingExtraError",
    "MlflowLogger",
    "TensorBoardLogger",
    "TrackerFiles",
    "WandbLogger",
    "check_trackers",
    "flat_params",
    "scalars",
]

#: the experiment trackers a run can log to
TRACKERS = ("tensorboard", "wandb", "mlflow")
#: seconds to wait for a tracking server to accept a connection (and for each request)
CONNECT_TIMEOUT_S = 10.0
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow-skinny"}


class MissingExtraError(ImportError):
    """An optional extra is not installed (a one-line message naming it)."""


def _require(backend: str) -> Any:
    """Import the library of ``backend`` (a :class:`MissingExtraError` naming the extra when
    it is missing)."""
    try:
        if backend == "tensorboard":
            from torch.utils import tensorboard

            return tensorboard
        if backend == "wandb":
            import wandb

            return wandb
        import mlflow.tracking

        return mlflow
    except ImportError:
        raise MissingExtraError(
            f"logging to {backend} needs the {_PACKAGES[backend]!r} package: "
            "pip install 'hierlens[tracking]'"
        ) from None


def check_trackers(log_to: object, where: str = "log_to") -> tuple[str, ...]:
    """``log_to`` (a name or names from :data:`TRACKERS`) as a tuple; a ``ValueError``
    naming ``where`` otherwise."""
    names = (log_to,) if isinstance(log_to, str) else tuple(log_to or ())
    bad = [b for b in names if b not in TRACKERS]
    if bad:
        raise ValueError(f"{where}: unknown tracker(s) {bad}; choose from {TRACKERS}")
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: a tracker is named twice in {names}")
    return names


class TrackerFiles(Protocol):
    """Where the trackers of one stage keep their files, under ``root``
    (:class:`hierlens.models.tracker_paths.TrackerPaths` names them inside a run directory)."""

    @property
    def root(self) -> Path: ...
    @property
    def tensorboard_dir(self) -> Path: ...
    @property
    def wandb_dir(self) -> Path: ...
    @property
    def wandb_id_path(self) -> Path: ...
    @property
    def mlflow_store(self) -> Path: ...
    @property
    def mlflow_id_path(self) -> Path: ...


def scalars(record: Mapping[str, Any], group: str | None) -> dict[str, float]:
    """The numeric values of ``record`` (not ``step``, not booleans) named ``group/key``."""
    out = {}
    for key, value in record.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[f"{group}/{key}" if group else key] = float(value)
    return out


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as flat ``a.b`` keys with scalar values (lists become JSON text)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_params(value, name + "."))
        elif value is None or isinstance(value, (list, tuple)):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


@runtime_checkable
class MetricLogger(Protocol):
    """What every tracker backend does."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log the run's configuration (nested dicts are flattened) as hyperparameters."""

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        """Log named scalars at ``step``."""

    def log_artifacts(self, paths: Sequence[str | os.PathLike]) -> None:
        """Attach files or folders to the run (a no-op where the backend has no artifacts)."""

    def close(self) -> None:
        """Flush and finish."""


class TensorBoardLogger:
    """Event files in ``log_dir`` through :class:`torch.utils.tensorboard.SummaryWriter`.

    ``purge_step``: on resume, events at or after this step written by the interrupted
    process are hidden by TensorBoard (they are logged again)."""

    def __init__(self, log_dir: str | os.PathLike, purge_step: int | None = None) -> None:
        tb = _require("tensorboard")
        self.log_dir = Path(log_dir)
        self.writer = tb.SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        flat = flat_params(params)
        self.writer.add_text("config", "```\n" + json.dumps(params, indent=2) + "\n```")
        exp, ssi, sei = hparams({k: v for k, v in flat.items()}, {})
        fw = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            fw.add_summary(summary)

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=step)

    def log_artifacts(self, paths: Sequence[str | os.PathLike]) -> None:
        return None

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class WandbLogger:
    """A W&B run (offline or online as ``mode`` or ``WANDB_MODE`` say) whose id is kept in
    ``paths.wandb_id_path``; making a logger with the same paths again continues that run."""

    def __init__(
        self,
        paths: TrackerFiles,
        *,
        name: str | None = None,
        project: str | None = None,
        mode: str | None = None,
        resume: bool = True,
    ) -> None:
        wandb = _require("wandb")
        fs.make_dirs(paths.root)
        run_id = None
        if resume and fs.file_kind(paths.wandb_id_path) == "file":
            run_id = fs.read_bytes(paths.wandb_id_path).decode("utf-8", "replace").strip()
            if not _RUN_ID.fullmatch(run_id):
                raise CorruptFileError(f"{paths.wandb_id_path}: not a W&B run id")
        self.resumed = run_id is not None
        run_id = run_id or uuid.uuid4().hex[:12]
        self.run = wandb.init(
            project=project or os.environ.get("WANDB_PROJECT", "hierlens"),
            name=name,
            id=run_id,
            resume="allow",
            dir=str(paths.wandb_dir),
            mode=mode or os.environ.get("WANDB_MODE") or None,
            reinit="create_new",
            settings=wandb.Settings(init_timeout=max(CONNECT_TIMEOUT_S, 60.0)),
        )
        fs.write_bytes(paths.wandb_id_path, run_id.encode())
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")
        self.run_dir = Path(self.run.dir).parent

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.run.config.update(dict(params), allow_val_change=True)

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        self.run.log({"step": step, **values})

    def log_artifacts(self, paths: Sequence[str | os.PathLike]) -> None:
        for p in map(Path, paths):
            if p.is_dir():
                for f in sorted(p.rglob("*")):
                    if f.is_file():
                        self.run.save(str(f), base_path=str(p.parent), policy="now")
            elif p.is_file():
                self.run.save(str(p), base_path=str(p.parent), policy="now")

    def close(self) -> None:
        self.run.finish()


class MlflowLogger:
    """An MLflow run on ``tracking_uri`` (``MLFLOW_TRACKING_URI``; default: a local file
    store at ``paths.mlflow_store``) in ``experiment``, its id kept in
    ``paths.mlflow_id_path``; making a logger with the same paths again continues that run."""

    def __init__(
        self,
        paths: TrackerFiles,
        *,
        name: str | None = None,
        experiment: str | None = None,
        tracking_uri: str | None = None,
        resume: bool = True,
    ) -> None:
        _require("mlflow")
        from mlflow.tracking import MlflowClient

        saved = None
        if fs.file_kind(paths.mlflow_id_path) == "file":
            saved = read_json(paths.mlflow_id_path, verify=False)
            ok = isinstance(saved, dict) and all(
                isinstance(saved.get(k), str) for k in ("run_id", "tracking_uri")
            )
            if not ok or not _RUN_ID.fullmatch(saved["run_id"]):
                raise CorruptFileError(f"{paths.mlflow_id_path}: not an MLflow run id record")
        uri = (
            tracking_uri
            or (saved or {}).get("tracking_uri")
            or os.environ.get("MLFLOW_TRACKING_URI")
            or paths.mlflow_store.resolve().as_uri()
        )
        if uri.startswith("file:"):
            # MLflow 3 keeps its local file store behind an opt-in; it is the default here
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        else:
            _probe_server(uri)
            # bounded requests: MLflow's own defaults retry a dead server for minutes
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(CONNECT_TIMEOUT_S)))
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        self.client = MlflowClient(tracking_uri=uri)
        self.tracking_uri = uri
        self.resumed = bool(resume and saved and saved.get("tracking_uri") == uri)
        if self.resumed:
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            exp_name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME", "hierlens")
            exp = self.client.get_experiment_by_name(exp_name)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(exp_name)
            self.run_id = self.client.create_run(exp_id, run_name=name).info.run_id
            atomic_write_json(paths.mlflow_id_path, {"run_id": self.run_id, "tracking_uri": uri})

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        if self.resumed:  # MLflow params are write-once; the first process logged them
            return
        items = [Param(k, str(v)[:6000]) for k, v in flat_params(params).items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items() if math.isfinite(v)]
        for i in range(0, len(metrics), 500):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 500])

    def log_artifacts(self, paths: Sequence[str | os.PathLike]) -> None:
        for p in map(Path, paths):
            if p.is_dir():
                self.client.log_artifacts(self.run_id, str(p), artifact_path=p.name)
            elif p.is_file():
                self.client.log_artifact(self.run_id, str(p))

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _probe_server(uri: str) -> None:
    """Raise ``ConnectionError`` naming ``uri`` unless its server accepts a TCP connection
    within :data:`CONNECT_TIMEOUT_S` (http and https URIs; others are not probed)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ConnectionError(
            f"tracking server {uri} is unreachable within {CONNECT_TIMEOUT_S:g} s ({exc})"
        ) from None
