"""Atomic, checksummed file writes and validated reads.

Every file hierlens writes goes to a temporary file in the same folder, is fsynced and then
moved into place with ``os.replace``, so a reader never sees a half-written file and an
interrupted write never destroys the previous version. Readers raise :class:`CorruptFileError`
naming the file when it is truncated or does not parse.
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file 0600; give it the permissions a plain open() would
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
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


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a file that does not parse is a :class:`CorruptFileError`."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
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
    with open(path, "a") as f:
        f.write(lines)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a JSONL file; a torn last line (from a crash mid-write) is ignored, any other bad
    line is a :class:`CorruptFileError`."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
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
