"""hierlens.core: the infrastructure every wing uses and that imports no wing.

- :mod:`.atomic_io`: atomic, checksummed writes and validated reads;
- :mod:`.device`: ``device=None`` / ``dtype`` resolution;
- :mod:`.config`: the frozen :class:`~hierlens.core.config.Config` base of every config;
- :mod:`.distributed`: process groups under ``torchrun``;
- :mod:`.loggers`: experiment trackers (TensorBoard, W&B, MLflow);
- :mod:`.html_table`: small HTML tables for notebook ``_repr_html_``.

It imports torch, numpy and the standard library only.
"""

from .atomic_io import CorruptFileError
from .config import Config
from .device import resolve_device, resolve_dtype

__all__ = ["Config", "CorruptFileError", "resolve_device", "resolve_dtype"]
