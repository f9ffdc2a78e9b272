"""hierlens.core: the infrastructure every wing uses and that imports no wing.

- :mod:`.confined_io`, :mod:`.confined_delete`: the one way files are opened, written,
  listed and deleted, never through a link or outside their root;
- :mod:`.checksums`, :mod:`.atomic_io`: checksum manifests written with the data; atomic,
  checksummed writes and validated reads;
- :mod:`.device`: ``device=None`` / ``dtype`` resolution, a model's device and dtype;
- :mod:`.config`: the frozen :class:`~hierlens.core.config.Config` base of every config;
- :mod:`.validate`: the argument checks of every config and entry point;
- :mod:`.distributed`: process groups under ``torchrun``;
- :mod:`.loggers`, :mod:`.trackers`: experiment trackers (TensorBoard, W&B, MLflow) behind
  a guard that drops a failing one;
- :mod:`.html_table`: small HTML tables for notebook ``_repr_html_``;
- :mod:`.optim`: the one stacked optimizer step (per-member gradient clipping and AdamW,
  :class:`~hierlens.core.optim.StackedAdamW`) and the one learning-rate schedule
  (:func:`~hierlens.core.optim.lr_at`).

It imports torch, numpy and the standard library only.
"""

from .checksums import CorruptFileError
from .config import Config
from .device import resolve_device, resolve_dtype

__all__ = ["Config", "CorruptFileError", "resolve_device", "resolve_dtype"]
