"""Pretrained Hugging Face models from local folders, as TransformerLens bridges.

``load_pretrained(path)`` boots a :class:`~transformer_lens.model_bridge.TransformerBridge`
with ``TransformerBridge.boot_transformers`` on a folder that holds a Hugging Face model
(``config.json``, weights, a fast tokenizer's ``tokenizer.json``) and returns it with its
tokenizer and the facts the rest of hierlens needs (causal or not, layers, width, hook
names, special-token ids). Only local folders load: a hub name such as
``"bert-base-uncased"`` is refused, so nothing is ever downloaded.

The tokenizer is the model's *fast* tokenizer as its folder defines it, set up for word
alignment: a byte-level BPE tokenizer (GPT-2 family) is loaded with ``add_prefix_space=True``
so that pre-split words tokenize as they would inside a sentence. It is the same object
whichever way the model is loaded (the bridge keeps its own copy, which TransformerLens may
set to add a BOS token); which special tokens frame a sentence is decided explicitly by
:class:`~hierlens.models.special_tokens.SpecialTokens`, never by the tokenizer's settings.
"""

from __future__ import annotations

import dataclasses
import errno
import json
from pathlib import Path
from typing import Any

import torch

from hierlens.core.device import resolve_device, resolve_dtype

__all__ = ["Pretrained", "check_model_folder", "load_pretrained"]


@dataclasses.dataclass
class Pretrained:
    """A pretrained model loaded from a local folder.

    Attributes:
        model: the ``TransformerBridge`` (in eval mode).
        tokenizer: its fast tokenizer as the folder defines it (:func:`load_tokenizer`; not
            the bridge's copy ``model.tokenizer``, whose special tokens TransformerLens sets).
        path: the folder it was loaded from.
        causal: True for a causal (left-to-right) language model, False for an encoder.
        n_layers: number of transformer blocks.
        d_model: width of the residual stream.
        hook_names: every hook name of the bridge, sorted.
        resid_hooks: ``blocks.{l}.hook_resid_post`` for every layer, in layer order.
        special_ids: the tokenizer's special-token ids (``bos``, ``eos``, ``cls``, ``sep``,
            ``pad``, ``unk``, ``mask``: those it defines).
    """

    model: Any
    tokenizer: Any
    path: Path
    causal: bool
    n_layers: int
    d_model: int
    hook_names: tuple[str, ...]
    resid_hooks: tuple[str, ...]
    special_ids: dict[str, int]

    @property
    def all_special_ids(self) -> frozenset[int]:
        """Every id the tokenizer treats as special."""
        return frozenset(int(i) for i in self.tokenizer.all_special_ids)


def _local_folder(path: str | Path) -> Path:
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a str or Path, got {type(path).__name__}")
    folder = Path(path).expanduser()
    if not folder.exists():
        raise FileNotFoundError(
            f"no folder at {str(path)!r}: only local Hugging Face folders load "
            "(hub names are never downloaded)"
        )
    if not folder.is_dir():
        raise ValueError(f"{str(path)!r} is a file; only local Hugging Face folders load")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{str(folder)!r} has no config.json; it is not a Hugging Face model")
    _check_config(folder / "config.json")
    return folder


def _check_config(path: Path) -> None:
    """A model's ``config.json`` must be a JSON object with a ``model_type`` (else an error
    naming it, before any library reads it)."""
    from hierlens.core.checksums import CorruptFileError

    try:
        cfg = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CorruptFileError(f"{path}: not a valid JSON config ({exc})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_type"), str):
        raise CorruptFileError(f"{path}: expected a JSON object with a 'model_type'")


#: weight files hierlens loads (safetensors only: a pickle is never unpickled)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def check_model_folder(folder: Path) -> None:
    """Check a model folder's weights before any library reads them, so that each fault is
    one error naming its file (``config.json`` is checked when the folder is first named):
    the weights must be safetensors (``model.safetensors`` or the shards its index names; a pickle such
    as ``pytorch_model.bin`` is refused, never loaded) whose headers parse."""
    from safetensors import safe_open

    from hierlens.core.checksums import CorruptFileError

    index = folder / WEIGHT_FILES[1]
    if (folder / WEIGHT_FILES[0]).is_file():
        shards = [folder / WEIGHT_FILES[0]]
    elif index.is_file():
        try:
            names = sorted(
                set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
            )
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            raise CorruptFileError(f"{index}: not a safetensors index ({exc})") from None
        shards = [folder / n for n in names]
        bad = [n for n in names if "/" in n or n in (".", "..")]
        if bad:
            raise CorruptFileError(f"{index}: shard names must be file names, got {bad}")
    else:
        pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(
            p.name for p in folder.glob("*.pt*")
        )
        found = f" (found {', '.join(pickles)}: pickle files, never loaded)" if pickles else ""
        raise ValueError(
            f"{folder}: no safetensors weights ({WEIGHT_FILES[0]}){found}; save the model "
            "with save_pretrained(..., safe_serialization=True)"
        )
    for shard in shards:
        if not shard.is_file():
            raise FileNotFoundError(errno.ENOENT, "a weight shard is missing", str(shard))
        try:
            with safe_open(str(shard), framework="pt") as f:
                f.keys()
        except Exception as exc:  # the library's own error types differ by version
            raise CorruptFileError(f"{shard}: not a valid safetensors file ({exc})") from None


def _byte_level_without_prefix_space(tokenizer: Any) -> bool:
    """Whether a fast tokenizer pre-tokenizes byte-level without a prefix space (GPT-2)."""
    state = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    parts = state.get("pretokenizers", [state]) if state.get("type") == "Sequence" else [state]
    return any(p.get("type") == "ByteLevel" and not p.get("add_prefix_space") for p in parts)


def _load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # the folder's tokenizer files
        raise ValueError(
            f"{folder}: cannot load the tokenizer ({type(exc).__name__}: {exc})"
        ) from None
    if not getattr(tok, "is_fast", False):
        raise ValueError(
            f"{str(folder)!r} has no fast tokenizer (tokenizer.json); word alignment needs one"
        )
    if _byte_level_without_prefix_space(tok):
        tok = AutoTokenizer.from_pretrained(
            str(folder), local_files_only=True, add_prefix_space=True
        )
    return _bounded_by_context(tok, folder)


def _bounded_by_context(tok: Any, folder: Path) -> Any:
    """``tok`` with ``model_max_length`` at most the model's context (``config.json``'s
    ``max_position_embeddings`` / ``n_positions`` / ``n_ctx``): a tokenizer saved without
    one says "unlimited", and every reader must skip the same too-long sentences."""
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    context = [cfg.get(k) for k in ("max_position_embeddings", "n_positions", "n_ctx")]
    context = [c for c in context if isinstance(c, int) and not isinstance(c, bool) and c > 0]
    limit = tok.model_max_length
    if context and not (isinstance(limit, int) and limit <= context[0]):
        tok.model_max_length = context[0]
    return tok


def load_tokenizer(path: str | Path) -> Any:
    """The fast tokenizer of the local Hugging Face folder ``path`` as :func:`load_pretrained`
    loads it (a byte-level BPE one with ``add_prefix_space=True``), without the model."""
    return _load_tokenizer(_local_folder(path))


def _special_ids(tokenizer: Any) -> dict[str, int]:
    out = {}
    for name in ("bos", "eos", "cls", "sep", "pad", "unk", "mask"):
        value = getattr(tokenizer, f"{name}_token_id", None)
        if isinstance(value, int):
            out[name] = value
    return out


def load_pretrained(
    path: str | Path,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> Pretrained:
    """Load the Hugging Face model in the local folder ``path`` as a TransformerBridge.

    Args:
        path: a folder with ``config.json``, the weights and a fast tokenizer.
        device: where the model lives (default: CUDA when available, else CPU).
        dtype: its parameter dtype (default float32).

    Returns:
        a :class:`Pretrained` with the bridge (eval mode), its tokenizer and its facts.

    Raises:
        FileNotFoundError: ``path`` does not exist (hub names are not downloaded).
        ValueError: ``path`` is not a model folder, has no fast tokenizer, or its files are
            not valid (each error names the file: see :func:`check_model_folder`).
    """
    folder = _local_folder(path)
    check_model_folder(folder)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype) if dtype is not None else torch.float32
    tokenizer = _load_tokenizer(folder)
    from transformer_lens.model_bridge import TransformerBridge

    # the bridge gets its own copy: TransformerLens edits the tokenizer it is given (its BOS
    # token, add_bos_token), and hierlens frames sentences from the folder's own settings
    try:
        model = TransformerBridge.boot_transformers(
            str(folder), device=str(dev), dtype=dt, tokenizer=_load_tokenizer(folder)
        )
    except (OSError, ValueError, KeyError) as exc:  # the folder's content, not hierlens
        raise ValueError(f"{folder}: cannot load the model ({type(exc).__name__}: {exc})") from None
    model.eval()
    cfg = model.cfg
    n_layers, d_model = int(cfg.n_layers), int(cfg.d_model)
    tok = tokenizer  # bounded by the model's context (_load_tokenizer)
    return Pretrained(
        model=model,
        tokenizer=tok,
        path=folder,
        causal=getattr(cfg, "attention_dir", "causal") == "causal",
        n_layers=n_layers,
        d_model=d_model,
        hook_names=tuple(sorted(model.hook_dict)),
        resid_hooks=tuple(f"blocks.{layer}.hook_resid_post" for layer in range(n_layers)),
        special_ids=_special_ids(tok),
    )
