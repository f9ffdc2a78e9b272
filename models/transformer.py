"""Small transformers built from a config with TransformerLens' native source.

``build_transformer`` returns a TransformerLens 4 ``TransformerBridge`` around a freshly
initialised TL-native model: every TransformerLens hook name (``blocks.0.hook_resid_post``,
``blocks.1.attn.hook_pattern``, ...) works on it, and nothing is fetched from a hub.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from hierlens.core.config import Config
from hierlens.core.device import resolve_device, resolve_dtype
from hierlens.core.validate import check_int

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens.model_bridge import TransformerBridge

    from .tasks.base import Task

_ATTENTION_DIRS = ("causal", "bidirectional")
_NORMS = ("LN", "LNPre", "RMS", "RMSPre", None)
_ACTS = ("gelu", "gelu_new", "relu", "silu", "solu_ln")
_POS = ("standard", "rotary")


@dataclasses.dataclass(frozen=True)
class ModelConfig(Config):
    """Architecture of a small pre-norm transformer.

    Parameters:
        d_vocab: vocabulary size (use :meth:`for_task` to take it from a task).
        n_ctx: maximum sequence length.
        d_model: residual-stream width.
        n_layers: number of transformer blocks.
        n_heads: attention heads per block.
        d_head: per-head width (default ``d_model // n_heads``).
        d_mlp: MLP width (default ``4 * d_model``).
        act_fn: MLP activation ("gelu", "gelu_new", "relu", "silu", "solu_ln").
        normalization_type: "LN", "LNPre", "RMS", "RMSPre" or None.
        attention_dir: "causal" (language models) or "bidirectional" (encoders).
        positional_embedding_type: "standard" (learned) or "rotary".
        attn_only: attention-only blocks (no MLPs).
        seed: initialisation seed (initialisation never touches the global RNG).
    """

    FIELD_CHOICES: ClassVar[dict[str, tuple]] = {
        "act_fn": _ACTS,
        "normalization_type": _NORMS,
        "attention_dir": _ATTENTION_DIRS,
        "positional_embedding_type": _POS,
    }

    d_vocab: int
    n_ctx: int
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_head: int | None = None
    d_mlp: int | None = None
    act_fn: str = "gelu"
    normalization_type: str | None = "LN"
    attention_dir: str = "causal"
    positional_embedding_type: str = "standard"
    attn_only: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("d_vocab", "n_ctx", "d_model", "n_layers", "n_heads"):
            check_int(f"ModelConfig.{name}", getattr(self, name))
        if self.d_head is None and self.d_model % self.n_heads:
            raise ValueError(
                f"ModelConfig: d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                "set d_head explicitly or change n_heads"
            )
        for name in ("d_head", "d_mlp"):
            check_int(f"ModelConfig.{name}", getattr(self, name), none=True)
        self.check_choices()

    @property
    def head_dim(self) -> int:
        return self.d_head if self.d_head is not None else self.d_model // self.n_heads

    @classmethod
    def for_task(cls, task: Task, **kwargs: Any) -> ModelConfig:
        """A config whose vocabulary and context fit ``task`` (other fields from ``kwargs``)."""
        kwargs.setdefault("d_vocab", len(task.vocab))
        kwargs.setdefault("n_ctx", task.max_len)
        kwargs.setdefault(
            "attention_dir", "causal" if task.objective == "next_token" else "bidirectional"
        )
        return cls(**kwargs)


def build_transformer(
    config: ModelConfig,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> TransformerBridge:
    """A freshly initialised TL-native transformer wrapped in a ``TransformerBridge``.

    The weights are a deterministic function of ``config`` (``config.seed``); building does
    not consume the global RNG. ``device=None`` means CUDA when available, else CPU.
    """
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge.sources.native import boot

    tl_cfg = TransformerBridgeConfig(
        d_model=config.d_model,
        n_layers=config.n_layers,
        n_heads=config.n_heads,
        d_head=config.head_dim,
        d_mlp=config.d_mlp if config.d_mlp is not None else 4 * config.d_model,
        n_ctx=config.n_ctx,
        d_vocab=config.d_vocab,
        act_fn=config.act_fn,
        normalization_type=config.normalization_type,
        attention_dir=config.attention_dir,
        positional_embedding_type=config.positional_embedding_type,
        attn_only=config.attn_only,
        seed=config.seed,
        default_prepend_bos=False,
    )
    model = boot(
        tl_cfg, device=resolve_device(device), dtype=resolve_dtype(dtype), model_name="hierlens"
    )
    model.hierlens_config = config  # lets train() and run loading rebuild the model
    return model
