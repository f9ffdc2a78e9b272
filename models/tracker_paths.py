"""Where the experiment trackers of one stage of a run keep their files
(``RUN/trackers/<stage>/``, named by :meth:`hierlens.models.Run.trackers`)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["TrackerPaths"]


class TrackerPaths:
    """The files of the experiment trackers of one stage, under ``root``: TensorBoard event
    files, the W&B run folder and run id, the local MLflow file store and run id."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"TrackerPaths({str(self.root)!r})"

    @property
    def tensorboard_dir(self) -> Path:
        """``tensorboard/``: the event files."""
        return self.root / "tensorboard"

    @property
    def wandb_dir(self) -> Path:
        """The folder W&B writes its ``wandb/`` run folders under."""
        return self.root

    @property
    def wandb_id_path(self) -> Path:
        """``wandb_run_id``: the W&B run id, so a resumed run continues the same W&B run."""
        return self.root / "wandb_run_id"

    @property
    def mlflow_store(self) -> Path:
        """``mlruns/``: the default (local file) MLflow tracking store."""
        return self.root / "mlruns"

    @property
    def mlflow_id_path(self) -> Path:
        """``mlflow_run_id``: the MLflow run id (and its tracking URI), for resuming."""
        return self.root / "mlflow_run_id.json"
