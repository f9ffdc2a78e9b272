"""Batched activation capture into an :class:`~hierlens.models.store.ActivationStore`.

``capture(model, data, hooks, batch_size=...)`` runs ``model`` over ``data`` in padded
batches under ``torch.inference_mode()`` and keeps, for every requested hook, the
activation of every selected real token (pad positions are never stored). The forward pass
is cut short by an exception raised from the last requested hook once all of them have
fired, so nothing past the deepest requested layer runs (this works for TransformerLens
bridges of every source and for plain modules alike). On CUDA the selected rows are copied
device -> pinned host buffers with non-blocking copies and synchronised once per shard;
shards are written by a background thread while the next shard computes, so host memory
holds at most two shards whatever the number of tokens.

Real sentences (examples from :func:`hierlens.models.tokenize_words` run through a
pretrained bridge) can be stored per word: ``pool="first" | "last" | "mean"`` keeps one
row per word, pooled over its sub-word tokens, and drops the special tokens.
"""

from __future__ import annotations

import contextvars
import hashlib
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hierlens.core.device import resolve_device, resolve_dtype
from hierlens.core.validate import check_int

from .capture_data import (
    POOLS,
    Positions,
    _Data,
    _data_sha256,
    _prepare_data,
    _select_rows,
)
from .forward import evaluating
from .hooks import attached_hooks, is_hooked_model, resolve_hook_names
from .model_inputs import forward_kwargs, hf_model
from .store import ActivationStore, hook_dir_name
from .store_writer import StoreWriter

DEFAULT_SHARD_BYTES = 1 << 26


class _StopForward(Exception):
    """Raised from the last requested hook to skip the rest of the forward pass."""


def _pool_plan(
    idx: torch.Tensor, lens: torch.Tensor, how: str
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Gather plan for pooling words out of a flattened ``(B * T, d)`` batch.

    ``idx`` are the flat rows of the words' first tokens, ``lens`` their lengths. Returns
    ``(rows, owner, lens)``: for "first"/"last" the one row per word to take (owner None);
    for "mean" every member token's row and the word each belongs to."""
    if how == "first":
        return idx, None, None
    if how == "last":
        return idx + lens - 1, None, None
    owner = torch.repeat_interleave(torch.arange(len(idx), dtype=torch.int64), lens)
    before = torch.cumsum(lens, 0) - lens
    within = torch.arange(int(lens.sum()), dtype=torch.int64) - before[owner]
    return idx[owner] + within, owner, lens


def model_fingerprint(model: torch.nn.Module) -> dict[str, Any]:
    """The default model identity recorded in a store: class name and the sha256 of the
    state dict (names, dtypes, shapes and bytes of every tensor)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return {"class": type(model).__name__, "state_dict_sha256": h.hexdigest()}


# ---------------------------------------------------------------------- the forward pass
def _model_device(model: torch.nn.Module) -> torch.device | None:
    for p in model.parameters():
        return p.device
    return None


def _accepts_attention_mask(model: torch.nn.Module) -> bool:
    if is_hooked_model(model):
        return True
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False
    return "attention_mask" in params


class _Runner:
    """Runs padded batches through the model with capture hooks attached."""

    def __init__(self, model: torch.nn.Module, names: list[str], device: torch.device) -> None:
        self.model = model
        self.names = names
        self.device = device
        self.pass_mask = _accepts_attention_mask(model)
        self.sink: Callable[[str, torch.Tensor], None] | None = None
        self.fired: dict[str, int] = {}
        self.early_stop = False

    def on_hook(self, name: str, x: torch.Tensor) -> None:
        if name in self.fired:
            self.fired[name] += 1
            if self.early_stop:
                raise ValueError(f"hook {name!r} fired twice in one forward pass")
            return
        self.fired[name] = 1
        assert self.sink is not None
        self.sink(name, x)
        if self.early_stop and len(self.fired) == len(self.names):
            raise _StopForward

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
        self.fired = {}
        try:
            if hf_model(self.model) is not None:
                self.model(tokens, **forward_kwargs(self.model, attention_mask, tokens))
            elif attention_mask is not None and self.pass_mask:
                self.model(tokens, attention_mask=attention_mask)
            else:
                self.model(tokens)
        except _StopForward:
            pass
        missing = [n for n in self.names if n not in self.fired]
        if missing:
            raise ValueError(
                f"hook(s) {missing} did not fire in the forward pass (on a TransformerBridge "
                "some hooks must be switched on first, e.g. model.set_use_attn_result(True))"
            )


def _pad_batch(
    data: _Data, mask: torch.Tensor, a: int, b: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Right-padded tokens ``(B, T)``, the padding mask (None when nothing is padded) and
    the flat indices into ``B * T`` of the selected tokens (in row order)."""
    lengths = data.lengths[a:b]
    t = int(lengths.max())
    valid = torch.arange(t)[None, :] < lengths[:, None]
    lo, hi = int(data.offsets[a]), int(data.offsets[b])
    tokens = torch.full((b - a, t), pad_id, dtype=torch.int64)
    tokens[valid] = data.tokens[lo:hi]
    chosen = torch.zeros((b - a, t), dtype=torch.bool)
    chosen[valid] = mask[lo:hi]
    attn = None if bool(valid.all()) else valid.to(torch.int64)
    return tokens, attn, chosen.reshape(-1).nonzero().squeeze(1)


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


# ---------------------------------------------------------------------- capture
def capture(
    model: torch.nn.Module,
    data: Any,
    hooks: str | Sequence[str],
    *,
    batch_size: int,
    out_dir: str | Path | None = None,
    positions: Positions = None,
    pool: str | None = None,
    labels: Mapping[str, Any] | None = None,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device | None = None,
    model_id: dict[str, Any] | None = None,
    allow_nonfinite: bool = False,
    overwrite: bool = False,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: bool = True,
) -> ActivationStore:
    """Capture the activations of ``hooks`` for every selected token of ``data``.

    Args:
        model: a TransformerLens ``TransformerBridge`` (native or booted from a local Hugging
            Face model), or any ``nn.Module`` taking ``(batch, seq)`` token ids (then hook
            names are module names and the module outputs are captured). Padding is passed
            as ``attention_mask`` (1 = real token) to bridges and to modules whose
            ``forward`` takes ``attention_mask``; other modules must be causal for padding not
            to leak. The model is run in eval mode (restored afterwards) and moved to
            ``device`` when one is given.
        data: a ``(n_sequences, seq_len)`` token tensor, a list of variable-length token
            sequences (right-padded internally), a list of task ``Example`` s (their
            ``token_labels`` become :attr:`ActivationStore.labels`; real sentences come as
            examples from :func:`hierlens.models.tokenize_words`), or a task split
            ``(task_or_name, split, n, seed)``. Padding uses the model tokenizer's pad id
            (0 when it has none). No sequence may be longer than the model's context
            (``model.cfg.n_ctx`` where the model has one): that is a ``ValueError`` before
            any forward pass.
        hooks: hook names or glob patterns (``"blocks.*.hook_resid_post"``); see
            :func:`hierlens.models.hooks.resolve_hook_names`.
        batch_size: sequences per forward pass.
        out_dir: None for an in-memory store; else a folder of checksummed safetensors shards
            and ``manifest.json``. An existing store there with the same model, data, hooks,
            dtype and batch size is resumed (complete shards kept); a different one is a
            ``ValueError`` unless ``overwrite``.
        positions: None (every real token), a boolean mask (``(n_sequences, >= len)`` or a
            list of per-sequence masks), or a callable ``f(tokens_1d) -> bool mask or
            indices`` selecting positions of each sequence.
        pool: None (one stored row per selected token) or ``"first"``, ``"last"`` or
            ``"mean"``: one row per *word* of example data, pooled over the word's
            sub-word tokens as :func:`hierlens.models.pool_words` does (the first or last
            sub-token, or their mean); tokens outside every word (``[CLS]``, ``[SEP]``,
            ``<|endoftext|>``) are dropped. Words are ``Example.word_spans`` (or the one token
            at each of ``word_positions`` when there are no spans). With pooling the index's
            ``position`` column holds the *word index* within the sentence, ``token`` the
            word's first sub-token id, and each label is the value at the word's first token
            (:func:`~hierlens.models.tokenize_words` gives every sub-token of a word the
            word's labels). The choice is part of the store's data identity
            (``manifest["data"]["pool"]``), so pooled and unpooled captures never mix in
            one folder. Cannot be combined with ``positions``.
        labels: extra per-token integer labels, laid out like ``positions`` masks.
        dtype: storage dtype of the activations.
        device: where to run (None: where the model is; CUDA else CPU for a parameterless
            model).
        model_id: identity recorded in the manifest (e.g. run and checkpoint step); default
            :func:`model_fingerprint` of the state dict.
        allow_nonfinite: keep NaN/inf activations (counted in
            :attr:`ActivationStore.nonfinite`) instead of raising ``ValueError``.
        shard_bytes: target size of a shard across all hooks (a shard holds whole batches).
        progress: show a tqdm bar over batches.

    Returns:
        The :class:`ActivationStore`; ``store[hook]`` has shape ``(n_selected_tokens, d)``
        (``(n_words, d)`` with ``pool``) with ``d`` the product of the hook's per-token
        dimensions.
    """
    dtype = _check_capture_args(model, batch_size, shard_bytes, dtype, model_id, pool, positions)
    names = resolve_hook_names(model, hooks)
    d = _prepare_data(data, labels)
    mask, word_len, word_index = _select_rows(model, d, positions, pool)
    dev, pad_id = _place_model(model, device)

    runner = _Runner(model, names, dev)
    with evaluating(model), attached_hooks(model, names, runner.on_hook):
        shapes = _probe(runner, d, pad_id)
        header, index = _plan(d, mask, names, shapes, dtype, batch_size, shard_bytes)
        header["model"] = model_id if model_id is not None else model_fingerprint(model)
        if pool is not None:  # rows are words: the pooling is part of the data identity
            _identify_pooling(header, index, mask, pool, word_len, word_index)
        runner.early_stop = True
        return _run(
            runner,
            d,
            mask,
            header,
            index,
            out_dir,
            pad_id,
            dtype,
            allow_nonfinite,
            overwrite,
            progress,
            pool,
            word_len,
        )


def _check_capture_args(
    model: Any,
    batch_size: Any,
    shard_bytes: Any,
    dtype: torch.dtype | str,
    model_id: Any,
    pool: str | None,
    positions: Positions,
) -> torch.dtype:
    """Check :func:`capture`'s arguments that need neither the data nor a forward pass (a
    ``TypeError``/``ValueError`` saying what was expected); returns the resolved dtype."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_int("batch_size", batch_size)
    check_int("shard_bytes", shard_bytes)
    dtype = resolve_dtype(dtype)
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    if model_id is not None:
        if not isinstance(model_id, dict):
            raise TypeError(f"model_id must be a dict or None, got {type(model_id).__name__}")
        try:
            json.dumps(model_id)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"model_id must be JSON-serialisable ({exc})") from None
    if pool is not None and pool not in POOLS:
        raise ValueError(f"pool must be None, 'first', 'last' or 'mean', got {pool!r}")
    if pool is not None and positions is not None:
        raise ValueError("give either positions or pool: pooling stores every word")
    return dtype


def _place_model(
    model: torch.nn.Module, device: str | torch.device | None
) -> tuple[torch.device, int]:
    """Move ``model`` to ``device`` when one is given and the model is elsewhere; returns
    the device the capture runs on and the padding id (the tokenizer's, else 0)."""
    model_dev = _model_device(model)
    dev = resolve_device(device) if device is not None else (model_dev or resolve_device(None))
    if model_dev is not None and model_dev != dev:
        model.to(dev)
    tokenizer = getattr(model, "tokenizer", None)
    pad_id = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
    pad_id = int(pad_id) if isinstance(pad_id, int) else 0

    return dev, pad_id


def _identify_pooling(
    header: dict[str, Any],
    index: dict[str, torch.Tensor],
    mask: torch.Tensor,
    pool: str,
    word_len: torch.Tensor,
    word_index: torch.Tensor,
) -> None:
    """Make a pooled capture's rows words: the index's ``position`` column becomes the word
    index, and the pooling (its kind and the word lengths) joins the data's identity in
    ``header`` so that pooled and unpooled captures never mix in one store."""
    index["position"] = word_index[mask]
    h = hashlib.sha256(header["data"]["sha256"].encode())
    h.update(f"pool={pool}".encode())
    h.update(word_len.numpy().tobytes())
    header["data"].update(sha256=h.hexdigest(), pool=pool)


def _probe(runner: _Runner, d: _Data, pad_id: int) -> dict[str, tuple[int, ...]]:
    """One full forward on the first sequence: checks that every hook fires exactly once
    with a ``(batch, pos, ...)`` activation and returns the per-token shapes."""
    shapes: dict[str, tuple[int, ...]] = {}
    length = int(d.lengths[0])

    def sink(name: str, x: torch.Tensor) -> None:
        if x.dim() < 2 or x.shape[0] != 1 or x.shape[1] != length:
            raise ValueError(
                f"hook {name!r} gives shape {tuple(x.shape)} for one sequence of {length} "
                "tokens; capture stores per-token activations of shape (batch, pos, ...)"
            )
        shapes[name] = tuple(x.shape[2:])

    runner.sink = sink
    tokens, _, _ = _pad_batch(d, torch.ones_like(d.tokens, dtype=torch.bool), 0, 1, pad_id)
    runner.forward(_to_device(tokens, runner.device), None)
    twice = [n for n, c in runner.fired.items() if c > 1]
    if twice:
        raise ValueError(
            f"hook(s) {twice} fired more than once in one forward pass (a module used "
            "several times); capture needs hooks that fire once per forward"
        )
    return shapes


def _plan(
    d: _Data,
    mask: torch.Tensor,
    names: list[str],
    shapes: dict[str, tuple[int, ...]],
    dtype: torch.dtype,
    batch_size: int,
    shard_bytes: int,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The manifest header (shard plan) and the token index of the stored rows."""
    dims = {n: int(np.prod(shapes[n], dtype=np.int64)) for n in names}
    row_bytes = sum(dims.values()) * torch.empty((), dtype=dtype).element_size()
    shard_rows = max(1, shard_bytes // max(row_bytes, 1))
    cs = torch.cat([torch.zeros(1, dtype=torch.int64), mask.to(torch.int64).cumsum(0)])
    rows_before = cs[d.offsets]  # rows stored before each sequence
    shards, start = [], 0
    n_seq = len(d)
    for a in range(0, n_seq, batch_size):
        b = min(a + batch_size, n_seq)
        if int(rows_before[b] - rows_before[start]) >= shard_rows or b == n_seq:
            shards.append(
                dict(
                    seq_start=start,
                    seq_end=b,
                    row_start=int(rows_before[start]),
                    row_end=int(rows_before[b]),
                )
            )
            start = b
    dirs: dict[str, str] = {}
    for n in names:
        base = hook_dir_name(n)
        dirs[n] = base if base not in dirs.values() else f"{base}_{len(dirs)}"
    seq_id = torch.repeat_interleave(torch.arange(n_seq, dtype=torch.int64), d.lengths)
    pos = torch.arange(len(d.tokens), dtype=torch.int64) - d.offsets[:-1][seq_id]
    index = {"sequence": seq_id[mask], "position": pos[mask], "token": d.tokens[mask]}
    index.update({f"label.{k}": v[mask] for k, v in d.labels.items()})
    header = {
        "data": {
            "sha256": _data_sha256(d, mask),
            "n_sequences": n_seq,
            "n_input_tokens": len(d.tokens),
            "source": d.source,
        },
        "hooks": {n: {"shape": list(shapes[n]), "dim": dims[n], "dir": dirs[n]} for n in names},
        "dtype": str(dtype).removeprefix("torch."),
        "batch_size": batch_size,
        "shards": shards,
        "n_tokens": int(mask.sum()),
        "labels": sorted(d.labels),
    }
    return header, index


def _run(
    runner: _Runner,
    d: _Data,
    mask: torch.Tensor,
    header: dict[str, Any],
    index_all: dict[str, torch.Tensor],
    out_dir: str | Path | None,
    pad_id: int,
    dtype: torch.dtype,
    allow_nonfinite: bool,
    overwrite: bool,
    progress: bool,
    pool: str | None = None,
    word_len: torch.Tensor | None = None,
) -> ActivationStore:
    index = {k: v for k, v in index_all.items() if not k.startswith("label.")}
    labels = {k[len("label.") :]: v for k, v in index_all.items() if k.startswith("label.")}
    names, dev = runner.names, runner.device
    dims = {n: header["hooks"][n]["dim"] for n in names}
    plan = header["shards"]
    writer = None
    if out_dir is not None:
        from hierlens.core import distributed as D

        from .store_writer import DistributedStoreWriter

        # under torchrun: each rank its share of the shards, rank 0 the manifest
        writer_cls = DistributedStoreWriter if D.init_from_env(dev) else StoreWriter
        progress = progress and D.is_main()
        writer = writer_cls(out_dir, header, index, labels, overwrite=overwrite)
        pending = writer.pending()
    else:
        pending = list(range(len(plan)))
        arrays = {n: torch.empty((header["n_tokens"], dims[n]), dtype=dtype) for n in names}
    max_rows = max(s["row_end"] - s["row_start"] for s in plan)
    pin = dev.type == "cuda"
    n_buffers = 2 if writer is not None else 1
    buffers = [
        {n: torch.empty((max_rows, dims[n]), dtype=dtype, pin_memory=pin) for n in names}
        for _ in range(n_buffers)
    ]
    in_flight: list[Future | None] = [None] * n_buffers
    n_batches = sum(
        -(-(plan[k]["seq_end"] - plan[k]["seq_start"]) // header["batch_size"]) for k in pending
    )
    bar = tqdm(total=n_batches, disable=not progress, desc="capture", unit="batch")
    executor = ThreadPoolExecutor(max_workers=1) if writer is not None else None
    try:
        for j, k in enumerate(pending):
            slot = j % n_buffers
            if in_flight[slot] is not None:
                in_flight[slot].result()  # the buffer is free once its shard is on disk
            buf = buffers[slot]
            counts = _fill_shard(
                runner,
                d,
                mask,
                plan[k],
                buf,
                header["batch_size"],
                pad_id,
                dtype,
                allow_nonfinite,
                bar,
                pool,
                word_len,
            )
            rows = plan[k]["row_end"] - plan[k]["row_start"]
            if writer is not None:
                shard = {n: buf[n][:rows] for n in names}
                # the writer thread runs in this context: the same confined root
                context = contextvars.copy_context()
                in_flight[slot] = executor.submit(context.run, writer.write_shard, k, shard, counts)
            else:
                r0 = plan[k]["row_start"]
                for n in names:
                    arrays[n][r0 : r0 + rows] = buf[n][:rows]
                total = header.setdefault("nonfinite", {n: 0 for n in names})
                for n in names:
                    total[n] += counts[n]
        for f in in_flight:
            if f is not None:
                f.result()
    finally:
        bar.close()
        if executor is not None:
            executor.shutdown(wait=True)
    if writer is not None:
        return writer.finish()
    manifest = {"format": "hierlens.activation_store", "version": 1, **header, "complete": True}
    manifest.setdefault("nonfinite", {n: 0 for n in names})
    return ActivationStore(manifest, index, labels, arrays=arrays)


def _fill_shard(
    runner: _Runner,
    d: _Data,
    mask: torch.Tensor,
    shard: dict[str, int],
    buf: dict[str, torch.Tensor],
    batch_size: int,
    pad_id: int,
    dtype: torch.dtype,
    allow_nonfinite: bool,
    bar: tqdm,
    pool: str | None = None,
    word_len: torch.Tensor | None = None,
) -> dict[str, int]:
    """Run the batches of one shard, copying the selected rows into ``buf`` (non-blocking
    on CUDA; one synchronisation at the end). Returns the non-finite count per hook."""
    dev = runner.device
    names = runner.names
    bad: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    offset = 0
    state: dict[str, Any] = {}

    def sink(name: str, x: torch.Tensor) -> None:
        b, t = state["shape"]
        if x.dim() < 2 or x.shape[0] != b or x.shape[1] != t:
            raise ValueError(
                f"hook {name!r} gives shape {tuple(x.shape)} for a batch of shape {(b, t)}; "
                "capture stores per-token activations of shape (batch, pos, ...)"
            )
        flat = x.reshape(b * t, -1)
        if state["owner"] is None:  # one row per selected token (or per word: first/last)
            rows = flat.index_select(0, state["rows"]).to(dtype)
        else:  # the mean over each word's tokens
            total = flat.new_zeros((state["n_words"], flat.shape[1]), dtype=torch.float32)
            total.index_add_(0, state["owner"], flat.index_select(0, state["rows"]).float())
            rows = (total / state["lens"][:, None]).to(dtype)
        bad[name].append((~torch.isfinite(rows)).sum())
        buf[name][offset : offset + len(rows)].copy_(rows, non_blocking=dev.type == "cuda")

    runner.sink = sink
    batch_starts = list(range(shard["seq_start"], shard["seq_end"], batch_size))
    for a in batch_starts:
        b = min(a + batch_size, shard["seq_end"])
        tokens, attn, idx = _pad_batch(d, mask, a, b, pad_id)
        state["shape"] = tuple(tokens.shape)
        if pool is None:
            state.update(rows=_to_device(idx, dev), owner=None)
        else:
            lo, hi = int(d.offsets[a]), int(d.offsets[b])
            lens = word_len[lo:hi][mask[lo:hi]]
            rows, owner, _ = _pool_plan(idx, lens, pool)
            state.update(rows=_to_device(rows, dev), n_words=len(idx), owner=None)
            if owner is not None:
                state["owner"] = _to_device(owner, dev)
                state["lens"] = _to_device(lens.to(torch.float32), dev)
        runner.forward(_to_device(tokens, dev), None if attn is None else _to_device(attn, dev))
        offset += len(idx)
        bar.update(1)
    if dev.type == "cuda":
        torch.cuda.current_stream(dev).synchronize()
    counts = {}
    for n in names:
        per_batch = torch.stack(bad[n]).cpu()
        counts[n] = int(per_batch.sum())
        if counts[n] and not allow_nonfinite:
            first = int(per_batch.nonzero()[0, 0])
            seq0 = batch_starts[first]
            raise ValueError(
                f"hook {n!r} has {int(per_batch[first])} non-finite activation value(s) in "
                f"batch {seq0 // batch_size} (sequences {seq0}.."
                f"{min(seq0 + batch_size, shard['seq_end']) - 1}); pass allow_nonfinite=True "
                "(the command line's --allow-nonfinite) to keep and count them"
            )
    return counts
