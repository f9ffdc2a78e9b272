"""The activation store: per hook an ``(n_tokens, d)`` array, the token index and labels.

A store lives in memory (``capture(..., out_dir=None)``) or on disk as a folder::

    out_dir/
      manifest.json                  # hooks, shapes, dtype, shard plan + sha256, model, data
      index.safetensors              # sequence, position, token (+ label.<name>) per row
      <hook>/shard_00000.safetensors # rows [row_start, row_end) of that hook, tensor "activations"

Every file is written atomically (:mod:`hierlens.core.atomic_io`) and the manifest is
rewritten after each completed shard, so an interrupted capture leaves a valid partial store
that :func:`hierlens.models.capture.capture` resumes. Opening a store checks the manifest and
every checksum and names any bad file.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from hierlens.core.atomic_io import (
    CorruptFileError,
    atomic_write_json,
    load_tensors,
    read_json,
    save_tensors,
    sha256_file,
)
from hierlens.core.device import resolve_dtype

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
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(window, int) or window <= 0:
            raise ValueError(f"window must be a positive integer, got {window!r}")
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
def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and structurally check ``path/manifest.json``."""
    path = Path(path)
    file = path / MANIFEST
    if not file.exists():
        raise FileNotFoundError(f"{path}: no {MANIFEST} (not an activation store)")
    manifest = read_json(file)
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
        if not file.exists() or sha256_file(file) != digest:
            bad.append(rel)
    return bad


def identity(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that decide whether a store holds a given capture (shard plan without the
    shards' files)."""
    out = {k: manifest.get(k) for k in IDENTITY_KEYS}
    out["shards"] = [
        {k: s[k] for k in ("seq_start", "seq_end", "row_start", "row_end")}
        for s in manifest.get("shards") or []
    ]
    return out


class StoreMismatchError(ValueError):
    """A folder already holds a different capture (another model, data, hooks or plan)."""

    def __init__(self, path: Path, diffs: list[str]) -> None:
        self.path = path
        self.diffs = diffs
        super().__init__(
            f"{path} holds a different capture (differs in: {', '.join(diffs)}); "
            "pass overwrite=True to replace it or choose another out_dir"
        )


class StoreWriter:
    """Writes (or resumes) a store on disk, one shard at a time; used by ``capture``.

    ``header`` holds the identity fields (:data:`IDENTITY_KEYS`) plus ``n_tokens``; the
    shard plan ``header["shards"]`` is a list of ``{seq_start, seq_end, row_start,
    row_end}``. An existing store with the same identity is resumed (its verified shards
    kept); a different one is a ``ValueError`` unless ``overwrite``.
    """

    def __init__(
        self,
        path: str | Path,
        header: dict[str, Any],
        index: Mapping[str, torch.Tensor],
        labels: Mapping[str, torch.Tensor],
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        header = json.loads(json.dumps(header))  # compare as it reads back from JSON
        self.header = header
        self._dirs = {h: m["dir"] for h, m in header["hooks"].items()}
        existing = self._existing_manifest(overwrite)
        if existing is not None and not overwrite:
            old, new = identity(existing), identity(header)
            diffs = [k for k in IDENTITY_KEYS if old.get(k) != new.get(k)]
            diffs = [f"{k} (shard_bytes)" if k == "shards" else k for k in diffs]
            if diffs:
                raise StoreMismatchError(self.path, diffs)
        if existing is not None and overwrite:
            self._remove_store(existing)
            existing = None
        self._remove_stale_tmp()
        if existing is None:
            self.manifest = {"format": FORMAT, "version": VERSION, **header, "complete": False}
            self.manifest["shards"] = [dict(s, files=None) for s in header["shards"]]
            tensors = {k: index[k] for k in INDEX_KEYS}
            tensors.update({f"label.{k}": v for k, v in labels.items()})
            digest = save_tensors(self.path / INDEX_FILE, tensors)
            self.manifest["index"] = {"file": INDEX_FILE, "sha256": digest}
            self.done = [False] * len(header["shards"])
            self._write_manifest()
        else:
            self.manifest = existing
            bad = set(bad_files(self.path, existing))
            if INDEX_FILE in bad:  # the index is a pure function of the data: rewrite it
                tensors = {k: index[k] for k in INDEX_KEYS}
                tensors.update({f"label.{k}": v for k, v in labels.items()})
                self.manifest["index"]["sha256"] = save_tensors(self.path / INDEX_FILE, tensors)
            self.done = []
            for shard in self.manifest["shards"]:
                files = shard.get("files") or {}
                ok = bool(files) and set(files) == set(self._dirs)
                ok = ok and not any(e["file"] in bad for e in files.values())
                if not ok:
                    shard["files"] = None
                self.done.append(ok)
            self.manifest["complete"] = all(self.done)
            self._write_manifest()

    def _existing_manifest(self, overwrite: bool = False) -> dict[str, Any] | None:
        if not (self.path / MANIFEST).exists():
            if overwrite:
                self._remove_unlisted_store()
            if self.path.exists() and any(self.path.iterdir()):
                raise ValueError(
                    f"{self.path} exists, is not empty and is not an activation store; "
                    "choose an empty or new out_dir"
                )
            return None
        return read_manifest(self.path)

    def _remove_unlisted_store(self) -> None:
        """For ``overwrite`` of a store whose manifest is gone: remove what a store of these
        hooks writes (the index, the hooks' shard folders, temporary files) and nothing
        else, so a folder holding other files is still refused."""
        if not self.path.is_dir():
            return
        (self.path / INDEX_FILE).unlink(missing_ok=True)
        for tmp in self.path.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        for d in self._dirs.values():
            folder = self.path / d
            if folder.is_dir() and folder.resolve().parent == self.path.resolve():
                files = list(folder.iterdir())
                if all(f.is_file() and f.name.endswith((".safetensors", ".tmp")) for f in files):
                    shutil.rmtree(folder)

    def _remove_stale_tmp(self) -> None:
        """Delete temporary files left by writes that a crash interrupted."""
        folders = [self.path] + [self.path / d for d in self._dirs.values()]
        for folder in folders:
            if folder.is_dir():
                for tmp in folder.glob(".*.tmp"):
                    tmp.unlink(missing_ok=True)

    def _remove_store(self, manifest: dict[str, Any]) -> None:
        for meta in manifest.get("hooks", {}).values():
            d = self.path / meta.get("dir", "")
            if meta.get("dir") and d.is_dir() and d.resolve().parent == self.path.resolve():
                shutil.rmtree(d)
        for name in (INDEX_FILE, MANIFEST):
            (self.path / name).unlink(missing_ok=True)

    def _write_manifest(self) -> None:
        atomic_write_json(self.path / MANIFEST, self.manifest)

    def pending(self) -> list[int]:
        """Shard numbers still to compute."""
        return [k for k, d in enumerate(self.done) if not d]

    def write_shard(
        self, k: int, arrays: Mapping[str, torch.Tensor], nonfinite: Mapping[str, int]
    ) -> None:
        """Write shard ``k`` (``{hook: (rows, d)}``) and record it in the manifest."""
        shard = self.manifest["shards"][k]
        rows = shard["row_end"] - shard["row_start"]
        files = {}
        for hook, x in arrays.items():
            if x.shape[0] != rows:
                raise ValueError(f"shard {k} of {hook!r} has {x.shape[0]} rows, expected {rows}")
            rel = _shard_file(self._dirs[hook], k)
            digest = save_tensors(self.path / rel, {"activations": x})
            files[hook] = {"file": rel, "sha256": digest}
        shard["files"] = files
        shard["nonfinite"] = {h: int(v) for h, v in nonfinite.items()}
        self.done[k] = True
        self._write_manifest()

    def finish(self) -> ActivationStore:
        """Mark the store complete (all shards written) and open it."""
        if not all(self.done):
            raise RuntimeError(f"{self.path}: shards {self.pending()} were not written")
        self.manifest["nonfinite"] = {
            hook: sum(int((s.get("nonfinite") or {}).get(hook, 0)) for s in self.manifest["shards"])
            for hook in self.manifest["hooks"]
        }
        self.manifest["complete"] = True
        self._write_manifest()
        return ActivationStore.open(self.path, verify=False)


class DistributedStoreWriter(StoreWriter):
    """A :class:`StoreWriter` for one rank of a ``torchrun`` capture.

    Rank 0 creates (or resumes) the store; every rank then computes the pending shards
    ``k`` with ``k % world == rank`` and writes them with a record ``parts/shard-K.json``
    (files, checksums, non-finite counts) next to them; :meth:`finish` waits for all ranks
    and rank 0 adopts the records into the one manifest, in shard (= sequence) order. A
    relaunch after a crash keeps every shard whose record verifies, whichever rank wrote it
    and whatever the number of processes.
    """

    PARTS = "parts"

    def __init__(self, path, header, index, labels, overwrite: bool = False) -> None:
        from hierlens.core import distributed as D

        self._D = D
        self.path = Path(path)
        if D.is_main():
            super().__init__(path, header, index, labels, overwrite=overwrite)
            self._adopt_parts()
        D.barrier()
        if not D.is_main():
            self.header = json.loads(json.dumps(header))
            self._dirs = {h: m["dir"] for h, m in self.header["hooks"].items()}
            self.manifest = read_manifest(self.path)
            self.done = [bool(s.get("files")) for s in self.manifest["shards"]]

    def _adopt_parts(self) -> None:
        parts = self.path / self.PARTS
        if not parts.is_dir():
            return
        for rec_file in sorted(parts.glob("shard-*.json")):
            rec = read_json(rec_file)
            k = int(rec["shard"])
            shard = self.manifest["shards"][k]
            ok = set(rec["files"]) == set(self._dirs) and all(
                (self.path / e["file"]).exists()
                and sha256_file(self.path / e["file"]) == e["sha256"]
                for e in rec["files"].values()
            )
            if ok and not self.done[k]:
                shard["files"] = rec["files"]
                shard["nonfinite"] = rec["nonfinite"]
                self.done[k] = True
            rec_file.unlink()
        self.manifest["complete"] = all(self.done)
        self._write_manifest()

    def pending(self) -> list[int]:
        r, w = self._D.rank(), self._D.world_size()
        return [k for k, d in enumerate(self.done) if not d and k % w == r]

    def write_shard(
        self, k: int, arrays: Mapping[str, torch.Tensor], nonfinite: Mapping[str, int]
    ) -> None:
        shard = self.manifest["shards"][k]
        rows = shard["row_end"] - shard["row_start"]
        files = {}
        for hook, x in arrays.items():
            if x.shape[0] != rows:
                raise ValueError(f"shard {k} of {hook!r} has {x.shape[0]} rows, expected {rows}")
            rel = _shard_file(self._dirs[hook], k)
            files[hook] = {"file": rel, "sha256": save_tensors(self.path / rel, {"activations": x})}
        record = {
            "shard": k,
            "files": files,
            "nonfinite": {h: int(v) for h, v in nonfinite.items()},
        }
        atomic_write_json(self.path / self.PARTS / f"shard-{k}.json", record)

    def finish(self) -> ActivationStore:
        self._D.barrier()
        if self._D.is_main():
            self._adopt_parts()
            shutil.rmtree(self.path / self.PARTS, ignore_errors=True)
            store = super().finish()
        self._D.barrier()
        return store if self._D.is_main() else ActivationStore.open(self.path, verify=False)
