"""hierlens.models: hierarchical tasks, TransformerLens-native models, training, checkpoints.

Importing this package is cheap: TransformerLens is imported only when a model is built.
"""

from .atomic_io import CorruptFileError
from .checkpoint import latest_valid_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from .config import Config
from .device import resolve_device, resolve_dtype
from .forward import model_logits
from .run import Run, open_run
from .tasks import Example, Task, get_task, list_tasks
from .train import TrainConfig, TrainResult, train
from .transformer import ModelConfig, build_transformer

__all__ = [
    "Config",
    "CorruptFileError",
    "Example",
    "ModelConfig",
    "Run",
    "Task",
    "TrainConfig",
    "TrainResult",
    "build_transformer",
    "get_task",
    "latest_valid_checkpoint",
    "list_checkpoints",
    "list_tasks",
    "load_checkpoint",
    "model_logits",
    "open_run",
    "resolve_device",
    "resolve_dtype",
    "save_checkpoint",
    "train",
]
