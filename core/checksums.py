"""Checksum manifests: the sha256 of every file a later stage reads, kept beside it.

Each folder with checked files holds ``hierlens_sha256.json`` (:data:`CHECKSUMS`)::

    {"files":   {name: {"sha256": hex, "size": bytes}},      # committed
     "pending": {name: {"sha256": hex, "size": bytes}}}      # being written

A whole-file write is recorded *before* and *after* the data (:func:`write_checked`): the new
checksum goes to ``pending``, the file is replaced atomically, then the entry moves to
``files``. A process killed anywhere in between leaves a file that matches one of the two
entries (read as valid) or no file (read as missing), never a file that is silently
unchecked; a writer that finds a ``pending`` entry treats the file as unfinished and writes
it again, which commits it.

An *appended* file (JSONL logs, :func:`append_checked`) records the size and checksum of
its committed prefix (``"append": true``). Bytes after that prefix were written by an
append that did not finish (a kill, a full disk, a file-size limit): readers ignore them and
the next append cuts them off with a warning naming the file, so a torn line is never
continued.

A folder whose files are checked must have its manifest: reading a checked file with no
manifest, or with no entry for it, is a :class:`CorruptFileError`, not a pass. Manifests of
the first format (``{"files": {name: hex}}``) are still read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import confined_io as fs

log = logging.getLogger(__name__)

#: the checksum manifest of a folder
CHECKSUMS = "hierlens_sha256.json"


class CorruptFileError(ValueError):
    """A file that exists but is truncated, corrupt, fails its checksum, or has no checksum
    where one is expected."""


def sha256_bytes(data: bytes) -> str:
    """The hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of the file ``path`` (read without following a link)."""
    h = hashlib.sha256()
    for chunk in fs.read_chunks(path):
        h.update(chunk)
    return h.hexdigest()


def manifest_path(path: str | os.PathLike) -> Path:
    """The manifest that records the file ``path``."""
    return Path(path).parent / CHECKSUMS


def _entry(value: Any, where: Path) -> dict[str, Any]:
    if isinstance(value, str):  # first format: the digest alone
        value = {"sha256": value}
    ok = (
        isinstance(value, dict)
        and isinstance(value.get("sha256"), str)
        and len(value["sha256"]) == 64
        and (value.get("size") is None or (type(value["size"]) is int and value["size"] >= 0))
    )
    if not ok:
        raise CorruptFileError(f"{where}: not a checksum manifest (bad entry {value!r})")
    return {k: value[k] for k in ("sha256", "size", "append") if k in value}


def read_manifest(folder: str | os.PathLike) -> dict[str, dict[str, dict[str, Any]]] | None:
    """``{"files": {...}, "pending": {...}}`` of the manifest in ``folder``; None when there
    is none. A manifest that does not parse is a :class:`CorruptFileError`."""
    where = Path(folder) / CHECKSUMS
    try:
        data = fs.read_bytes(where)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        raw = json.loads(data.decode("utf-8"))
        if not isinstance(raw, dict) or not isinstance(raw.get("files"), dict):
            raise TypeError
        pending = raw.get("pending", {})
        if not isinstance(pending, dict):
            raise TypeError
    except (ValueError, TypeError, RecursionError):
        raise CorruptFileError(f"{where}: not a checksum manifest") from None
    return {
        "files": {str(k): _entry(v, where) for k, v in raw["files"].items()},
        "pending": {str(k): _entry(v, where) for k, v in pending.items()},
    }


def _write_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    out = {"files": dict(sorted(manifest["files"].items()))}
    if manifest["pending"]:
        out["pending"] = dict(sorted(manifest["pending"].items()))
    fs.write_bytes(folder / CHECKSUMS, (json.dumps(out, indent=2) + "\n").encode())


def _matches(data: bytes, entry: Mapping[str, Any]) -> int | None:
    """The length of the prefix of ``data`` that ``entry`` records, None if it does not
    match (an append entry records a prefix; any other entry the whole file)."""
    size = entry.get("size")
    size = len(data) if size is None else size
    if len(data) < size or (len(data) != size and not entry.get("append")):
        return None
    return size if sha256_bytes(data[:size]) == entry["sha256"] else None


def verified(path: str | os.PathLike, data: bytes, required: bool = True) -> bytes:
    """The recorded content of ``path`` given its bytes ``data`` (an appended file: its
    committed prefix). Raises :class:`CorruptFileError` naming the file when it fails its
    checksum, or (``required``) when there is no manifest or no entry for it."""
    path = Path(path)
    manifest = read_manifest(path.parent)
    if manifest is None:
        if required:
            raise CorruptFileError(
                f"{path}: no checksum manifest ({CHECKSUMS}) beside it; the folder was not "
                "written by hierlens or its save was interrupted (write it again)"
            )
        return data
    entries = [manifest[k][path.name] for k in ("files", "pending") if path.name in manifest[k]]
    if not entries:
        if not required:
            return data
        raise CorruptFileError(
            f"{path}: not recorded in {CHECKSUMS}; it was not written by hierlens or its "
            "save was interrupted (write it again)"
        )
    for entry in entries:
        size = _matches(data, entry)
        if size is not None:
            return data[:size]
    raise CorruptFileError(f"{path}: checksum mismatch with {CHECKSUMS} (file modified or corrupt)")


def read_checked(path: str | os.PathLike, required: bool = True) -> bytes:
    """The bytes of ``path`` checked against its manifest (see :func:`verified`); a file
    replaced between reading it and its manifest is read again once."""
    for attempt in (0, 1):
        data = fs.read_bytes(path)
        try:
            return verified(path, data, required)
        except CorruptFileError:
            if attempt:
                raise
    raise AssertionError  # pragma: no cover


def write_checked(files: Mapping[str | os.PathLike, bytes]) -> None:
    """Write ``{path: bytes}`` (files of one folder) atomically with their checksums:
    ``pending`` entries first, then the files, then the entries committed."""
    paths = {Path(p): bytes(d) for p, d in files.items()}
    if not paths:
        return
    folders = {p.parent for p in paths}
    if len(folders) != 1:
        raise ValueError(f"write_checked writes files of one folder, got {sorted(folders)}")
    folder = folders.pop()
    manifest = read_manifest(folder) or {"files": {}, "pending": {}}
    for path, data in paths.items():
        manifest["pending"][path.name] = {"sha256": sha256_bytes(data), "size": len(data)}
    _write_manifest(folder, manifest)
    for path, data in paths.items():
        fs.write_bytes(path, data)
    for path in paths:
        manifest["files"][path.name] = manifest["pending"].pop(path.name)
    _write_manifest(folder, manifest)


def is_committed(path: str | os.PathLike) -> bool:
    """Whether ``path`` exists, is committed in its manifest (no write of it pending) and
    matches its checksum: a file a rerun need not write again."""
    path = Path(path)
    try:
        manifest = read_manifest(path.parent)
        if manifest is None or path.name in manifest["pending"]:
            return False
        entry = manifest["files"].get(path.name)
        return entry is not None and _matches(fs.read_bytes(path), entry) is not None
    except (OSError, CorruptFileError):
        return False


def recorded_names(folder: str | os.PathLike) -> set[str]:
    """Names the manifest of ``folder`` records (committed or pending), plus the manifest."""
    manifest = read_manifest(folder)
    if manifest is None:
        return set()
    return set(manifest["files"]) | set(manifest["pending"]) | {CHECKSUMS}


def append_checked(path: str | os.PathLike, data: bytes) -> None:
    """Append ``data`` (whole lines) to ``path`` and commit the new prefix in its manifest.

    The file's committed prefix is checked first; bytes after it (an append that did not
    finish) are cut off with a warning naming the file before anything is appended, so a
    torn line is never continued. A file with content but no entry is a
    :class:`CorruptFileError` (a checked file whose checksums are gone).
    """
    path = Path(path)
    if not data:
        return
    manifest = read_manifest(path.parent) or {"files": {}, "pending": {}}
    size = fs.file_size(path)
    if size is None:  # removed (by hand, to start it again): what it recorded goes too
        manifest["files"].pop(path.name, None)
        manifest["pending"].pop(path.name, None)
    current = fs.read_bytes(path) if size else b""
    entry = None
    for key in ("files", "pending"):  # a rewrite that did not commit: settle it first
        candidate = manifest[key].get(path.name)
        if candidate is not None and _matches(current, {**candidate, "append": True}) is not None:
            entry = candidate
            break
    if entry is None:
        if manifest["files"].get(path.name) or manifest["pending"].get(path.name):
            raise CorruptFileError(
                f"{path}: checksum mismatch with {CHECKSUMS} (file modified or corrupt)"
            )
        if current:
            raise CorruptFileError(
                f"{path}: not recorded in {CHECKSUMS}; it was not written by hierlens or its "
                "checksums were lost (remove it to start it again)"
            )
        entry = {"sha256": sha256_bytes(b""), "size": 0}
    committed = entry.get("size", len(current))
    changed = (
        manifest["files"].get(path.name) != {**entry, "append": True}
        or path.name in (manifest["pending"])
    )
    manifest["pending"].pop(path.name, None)
    manifest["files"][path.name] = {**entry, "size": committed, "append": True}
    if changed:
        _write_manifest(path.parent, manifest)
    if len(current) > committed:
        torn = not current.endswith(b"\n")
        log.warning(
            "%s: dropped %d byte(s) after byte %d, written by an interrupted append%s; "
            "the run writes them again",
            path,
            len(current) - committed,
            committed,
            " (a torn last line)" if torn else "",
        )
        fs.truncate(path, committed)
    new = current[:committed] + data
    fs.append_bytes(path, data)
    manifest["files"][path.name] = {"sha256": sha256_bytes(new), "size": len(new), "append": True}
    _write_manifest(path.parent, manifest)
