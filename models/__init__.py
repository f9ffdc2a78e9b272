"""hierlens.models: hierarchical tasks, TransformerLens-native models, training, checkpoints.

Importing this package is cheap: TransformerLens is imported only when a model is built.
"""

from .capture import capture, model_fingerprint
from .checkpoint import load_checkpoint, save_checkpoint
from .checkpoint_capture import activations_dir, capture_checkpoints
from .evaluate_many import evaluate_stack
from .forward import model_logits
from .hooks import available_hook_names, resolve_hook_names
from .pretrained import Pretrained, load_pretrained, load_tokenizer
from .run import Run, open_run
from .run_load import latest_valid_checkpoint, list_checkpoints
from .sentence import Sentence
from .store import ActivationStore
from .tasks.base import Example, Task
from .tasks.registry import get_task, list_tasks
from .text import label_vocabulary, pool_words, read_text, tokenize_words
from .train import TrainResult, train
from .train_config import TrainConfig
from .train_many import train_many
from .transformer import ModelConfig, build_transformer
from .treebank import read_conllu, read_ptb, shipped_treebank

__all__ = [
    "Pretrained",
    "Sentence",
    "label_vocabulary",
    "load_pretrained",
    "load_tokenizer",
    "pool_words",
    "read_conllu",
    "read_ptb",
    "read_text",
    "shipped_treebank",
    "tokenize_words",
    "ActivationStore",
    "activations_dir",
    "available_hook_names",
    "capture",
    "capture_checkpoints",
    "model_fingerprint",
    "resolve_hook_names",
    "evaluate_stack",
    "Example",
    "ModelConfig",
    "Task",
    "get_task",
    "list_tasks",
    "Run",
    "TrainConfig",
    "TrainResult",
    "build_transformer",
    "latest_valid_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "model_logits",
    "open_run",
    "save_checkpoint",
    "train",
    "train_many",
]
