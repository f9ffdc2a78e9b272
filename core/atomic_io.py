"""Atomic, checksummed file writes and validated reads.

Every file hierlens writes goes to a temporary file in the same folder, is fsynced and then
moved into place with ``os.replace``, so a reader never sees a half-written file and an
interrupted write never destroys the previous version. Readers raise :class:`CorruptFileError`
naming the file when it is truncated or does not parse.

Files that a later stage reads (SAE folders, probe results, tracking records, figure data,
``config.json``) are also *checksummed*: :func:`write_checked_bytes` and its JSON/JSONL
variants record the file's sha256 in ``hierlens_sha256.json`` beside it (:data:`CHECKSUMS`,
one per folder, ``{"files": {name: sha256}}``), and :func:`read_json`, :func:`read_jsonl`
and :func:`expected_sha256` check it: a file that no longer matches its recorded checksum is
a :class:`CorruptFileError` naming it. A file's entry is dropped before it is rewritten and
recorded after, so an interrupted write leaves a complete file with no entry (read
unchecked), never a stale entry. An OS error while writing (full disk, read-only file system)
is raised with the path it was writing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save


class CorruptFileError(ValueError):
    """A file that exists but is truncated, corrupt or fails its checksum."""


#: the checksum manifest of a folder: ``{"files": {file name: sha256}}``
CHECKSUMS = "hierlens_sha256.json"


def _with_path(exc: OSError, path: Path) -> OSError:
    """``exc`` itself when it names a file, else the same error naming ``path`` (a full disk
    raises ``OSError 28`` without a file name)."""
    if exc.filename is not None:
        return exc
    out = OSError(exc.errno, exc.strerror or str(exc), str(path))
    out.__cause__ = exc
    return out


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, ``os.replace``)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _with_path(exc, path) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file 0600; give it the permissions a plain open() would
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _with_path(exc, path) from exc
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    """The process's file-creation mask (read by setting it and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def _read_text(path: Path) -> str:
    """The text of ``path``, checked against its recorded checksum; bytes that are not
    UTF-8 are a :class:`CorruptFileError` naming the file."""
    data = path.read_bytes()
    verify_checksum(path, data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptFileError(
            f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})"
        ) from None


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a file that does not parse or fails its recorded checksum is a
    :class:`CorruptFileError` naming it."""
    path = Path(path)
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorruptFileError(f"{path}: not valid JSON ({exc})") from exc


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_tensors(
    path: str | os.PathLike,
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str] | None = None,
) -> str:
    """Save tensors as safetensors atomically; returns the file's sha256."""
    prepared = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    data = st_save(prepared, metadata=metadata)
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


def load_tensors(
    path: str | os.PathLike, expected_sha256: str | None = None
) -> dict[str, torch.Tensor]:
    """Load a safetensors file, checking its sha256 when given.

    Raises :class:`CorruptFileError` naming the file when it is truncated, does not parse or
    fails the checksum, and ``FileNotFoundError`` when it is missing.
    """
    path = Path(path)
    data = path.read_bytes()
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256:
        raise CorruptFileError(f"{path}: checksum mismatch (file truncated or modified)")
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CorruptFileError(f"{path}: not a valid safetensors file ({exc})") from exc


def append_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """Append JSON records, one per line, flushing and fsyncing so a crash loses no line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r) + "\n" for r in records)
    if not lines:
        return
    try:
        with open(path, "a") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise _with_path(exc, path) from exc


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a JSONL file; a torn last line (from a crash mid-write) is ignored, any other bad
    line is a :class:`CorruptFileError`."""
    path = Path(path)
    if not path.exists():
        return []
    lines = _read_text(path).splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                break
            raise CorruptFileError(f"{path}: line {i + 1} is not valid JSON") from exc
    return out


def atomic_write_jsonl_records(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """Replace a JSONL file with ``records``, atomically."""
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in records).encode())


# ---------------------------------------------------------------- checksum manifests
def _manifest_path(path: Path) -> Path:
    return path.parent / CHECKSUMS


def _read_manifest(folder_file: Path) -> dict[str, str]:
    """``{name: sha256}`` of the manifest ``folder_file`` (empty when there is none)."""
    try:
        data = folder_file.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return {}
    try:
        files = json.loads(data.decode("utf-8"))["files"]
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise CorruptFileError(f"{folder_file}: not a checksum manifest") from None
    return files


def _update_manifest(folder: Path, changes: dict[str, str | None]) -> None:
    manifest = folder / CHECKSUMS
    files = _read_manifest(manifest)
    new = dict(files)
    for name, digest in changes.items():
        if digest is None:
            new.pop(name, None)
        else:
            new[name] = digest
    if new != files:
        atomic_write_bytes(manifest, (json.dumps({"files": new}, indent=2) + "\n").encode())


def expected_sha256(path: str | os.PathLike) -> str | None:
    """The sha256 recorded for ``path`` in the checksum manifest beside it (None if none)."""
    path = Path(path)
    return _read_manifest(_manifest_path(path)).get(path.name)


def verify_checksum(path: str | os.PathLike, data: bytes | None = None) -> None:
    """Check ``path`` (or its bytes ``data``) against its recorded checksum, if it has one;
    a mismatch is a :class:`CorruptFileError` naming the file."""
    path = Path(path)
    expected = expected_sha256(path)
    if expected is None:
        return
    actual = sha256_bytes(data) if data is not None else sha256_file(path)
    if actual != expected:
        raise CorruptFileError(
            f"{path}: checksum mismatch with {_manifest_path(path).name} (file modified or corrupt)"
        )


def forget_checksums(paths: Iterable[str | os.PathLike]) -> None:
    """Drop the recorded checksums of ``paths`` (all in one folder) before rewriting them."""
    paths = [Path(p) for p in paths]
    if paths and _manifest_path(paths[0]).exists():
        _update_manifest(paths[0].parent, {p.name: None for p in paths})


def record_checksums(digests: dict[str | os.PathLike, str]) -> None:
    """Record ``{path: sha256}`` (files of one folder) in that folder's manifest."""
    if digests:
        paths = {Path(p): d for p, d in digests.items()}
        _update_manifest(next(iter(paths)).parent, {p.name: d for p, d in paths.items()})


def write_checked_bytes(path: str | os.PathLike, data: bytes) -> None:
    """:func:`atomic_write_bytes`, recording the file's sha256 in the folder's manifest."""
    path = Path(path)
    forget_checksums([path])
    atomic_write_bytes(path, data)
    record_checksums({path: sha256_bytes(data)})


def write_checked_json(path: str | os.PathLike, obj: Any) -> None:
    """:func:`atomic_write_json`, checksummed."""
    write_checked_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def write_checked_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """:func:`atomic_write_jsonl_records`, checksummed."""
    write_checked_bytes(path, "".join(json.dumps(r) + "\n" for r in records).encode())


def append_checked_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """:func:`append_jsonl`, checksummed: the file is verified first (appending to a corrupt
    file is an error naming it) and its new sha256 recorded after."""
    path = Path(path)
    records = list(records)
    if not records:
        return
    if path.exists():
        verify_checksum(path)
    forget_checksums([path])
    append_jsonl(path, records)
    record_checksums({path: sha256_file(path)})
