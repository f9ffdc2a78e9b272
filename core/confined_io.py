"""Confined file access: the one way hierlens opens, writes, lists and deletes files.

A *root* is a folder the caller trusts: the run directory (or store, or SAE folder) that the
user named. It may itself be reached through a symbolic link; below it, nothing is. Every path
is opened one component at a time from the root's descriptor, each component with
``O_NOFOLLOW`` through ``dir_fd`` (the ``openat`` pattern), so that

- a symbolic link anywhere below the root, a name that leaves it (``..``, an absolute path)
  or an entry that is neither a regular file nor a folder (a FIFO, a device) is an
  :class:`UnsafePathError` naming it, and is never read, written, appended to or deleted
  through;
- a file with more than one hard link is never modified in place (appends, the lock file);
- whole-file writes are atomic: a temporary file in the same folder (``O_EXCL``), fsync, then
  ``os.replace`` and an fsync of the folder;
- a deletion removes only what its caller owns (:func:`remove_tree` takes an ownership test)
  and never descends through a link.

Which root applies to a path: the ``root`` argument where a function takes one, else the
outermost root made active with :func:`confine` that contains the path (``Run.lock()`` and
the readers of a run confine to the run directory), else the path's own folder (so the
file itself is still never a link). Every :class:`OSError` raised here names its path.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import secrets
import stat
from collections.abc import Iterator

__all__ = [
    "UnsafePathError",
    "append_bytes",
    "confine",
    "confinement",
    "entries",
    "file_kind",
    "file_size",
    "make_dirs",
    "open_lock",
    "read_bytes",
    "read_chunks",
    "replace",
    "truncate",
    "write_bytes",
]

_roots: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "hierlens_confined_roots", default=()
)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePathError(OSError):
    """A path inside a confined root that hierlens refuses: a symbolic link, a name leaving
    the root, a file with several hard links, or an entry that is not a file or folder."""

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def _abs(path: str | os.PathLike) -> str:
    return os.path.abspath(os.fspath(path))


@contextlib.contextmanager
def confine(root: str | os.PathLike) -> Iterator[None]:
    """Within the block, every path under ``root`` is opened from ``root`` without following
    a link (the outermost active root containing a path wins)."""
    token = _roots.set((*_roots.get(), _abs(root)))
    try:
        yield
    finally:
        _roots.reset(token)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def confinement(path: str | os.PathLike, root: str | os.PathLike | None = None) -> tuple[str, str]:
    """``(root, relative path)`` of ``path``: under ``root`` when given (a path outside it is
    an :class:`UnsafePathError`), else under the outermost active :func:`confine` root that
    contains it, else under its own folder."""
    full = _abs(path)
    if root is not None:
        base = _abs(root)
        if not _inside(full, base):
            raise UnsafePathError(errno.EXDEV, f"leaves its root folder {base}", str(path))
    else:
        base = next((r for r in _roots.get() if _inside(full, r)), os.path.dirname(full))
    return base, os.path.relpath(full, base) if full != base else "."


def _refusal(dir_fd: int, name: str, full: str, root: str) -> OSError | None:
    """The error for the entry ``name`` of ``dir_fd`` that is not a plain file or folder."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        why = f"a symbolic link inside {root}; hierlens never follows links there (remove it)"
        return UnsafePathError(errno.ELOOP, why, full)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return UnsafePathError(errno.EINVAL, f"not a regular file or folder (inside {root})", full)
    return None


class _Dir:
    """An open folder inside a root: ``fd``, and ``name`` of the entry the caller wants."""

    def __init__(self, root: str, parts: list[str], fd: int, name: str) -> None:
        self.root, self.parts, self.fd, self.name = root, parts, fd, name

    def full(self, name: str | None = None) -> str:
        name = self.name if name is None else name
        return os.path.join(self.root, *self.parts, *([name] if name != "." else []))

    def refuse_or(self, exc: OSError, name: str | None = None) -> OSError:
        """The error to raise for ``exc`` on entry ``name``: a refusal when the entry is a
        link or not a file or folder, else ``exc`` naming the path."""
        name = self.name if name is None else name
        refusal = _refusal(self.fd, name, self.full(name), self.root)
        if refusal is not None:
            return refusal
        return _named(exc, self.full(name))


def _split(rel: str, shown: str) -> list[str]:
    parts = [p for p in rel.split(os.sep) if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafePathError(errno.EXDEV, "leaves its root folder", shown)
    return parts


@contextlib.contextmanager
def _parent(
    path: str | os.PathLike, create: bool, root: str | os.PathLike | None = None
) -> Iterator[_Dir]:
    """The folder holding ``path`` opened from its root, creating missing folders when
    ``create`` (a missing one otherwise raises ``FileNotFoundError`` naming it)."""
    base, rel = confinement(path, root)
    parts = _split(rel, str(path)) or ["."]  # "." : the root itself (a trusted folder)
    try:
        if create:
            os.makedirs(base, exist_ok=True)
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), base) from exc
    walked: list[str] = []
    try:
        for part in parts[:-1]:
            handle = _Dir(base, walked, fd, part)
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError as exc:
                if not create:
                    raise handle.refuse_or(exc) from None
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass
                except OSError as exc2:
                    raise handle.refuse_or(exc2) from None
                try:
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc2:
                    raise handle.refuse_or(exc2) from None
            except OSError as exc:
                raise handle.refuse_or(exc) from None
            os.close(fd)
            fd = nfd
            walked = [*walked, part]
        yield _Dir(base, walked, fd, parts[-1])
    finally:
        os.close(fd)


def _open_file(d: _Dir, flags: int, mode: int = 0o666) -> int:
    """Open ``d.name`` (never through a link; FIFOs do not block) and check it is a regular
    file."""
    try:
        fd = os.open(
            d.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode, dir_fd=d.fd
        )
    except OSError as exc:
        raise d.refuse_or(exc) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnsafePathError(errno.EINVAL, "not a regular file", d.full())
    os.set_blocking(fd, True)
    return fd


def _single_link(fd: int, d: _Dir) -> None:
    if os.fstat(fd).st_nlink > 1:
        os.close(fd)
        why = "has other hard links; hierlens does not modify a file shared with another path"
        raise UnsafePathError(errno.EMLINK, why, d.full())


def read_bytes(path: str | os.PathLike, root: str | os.PathLike | None = None) -> bytes:
    """The bytes of the regular file ``path`` (``FileNotFoundError`` naming it if missing)."""
    with _parent(path, create=False, root=root) as d:
        fd = _open_file(d, os.O_RDONLY)
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 24):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)


def read_chunks(
    path: str | os.PathLike, root: str | os.PathLike | None = None, size: int = 1 << 20
) -> Iterator[bytes]:
    """The bytes of the regular file ``path`` in chunks of ``size`` (for hashing large files)."""
    with _parent(path, create=False, root=root) as d:
        fd = _open_file(d, os.O_RDONLY)
    try:
        while chunk := os.read(fd, size):
            yield chunk
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (the one place file contents are written)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_bytes(
    path: str | os.PathLike, data: bytes, root: str | os.PathLike | None = None
) -> None:
    """Replace ``path`` with ``data`` atomically (temporary file, fsync, ``os.replace``,
    fsync of the folder), creating its folders; the file gets the permissions a plain
    ``open()`` would give."""
    with _parent(path, create=True, root=root) as d:
        refusal = _refusal(d.fd, d.name, d.full(), d.root)
        if refusal is not None:
            raise refusal
        tmp = f".{d.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                dir_fd=d.fd,
            )  # fmt: skip
        except OSError as exc:
            raise _named(exc, d.full()) from None
        try:
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, d.name, src_dir_fd=d.fd, dst_dir_fd=d.fd)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=d.fd)
            if isinstance(exc, OSError):
                raise _named(exc, d.full()) from exc
            raise
        _fsync(d.fd)


def _named(exc: OSError, full: str) -> OSError:
    """``exc`` naming the full path ``full`` (a full disk raises ``ENOSPC`` without a file
    name; a call relative to a folder descriptor names only the entry)."""
    out = OSError(exc.errno, exc.strerror or str(exc), full)
    out.__cause__ = exc
    return out


def _fsync(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.fsync(fd)


def append_bytes(
    path: str | os.PathLike, data: bytes, root: str | os.PathLike | None = None
) -> int:
    """Append ``data`` to ``path`` (created if missing), fsync it, and return the new size.
    The file must be a regular file with no other hard link."""
    with _parent(path, create=True, root=root) as d:
        fd = _open_file(d, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        _single_link(fd, d)
        try:
            _write_all(fd, data)
            os.fsync(fd)
            return os.fstat(fd).st_size
        except OSError as exc:
            raise _named(exc, d.full()) from exc
        finally:
            os.close(fd)


def truncate(path: str | os.PathLike, size: int, root: str | os.PathLike | None = None) -> None:
    """Cut the regular file ``path`` to ``size`` bytes (and fsync it)."""
    with _parent(path, create=False, root=root) as d:
        fd = _open_file(d, os.O_WRONLY)
        _single_link(fd, d)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError as exc:
            raise _named(exc, d.full()) from exc
        finally:
            os.close(fd)


def file_kind(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str | None:
    """``"file"``, ``"dir"`` or None (missing, or a folder on the way is missing); a link or
    another kind of entry on the way or at the end is an :class:`UnsafePathError`."""
    try:
        with _parent(path, create=False, root=root) as d:
            refusal = _refusal(d.fd, d.name, d.full(), d.root)
            if refusal is not None:
                raise refusal
            try:
                st = os.lstat(d.name, dir_fd=d.fd)
            except FileNotFoundError:
                return None
            return "dir" if stat.S_ISDIR(st.st_mode) else "file"
    except (FileNotFoundError, NotADirectoryError):
        return None


def file_size(path: str | os.PathLike, root: str | os.PathLike | None = None) -> int | None:
    """The size of the regular file ``path``, None when it is missing."""
    if file_kind(path, root) != "file":
        return None
    with _parent(path, create=False, root=root) as d:
        return os.lstat(d.name, dir_fd=d.fd).st_size


def entries(path: str | os.PathLike, root: str | os.PathLike | None = None) -> dict[str, str]:
    """``{name: "file" | "dir" | "link" | "other"}`` of the folder ``path`` (sorted by name;
    empty when it does not exist). Links are reported, never followed."""
    if file_kind(path, root) != "dir":
        return {}
    with _parent(path, create=False, root=root) as d:
        fd = os.open(d.name, _DIR_FLAGS, dir_fd=d.fd)
        try:
            out = {}
            with os.scandir(fd) as it:
                for e in it:
                    if e.is_symlink():
                        out[e.name] = "link"
                    elif e.is_dir(follow_symlinks=False):
                        out[e.name] = "dir"
                    elif e.is_file(follow_symlinks=False):
                        out[e.name] = "file"
                    else:
                        out[e.name] = "other"
            return dict(sorted(out.items()))
        finally:
            os.close(fd)


def make_dirs(path: str | os.PathLike, root: str | os.PathLike | None = None) -> None:
    """Create the folder ``path`` and its parents inside the root (none may be a link)."""
    with _parent(path, create=True, root=root) as d:
        if d.name == ".":
            return
        try:
            os.mkdir(d.name, 0o777, dir_fd=d.fd)
        except FileExistsError:
            pass
        except OSError as exc:
            raise d.refuse_or(exc) from None
        refusal = _refusal(d.fd, d.name, d.full(), d.root)
        if refusal is not None:
            raise refusal
        if not stat.S_ISDIR(os.lstat(d.name, dir_fd=d.fd).st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", d.full())


def replace(
    src: str | os.PathLike, dst: str | os.PathLike, root: str | os.PathLike | None = None
) -> None:
    """``os.replace`` of ``src`` by ``dst`` (entries of the same folder), then fsync it."""
    if os.path.dirname(_abs(src)) != os.path.dirname(_abs(dst)):
        raise ValueError(f"replace() renames within one folder, not {src} -> {dst}")
    with _parent(dst, create=False, root=root) as d:
        for name in (os.path.basename(_abs(src)), d.name):
            refusal = _refusal(d.fd, name, d.full(name), d.root)
            if refusal is not None:
                raise refusal
        try:
            os.replace(os.path.basename(_abs(src)), d.name, src_dir_fd=d.fd, dst_dir_fd=d.fd)
        except OSError as exc:
            raise _named(exc, d.full()) from exc
        _fsync(d.fd)


def open_lock(path: str | os.PathLike, root: str | os.PathLike | None = None) -> int:
    """A read-write descriptor of the lock file ``path`` (created 0644 if missing): never
    through a link, never a file with other hard links, never a FIFO or device."""
    with _parent(path, create=True, root=root) as d:
        fd = _open_file(d, os.O_RDWR | os.O_CREAT, 0o644)
        _single_link(fd, d)
        return fd
