"""Writing an activation store on disk, one shard at a time (used by
:func:`hierlens.models.capture.capture`), and resuming or replacing one.

A store that a capture resumes keeps every shard whose files verify; a shard whose file is
missing or fails its checksum is named in a warning and captured again. ``overwrite``
replaces a store of another capture by deleting only what a store writes: the files its
manifest lists (whose names the manifest schema fixes), its index and temporary files; a
folder that holds anything else is left in place, named. All of it goes through the confined
file layer, so a link in or above the store (inside the run) is refused, never followed.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hierlens.core import confined_io as fs
from hierlens.core.atomic_io import atomic_write_json, read_json, save_tensors
from hierlens.core.checksums import sha256_file
from hierlens.core.confined_delete import remove_tree, unlink

from .store import (
    FORMAT,
    IDENTITY_KEYS,
    INDEX_FILE,
    INDEX_KEYS,
    MANIFEST,
    VERSION,
    ActivationStore,
    _shard_file,
    bad_files,
    read_manifest,
)

__all__ = ["DistributedStoreWriter", "StoreMismatchError", "StoreWriter", "identity"]

log = logging.getLogger(__name__)
_TMP = re.compile(r"\..+\.tmp")
_SHARD = re.compile(r"shard_\d{5}\.safetensors")
_PART = re.compile(r"shard-(\d+)\.json")


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
            self._remove_store(
                {m["dir"] for m in existing["hooks"].values()} | set(self._dirs.values())
            )
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
            if bad:
                log.warning(
                    "%s: %d file(s) missing or failing their checksum, captured again: %s",
                    self.path,
                    len(bad),
                    ", ".join(sorted(bad)),
                )
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
        if fs.file_kind(self.path / MANIFEST) is None:
            if overwrite:
                self._remove_store(self._dirs.values())
            if fs.entries(self.path):
                raise ValueError(
                    f"{self.path} exists, is not empty and is not an activation store; "
                    "choose an empty or new out_dir"
                )
            return None
        return read_manifest(self.path)

    def _remove_store(self, dirs: Any) -> None:
        """Delete what a store with hook folders ``dirs`` writes (its index, manifest,
        shard files and temporary files) and nothing else; what is left is named."""

        def owned(parts: tuple[str, ...]) -> bool:
            if len(parts) == 1:
                return parts[0] in (INDEX_FILE, MANIFEST) or bool(_TMP.fullmatch(parts[0]))
            if len(parts) == 2 and parts[0] == DistributedStoreWriter.PARTS:
                return bool(_PART.fullmatch(parts[1]))
            return (
                len(parts) == 2
                and parts[0] in dirs
                and bool(_SHARD.fullmatch(parts[1]) or _TMP.fullmatch(parts[1]))
            )

        dirs = set(dirs)
        left = remove_tree(self.path, owned)
        if left:
            log.warning(
                "%s: left %d file(s) that an activation store does not write: %s",
                self.path,
                len(left),
                ", ".join(left[:5]),
            )

    def _remove_stale_tmp(self) -> None:
        """Delete temporary files left by writes that a crash interrupted."""
        for folder in [self.path] + [self.path / d for d in self._dirs.values()]:
            for name, kind in fs.entries(folder).items():
                if kind == "file" and _TMP.fullmatch(name):
                    unlink(folder / name)

    def _write_manifest(self) -> None:
        atomic_write_json(self.path / MANIFEST, self.manifest)

    def pending(self) -> list[int]:
        """Shard numbers still to compute."""
        return [k for k, d in enumerate(self.done) if not d]

    def _save_shard_files(
        self, k: int, arrays: Mapping[str, torch.Tensor]
    ) -> dict[str, dict[str, str]]:
        """Save shard ``k``'s array of each hook (``{hook: (rows, d)}``, rows checked against
        the shard plan) and return its manifest entry ``{hook: {"file", "sha256"}}``."""
        shard = self.manifest["shards"][k]
        rows = shard["row_end"] - shard["row_start"]
        files = {}
        for hook, x in arrays.items():
            if x.shape[0] != rows:
                raise ValueError(f"shard {k} of {hook!r} has {x.shape[0]} rows, expected {rows}")
            rel = _shard_file(self._dirs[hook], k)
            files[hook] = {"file": rel, "sha256": save_tensors(self.path / rel, {"activations": x})}
        return files

    def write_shard(
        self, k: int, arrays: Mapping[str, torch.Tensor], nonfinite: Mapping[str, int]
    ) -> None:
        """Write shard ``k`` (``{hook: (rows, d)}``) and record it in the manifest."""
        shard = self.manifest["shards"][k]
        shard["files"] = self._save_shard_files(k, arrays)
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
        for name, kind in fs.entries(parts).items():
            m = _PART.fullmatch(name)
            if kind != "file" or not m:
                continue
            rec_file = parts / name
            k = int(m.group(1))
            if self._valid_part(rec_file, k) and not self.done[k]:
                rec = read_json(rec_file, verify=False)
                self.manifest["shards"][k]["files"] = rec["files"]
                self.manifest["shards"][k]["nonfinite"] = rec["nonfinite"]
                self.done[k] = True
            unlink(rec_file)
        self.manifest["complete"] = all(self.done)
        self._write_manifest()

    def _valid_part(self, rec_file: Path, k: int) -> bool:
        """Whether the part record of shard ``k`` names exactly that shard's files, which
        exist and match their checksums."""
        try:
            rec = read_json(rec_file, verify=False)
        except (OSError, ValueError):
            return False
        if not isinstance(rec, dict) or rec.get("shard") != k or k >= len(self.done):
            return False
        files = rec.get("files")
        if not isinstance(files, dict) or set(files) != set(self._dirs):
            return False
        if not isinstance(rec.get("nonfinite"), dict):
            return False
        for hook, e in files.items():
            rel = _shard_file(self._dirs[hook], k)
            if not isinstance(e, dict) or e.get("file") != rel:
                return False
            if fs.file_kind(self.path / rel) != "file" or sha256_file(self.path / rel) != e.get(
                "sha256"
            ):
                return False
        return True

    def pending(self) -> list[int]:
        r, w = self._D.rank(), self._D.world_size()
        return [k for k, d in enumerate(self.done) if not d and k % w == r]

    def write_shard(
        self, k: int, arrays: Mapping[str, torch.Tensor], nonfinite: Mapping[str, int]
    ) -> None:
        record = {
            "shard": k,
            "files": self._save_shard_files(k, arrays),
            "nonfinite": {h: int(v) for h, v in nonfinite.items()},
        }
        atomic_write_json(self.path / self.PARTS / f"shard-{k}.json", record)

    def finish(self) -> ActivationStore:
        self._D.barrier()
        if self._D.is_main():
            self._adopt_parts()
            remove_tree(self.path / self.PARTS, lambda parts: bool(_PART.fullmatch(parts[-1])))
            store = super().finish()
        self._D.barrier()
        return store if self._D.is_main() else ActivationStore.open(self.path, verify=False)
