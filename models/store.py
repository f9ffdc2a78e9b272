"""The activation store: per hook an ``(n_tokens, d)`` array, the token index and labels.

A store lives in memory (``capture(..., out_dir=None)``) or on disk as a folder::

    out_dir/
      manifest.json                  # hooks, shapes, dtype, shard plan + sha256, model, data
      index.safetensors              # sequence, position, token (+ label.<name>) per row
      <hook>/shard_00000.safetensors # rows [row_start, row_end) of that hook, tensor "activations"

Every file is written atomically through the confined file layer
(:mod:`hierlens.core.confined_io`) and the manifest is rewritten after each completed shard,
so an interrupted capture leaves a valid partial store that
:func:`hierlens.models.capture.capture` resumes (:mod:`~hierlens.models.store_writer`).
Opening a store checks the manifest's schema (hook folders are plain names, the shards tile
the rows, each listed file is its shard's own name) and every checksum, and names any bad
file.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from hierlens.core import confined_io as fs
from hierlens.core.atomic_io import load_tensors, read_json
from hierlens.core.checksums import CorruptFileError, sha256_file
from hierlens.core.device import resolve_dtype
from hierlens.core.validate import check_int

FORMAT = "hierlens.activation_store"
VERSION = 1
MANIFEST = "manifest.json"
INDEX_FILE = "index.safetensors"
INDEX_KEYS = ("sequence", "position", "token")
#: the manifest fields that must agree for a capture to resume into an existing folder
IDENTITY_KEYS = ("model", "data", "hooks", "dtype", "batch_size", "shards")


def hook_dir_name(name: str) -> str:
    """Folder name for a hook's shards (the hook name, with unsafe characters replaced)."""
    safe = re.sub(r"[^A-Za-z0-9_.\-]", "_", name)
    return safe if safe not in ("", ".", "..") else f"_{safe}_"


def _shard_file(hook_dir: str, k: int) -> str:
    return f"{hook_dir}/shard_{k:05d}.safetensors"


class ActivationStore:
    """Captured activations: ``store[hook]`` is an ``(n_tokens, d)`` tensor (rows follow the
    data order: sequence by sequence, position by position; pad positions are never stored).

    Attributes:
        index: ``{"sequence", "position", "token"}`` -> ``(n_tokens,)`` int64 tensors.
        labels: per-token labels (e.g. ``"depth"`` from task examples) -> ``(n_tokens,)`` int64.
        path: the store's folder, or None for an in-memory store.

    Use :meth:`open` for a store on disk and :func:`hierlens.models.capture` to make one.
    """

    def __init__(
        self,
        manifest: dict[str, Any],
        index: Mapping[str, torch.Tensor],
        labels: Mapping[str, torch.Tensor],
        arrays: Mapping[str, torch.Tensor] | None = None,
        path: str | Path | None = None,
    ) -> None:
        if (arrays is None) == (path is None):
            raise ValueError("an ActivationStore holds either in-memory arrays or a path")
        self._manifest = manifest
        self.index = dict(index)
        self.labels = dict(labels)
        self._arrays = dict(arrays) if arrays is not None else None
        self.path = Path(path) if path is not None else None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> ActivationStore:
        """Open the store in ``path``, checking the manifest and (``verify=True``) the sha256
        of every file. Raises ``FileNotFoundError`` when there is no manifest,
        :class:`CorruptFileError` naming every missing or corrupt file, and ``ValueError``
        for an incomplete store (resume it by rerunning the capture)."""
        path = Path(path)
        manifest = read_manifest(path)
        shards = manifest["shards"]
        done = sum(1 for s in shards if s.get("files"))
        if not manifest.get("complete") or done < len(shards):
            raise ValueError(
                f"{path}: incomplete activation store ({done} of {len(shards)} shards); "
                "rerun the same capture with this out_dir to resume it"
            )
        if verify:
            bad = bad_files(path, manifest)
            if bad:
                raise CorruptFileError(
                    f"{path}: {len(bad)} bad file(s) (missing, truncated or modified): "
                    + ", ".join(bad)
                )
        tensors = load_tensors(path / INDEX_FILE, manifest["index"]["sha256"])
        index = {k: tensors[k] for k in INDEX_KEYS}
        labels = {k[len("label.") :]: v for k, v in tensors.items() if k.startswith("label.")}
        return cls(manifest, index, labels, path=path)

    # ------------------------------------------------------------------ description
    @property
    def manifest(self) -> dict[str, Any]:
        """A copy of the manifest (hooks, shapes, dtype, shards, model and data identity)."""
        import copy

        return copy.deepcopy(self._manifest)

    @property
    def hooks(self) -> list[str]:
        """The captured hook names."""
        return list(self._manifest["hooks"])

    @property
    def dtype(self) -> torch.dtype:
        return resolve_dtype(self._manifest["dtype"])

    @property
    def n_tokens(self) -> int:
        return int(self._manifest["n_tokens"])

    def __len__(self) -> int:
        return self.n_tokens

    def _repr_html_(self) -> str:
        """A table of the captured hooks and their activation widths (for notebooks)."""
        from hierlens.core.html_table import html_table

        rows = [
            {"hook": h, "shape": "×".join(map(str, m.get("shape", ()))), "dim": m.get("dim", "")}
            for h, m in self._manifest["hooks"].items()
        ]
        where = f" at {self.path}" if self.path is not None else ""
        caption = f"ActivationStore{where}: {self.n_tokens} tokens, {self._manifest['dtype']}"
        return html_table(["hook", "shape", "dim"], rows, caption)

    def __contains__(self, hook: object) -> bool:
        return hook in self._manifest["hooks"]

    def token_shape(self, hook: str) -> tuple[int, ...]:
        """Per-token shape of ``hook`` before flattening (e.g. ``(n_heads, d_head)``)."""
        return tuple(self._hook_meta(hook)["shape"])

    @property
    def nonfinite(self) -> dict[str, int]:
        """Number of non-finite values stored per hook (nonzero only with
        ``allow_nonfinite=True``)."""
        counts = self._manifest.get("nonfinite") or {}
        return {h: int(counts.get(h, 0)) for h in self._manifest["hooks"]}

    @property
    def model_id(self) -> dict[str, Any] | None:
        return self._manifest.get("model")

    def __repr__(self) -> str:
        where = str(self.path) if self.path else "memory"
        return (
            f"ActivationStore({len(self.hooks)} hooks, {self.n_tokens} tokens, "
            f"{self._manifest['dtype']}, {where})"
        )

    def _hook_meta(self, hook: str) -> dict[str, Any]:
        if hook not in self._manifest["hooks"]:
            import difflib

            close = difflib.get_close_matches(hook, self.hooks, n=3)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise KeyError(f"hook {hook!r} is not in this store{hint}; stored: {self.hooks}")
        return self._manifest["hooks"][hook]

    # ------------------------------------------------------------------ reading
    def _load_shard(self, hook: str, k: int) -> torch.Tensor:
        assert self.path is not None
        entry = self._manifest["shards"][k]["files"][hook]
        return load_tensors(self.path / entry["file"], entry["sha256"])["activations"]

    def __getitem__(self, hook: str) -> torch.Tensor:
        """The whole ``(n_tokens, d)`` array of ``hook`` (loaded from the shards, checksums
        verified)."""
        meta = self._hook_meta(hook)
        if self._arrays is not None:
            return self._arrays[hook]
        out = torch.empty((self.n_tokens, meta["dim"]), dtype=self.dtype)
        for k, shard in enumerate(self._manifest["shards"]):
            out[shard["row_start"] : shard["row_end"]] = self._load_shard(hook, k)
        return out

    def batches(
        self,
        hook: str,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        *,
        window: int = 2,
        drop_last: bool = False,
        return_rows: bool = False,
    ) -> Iterator[torch.Tensor] | Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Stream ``(batch_size, d)`` batches of ``hook``; every row appears exactly once.

        With ``shuffle`` the shards are visited in a random order (``seed``) and the rows of
        ``window`` shards at a time (plus the rows left over from the previous window) are
        permuted together, so memory stays at about ``window + 1`` shards whatever the store
        size (a windowed shuffle, as in streaming SAE training). The last batch may be
        smaller unless ``drop_last``. With ``return_rows`` each item is
        ``(activations, rows)`` where ``rows`` are the global row numbers (to look up
        :attr:`index` and :attr:`labels`).
        """
        self._hook_meta(hook)
        check_int("batch_size", batch_size)
        check_int("window", window)
        return self._iter_batches(hook, batch_size, shuffle, seed, window, drop_last, return_rows)

    def _iter_batches(
        self,
        hook: str,
        batch_size: int,
        shuffle: bool,
        seed: int,
        window: int,
        drop_last: bool,
        return_rows: bool,
    ) -> Iterator[Any]:
        gen = torch.Generator().manual_seed(int(seed))
        if self._arrays is not None:
            pieces = [(0, self.n_tokens)]
        else:
            pieces = [(s["row_start"], s["row_end"]) for s in self._manifest["shards"]]
        order = (
            torch.randperm(len(pieces), generator=gen).tolist() if shuffle else range(len(pieces))
        )
        order = list(order)
        carry_x = carry_rows = None
        for w in range(0, len(order), window):
            xs, rows = [], []
            if carry_x is not None:
                xs.append(carry_x)
                rows.append(carry_rows)
            for k in order[w : w + window]:
                start, end = pieces[k]
                if self._arrays is not None:
                    xs.append(self._arrays[hook])
                else:
                    xs.append(self._load_shard(hook, k))
                rows.append(torch.arange(start, end, dtype=torch.int64))
            x = torch.cat(xs) if len(xs) > 1 else xs[0]
            r = torch.cat(rows) if len(rows) > 1 else rows[0]
            if shuffle:
                perm = torch.randperm(len(r), generator=gen)
                x, r = x[perm], r[perm]
            last_window = w + window >= len(order)
            n_full = len(r) if last_window else (len(r) // batch_size) * batch_size
            for i in range(0, n_full, batch_size):
                xb, rb = x[i : i + batch_size], r[i : i + batch_size]
                if len(rb) < batch_size and drop_last:
                    break
                yield (xb, rb) if return_rows else xb
            carry_x, carry_rows = (x[n_full:], r[n_full:]) if n_full < len(r) else (None, None)


# ---------------------------------------------------------------------- on-disk format
_SAFE_DIR = re.compile(r"[A-Za-z0-9_.\-]+")
_HEX = re.compile(r"[0-9a-f]{64}")


def _bad(file: Path, what: str) -> CorruptFileError:
    return CorruptFileError(f"{file}: not a valid activation-store manifest ({what})")


def _check_manifest(file: Path, m: dict[str, Any]) -> None:
    """Validate the manifest's schema: hook folders are plain names, shards tile the rows
    ``[0, n_tokens)`` in order, every listed file is its shard's expected name with a
    sha256 (so nothing a manifest names can lie outside the store)."""
    n = m["n_tokens"]
    if type(n) is not int or n < 0 or not isinstance(m["dtype"], str):
        raise _bad(file, "n_tokens / dtype")
    try:
        resolve_dtype(m["dtype"])
    except (TypeError, ValueError):
        raise _bad(file, f"dtype {m['dtype']!r}") from None
    hooks = m["hooks"]
    if not isinstance(hooks, dict) or not hooks:
        raise _bad(file, "hooks")
    dirs = {}
    for hook, meta in hooks.items():
        d = meta.get("dir") if isinstance(meta, dict) else None
        ok = isinstance(d, str) and _SAFE_DIR.fullmatch(d) and d not in (".", "..")
        if not ok or type(meta.get("dim")) is not int or meta["dim"] < 1:
            raise _bad(file, f"hook {hook!r}")
        dirs[hook] = d
    if len(set(dirs.values())) != len(dirs):
        raise _bad(file, "two hooks share a folder")
    index = m["index"]
    if not isinstance(index, dict) or not _HEX.fullmatch(str(index.get("sha256"))):
        raise _bad(file, "index")
    shards, row = m["shards"], 0
    if not isinstance(shards, list):
        raise _bad(file, "shards")
    for k, shard in enumerate(shards):
        keys = ("seq_start", "seq_end", "row_start", "row_end")
        if not isinstance(shard, dict) or any(type(shard.get(x)) is not int for x in keys):
            raise _bad(file, f"shard {k}")
        if (
            shard["row_start"] != row
            or shard["row_end"] < row
            or shard["seq_end"] < shard["seq_start"]
        ):
            raise _bad(file, f"shard {k} rows")
        row = shard["row_end"]
        files = shard.get("files")
        if files is None:
            continue
        if not isinstance(files, dict) or set(files) != set(dirs):
            raise _bad(file, f"shard {k} files")
        for hook, entry in files.items():
            ok = isinstance(entry, dict) and entry.get("file") == _shard_file(dirs[hook], k)
            if not ok or not _HEX.fullmatch(str(entry.get("sha256"))):
                raise _bad(file, f"shard {k} file of {hook!r}")
    if row != n:
        raise _bad(file, f"shards cover {row} rows, n_tokens is {n}")


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read ``path/manifest.json`` and check its schema (:func:`_check_manifest`)."""
    path = Path(path)
    file = path / MANIFEST
    if fs.file_kind(file) is None:
        raise FileNotFoundError(errno.ENOENT, f"no {MANIFEST} (not an activation store)", str(path))
    manifest = read_json(file, verify=False)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorruptFileError(f"{file}: not an activation-store manifest")
    if manifest.get("version") != VERSION:
        raise CorruptFileError(
            f"{file}: store format version {manifest.get('version')!r}, expected {VERSION}"
        )
    required = ("hooks", "shards", "n_tokens", "dtype", "index")
    missing = [k for k in required if k not in manifest]
    if missing:
        raise CorruptFileError(f"{file}: manifest lacks {', '.join(missing)}")
    _check_manifest(file, manifest)
    return manifest


def bad_files(path: Path, manifest: dict[str, Any]) -> list[str]:
    """Files of a store that are missing or fail their sha256 (relative paths)."""
    entries = [(INDEX_FILE, manifest["index"]["sha256"])]
    for shard in manifest["shards"]:
        for entry in (shard.get("files") or {}).values():
            entries.append((entry["file"], entry["sha256"]))
    bad = []
    for rel, digest in entries:
        file = path / rel
        if fs.file_kind(file) != "file" or sha256_file(file) != digest:
            bad.append(rel)
    return bad
