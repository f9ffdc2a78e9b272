"""The writer lock of a run directory: one process at a time writes a run.

:func:`hold_lock` takes an exclusive OS lock (``fcntl.flock``) on ``.hierlens.lock`` in the
directory for as long as the writer runs. The OS drops it when the process ends, however it
ends (a killed writer leaves no stale lock); a second writer gets :class:`RunLockedError`
naming the holder's pid and host. The lock is re-entrant within a process (the pipeline holds
it while train, capture, ... take it again).

The lock file is opened through :func:`~hierlens.core.confined_io.open_lock`: never through a
symbolic link, never a file with other hard links, never a FIFO, so a planted
``.hierlens.lock`` cannot make the writer overwrite another file with its pid. While the
lock is held, file access under the directory is confined to it
(:func:`~hierlens.core.confined_io.confine`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import inspect
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from hierlens.core import confined_io as fs
from hierlens.core.confined_delete import unlink

__all__ = ["LOCK_FILE", "RunLockedError", "hold_lock", "locks_run"]

#: the file a writer locks (its content: the holder's pid and host, for the error message)
LOCK_FILE = ".hierlens.lock"


class RunLockedError(OSError):
    """Another process holds the run directory's writer lock."""

    def __str__(self) -> str:
        return str(self.strerror)


_locks: dict[tuple[int, int], list[int]] = {}  # (device, inode) of the run dir -> [fd, depth]
_locks_guard = threading.Lock()


def _holder(fd: int) -> str:
    """Who holds the lock, from the file's text (printable pid and host only)."""
    words = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
    if len(words) >= 2 and words[0].isdigit() and words[1].isprintable():
        return f"pid {words[0]} on host {words[1][:64]}"
    return "another process"


def _acquire(path: Path) -> tuple[int, int]:
    try:
        fs.make_dirs(path, root=path)
        st = os.stat(path)
    except OSError as exc:
        raise exc if exc.filename else OSError(exc.errno, exc.strerror, str(path)) from exc
    key = (st.st_dev, st.st_ino)
    with _locks_guard:
        held = _locks.get(key)
        if held is not None:
            held[1] += 1
            return key
        lock_path = path / LOCK_FILE
        fd = fs.open_lock(lock_path, root=path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _holder(fd)
            os.close(fd)
            raise RunLockedError(
                errno.EAGAIN,
                f"{path} is being written by {who} (lock {lock_path}); wait for it to "
                "finish or use another run directory",
                str(lock_path),
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        except OSError:
            pass  # a full disk: the lock holds without the holder's name
        _locks[key] = [fd, 1]
        return key


def _release(key: tuple[int, int]) -> None:
    with _locks_guard:
        held = _locks[key]
        held[1] -= 1
        if held[1] == 0:
            del _locks[key]
            fcntl.flock(held[0], fcntl.LOCK_UN)
            os.close(held[0])


def _remove_if_only_lock(path: Path) -> None:
    """Remove a directory that :func:`hold_lock` created and nothing else wrote into."""
    try:
        if set(fs.entries(path, root=path)) <= {LOCK_FILE}:
            unlink(path / LOCK_FILE, root=path)
            path.rmdir()
    except OSError:
        pass


@contextlib.contextmanager
def hold_lock(path: str | os.PathLike, enabled: bool | None = None) -> Iterator[None]:
    """Hold the writer lock of the run directory ``path`` for the ``with`` block (creating
    the directory if needed), with file access under it confined to it.

    Re-entrant within a process. Raises :class:`RunLockedError` (naming the holder's pid and
    host) at once when another process holds it. ``enabled=None``: lock unless this is a
    non-zero rank of a distributed launch (``RANK`` set and not ``0``), so under ``torchrun``
    rank 0 holds the lock for the job; ``False``: no lock (access is still confined).
    """
    path = Path(path)
    if enabled is None:
        enabled = os.environ.get("RANK", "0") in ("", "0")
    if not enabled:
        with fs.confine(path):
            yield
        return
    created = not path.exists()
    try:
        key = _acquire(path)
    except BaseException:
        if created:
            _remove_if_only_lock(path)
        raise
    try:
        with fs.confine(path):
            yield
    finally:
        _release(key)
        if created:  # a writer that failed before writing leaves no folder behind
            _remove_if_only_lock(path)


F = TypeVar("F", bound=Callable[..., Any])


def locks_run(argument: str = "run_dir") -> Callable[[F], F]:
    """Decorator: the function holds the writer lock (:func:`hold_lock`) of the run
    directory passed as its ``argument`` while it runs."""

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            run_dir = signature.bind(*args, **kwargs).arguments[argument]
            with hold_lock(getattr(run_dir, "path", run_dir)):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
