"""Atomic, checksummed file writes and validated reads, on the confined file layer.

Every file hierlens writes goes through :mod:`~hierlens.core.confined_io` (never through a
link, never outside its root): whole files are replaced atomically (temporary file, fsync,
``os.replace``), so a reader never sees a half-written file and an interrupted write never
destroys the previous version; JSON lines are appended with fsync. Readers raise
:class:`CorruptFileError` naming the file when it is truncated or does not parse.

Files that a later stage reads are *checked*: :func:`write_checked_json` and its variants
record their sha256 in the folder's manifest (:mod:`~hierlens.core.checksums`), and
:func:`read_json` / :func:`read_jsonl` require it (``verify=True``, the default); records are
validated against a schema where the reader gives one (:func:`check_records`). JSON is
written strictly: a non-finite float becomes ``null``, never a bare ``NaN``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import confined_io as fs
from .checksums import (
    CorruptFileError,
    append_checked,
    read_checked,
    sha256_bytes,
    write_checked,
)

__all__ = [
    "OptionalField",
    "append_jsonl",
    "atomic_write_bytes",
    "atomic_write_json",
    "check_records",
    "dumps",
    "json_safe",
    "load_checked_tensors",
    "load_tensors",
    "parse_tensors",
    "read_json",
    "read_jsonl",
    "salvage_jsonl",
    "save_tensors",
    "tensor_bytes",
    "write_checked_bytes",
    "write_checked_json",
    "write_checked_jsonl",
]

log = logging.getLogger(__name__)


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, inf) replaced by None, recursively through
    dicts, lists and tuples (what strict JSON can hold)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj: Any, indent: int | None = None) -> str:
    """Strict JSON text of ``obj`` (non-finite floats written as ``null``)."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


def _jsonl_bytes(records: Iterable[Mapping[str, Any]]) -> bytes:
    return "".join(dumps(dict(r)) + "\n" for r in records).encode()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (no checksum: outputs no stage reads back)."""
    fs.write_bytes(path, data)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented strict JSON, atomically (no checksum: files validated by a
    schema when read, such as an activation store's manifest)."""
    fs.write_bytes(path, (dumps(obj, indent=2) + "\n").encode())


def write_checked_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` atomically with its checksum (see :func:`~.checksums.write_checked`)."""
    write_checked({path: data})


def write_checked_json(path: str | os.PathLike, obj: Any) -> None:
    """Indented strict JSON, atomically, checksummed."""
    write_checked_bytes(path, (dumps(obj, indent=2) + "\n").encode())


def write_checked_jsonl(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> None:
    """Replace a JSONL file with ``records`` (one strict JSON object a line), checksummed."""
    write_checked_bytes(path, _jsonl_bytes(records))


def append_jsonl(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> None:
    """Append ``records`` as JSON lines and commit them in the folder's checksum manifest;
    an interrupted earlier append's bytes (a torn line) are cut off first, with a warning."""
    append_checked(path, _jsonl_bytes(records))


def _text(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptFileError(
            f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})"
        ) from None


def read_json(path: str | os.PathLike, verify: bool = True) -> Any:
    """Read a JSON file. ``verify``: it must match the checksum recorded beside it (a missing
    manifest or entry is an error); else a checksum is checked only when recorded. A file
    that does not parse or fails its checksum is a :class:`CorruptFileError` naming it."""
    path = Path(path)
    text = _text(path, read_checked(path, required=verify))
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorruptFileError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:  # a nesting bomb is corrupt too
        raise CorruptFileError(f"{path}: not valid JSON (nested too deeply)") from None


def read_jsonl(
    path: str | os.PathLike,
    verify: bool = True,
    schema: Mapping[str, type | tuple[type, ...] | OptionalField] | None = None,
) -> list[dict[str, Any]]:
    """The records of a JSONL file (``[]`` when it does not exist).

    ``verify``: the file's committed content is checked against its manifest (bytes an
    interrupted append left after it are ignored); unverified files may end in a torn line,
    which is skipped with a warning naming the file. Every line must be a JSON object, and
    with ``schema`` pass :func:`check_records`; anything else is a :class:`CorruptFileError`
    naming the file and line.
    """
    path = Path(path)
    if fs.file_kind(path) is None:
        return []
    data = read_checked(path, required=verify)
    lines = _text(path, data).split("\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            if i == len(lines) - 1 and not verify:
                log.warning("%s: ignoring a torn last line (line %d)", path, i + 1)
                break
            raise CorruptFileError(f"{path}: line {i + 1} is not valid JSON") from None
        if not isinstance(record, dict):
            raise CorruptFileError(f"{path}: line {i + 1} is not a JSON object")
        out.append(record)
    if schema:
        check_records(path, out, schema)
    return out


def salvage_jsonl(
    path: str | os.PathLike,
    schema: Mapping[str, type | tuple[type, ...] | OptionalField] | None = None,
) -> list[dict[str, Any]]:
    """The records of the JSONL file ``path`` for the writer that owns it: as
    :func:`read_jsonl` reads them when the file verifies; otherwise (truncated or modified)
    its leading complete lines that are JSON objects passing ``schema``, kept and committed
    anew with a warning naming the file and what was dropped, so the writer can go on (and
    write again what it can recompute). Readers that do not own the file use
    :func:`read_jsonl`, which refuses it."""
    try:
        return read_jsonl(path, schema=schema)
    except CorruptFileError as exc:
        reason = str(exc)
    data = fs.read_bytes(path)
    kept: list[dict[str, Any]] = []
    size = 0
    for line in data.split(b"\n")[:-1]:  # complete lines only
        try:
            record = json.loads(line.decode("utf-8"))
            if not isinstance(record, dict):
                break
            if schema:
                check_records(path, [record], schema)
        except (ValueError, UnicodeDecodeError, RecursionError):
            break
        kept.append(record)
        size += len(line) + 1
    log.warning(
        "%s: kept its first %d record(s) (%d of %d bytes); the rest is dropped and written "
        "again where it can be (%s)",
        path,
        len(kept),
        size,
        len(data),
        reason,
    )
    write_checked_jsonl(path, kept)
    return kept


@dataclasses.dataclass(frozen=True)
class OptionalField:
    """A :func:`check_records` schema entry for a field a record may lack: when present, its
    value must be of ``kinds`` (a type or a tuple of types, as for a required field)."""

    kinds: type | tuple[type, ...]


def check_records(
    path: str | os.PathLike,
    records: list[dict[str, Any]],
    schema: Mapping[str, type | tuple[type, ...] | OptionalField],
) -> None:
    """Check that every record has the fields of ``schema`` with those types (``int`` does
    not accept a bool; ``float`` accepts an int; ``type(None)`` allows null; an
    :class:`OptionalField` may be missing); a record that does not is a
    :class:`CorruptFileError` naming the file, the record and the field."""
    for i, record in enumerate(records):
        for key, kinds in schema.items():
            if isinstance(kinds, OptionalField):
                if key not in record:
                    continue
                kinds = kinds.kinds
            kinds = kinds if isinstance(kinds, tuple) else (kinds,)
            if float in kinds:
                kinds = (*kinds, int)
            value = record.get(key, ...)
            ok = value is not ... and isinstance(value, kinds)
            if isinstance(value, bool) and bool not in kinds:
                ok = False
            if not ok:
                names = "/".join("null" if k is type(None) else k.__name__ for k in kinds)
                got = "missing" if value is ... else repr(value)[:40]
                raise CorruptFileError(
                    f"{path}: record {i + 1} field {key!r} must be {names}, got {got}"
                )


def save_tensors(
    path: str | os.PathLike,
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str] | None = None,
) -> str:
    """Save tensors as safetensors atomically; returns the file's sha256 (for the manifest
    that records it)."""
    prepared = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    data = st_save(prepared, metadata=metadata)
    fs.write_bytes(path, data)
    return sha256_bytes(data)


def tensor_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors file of ``tensors`` (for :func:`~.checksums.write_checked`)."""
    prepared = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return st_save(prepared, metadata=metadata)


def parse_tensors(path: str | os.PathLike, data: bytes) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors bytes ``data`` read from ``path`` (a
    :class:`CorruptFileError` naming it when they do not parse)."""
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as exc:
        raise CorruptFileError(f"{path}: not a valid safetensors file ({exc})") from exc


def load_tensors(
    path: str | os.PathLike, expected_sha256: str | None = None
) -> dict[str, torch.Tensor]:
    """Load a safetensors file, checking its sha256 when given.

    Raises :class:`CorruptFileError` naming the file when it is truncated, does not parse or
    fails the checksum, and ``FileNotFoundError`` when it is missing.
    """
    data = fs.read_bytes(path)
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256:
        raise CorruptFileError(f"{path}: checksum mismatch (file truncated or modified)")
    return parse_tensors(path, data)


def load_checked_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a safetensors file that must match the checksum recorded beside it."""
    return parse_tensors(path, read_checked(path))
