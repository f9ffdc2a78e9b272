"""Deleting inside a confined root: only what the caller owns, never through a link.

:func:`remove_tree` walks a folder from its root's descriptor (``dir_fd``, ``O_NOFOLLOW``,
:mod:`~hierlens.core.confined_io`) and removes a regular file only when the caller's
ownership test accepts it (a file its checksum manifest or store manifest lists, a file of a
folder marked as its own); links are neither followed nor removed, and every entry it leaves
is returned so the caller can name it. :func:`unlink` removes one file.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .confined_io import _DIR_FLAGS, _fsync, _named, _parent, file_kind

__all__ = ["remove_tree", "unlink"]


def unlink(path: str | os.PathLike, root: str | os.PathLike | None = None) -> bool:
    """Remove the file ``path`` (a link at that name is removed, never followed); True when
    something was removed."""
    try:
        with _parent(path, create=False, root=root) as d:
            try:
                os.unlink(d.name, dir_fd=d.fd)
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise _named(exc, d.full()) from exc
            _fsync(d.fd)
            return True
    except (FileNotFoundError, NotADirectoryError):
        return False


def remove_tree(
    path: str | os.PathLike,
    owned: Callable[[tuple[str, ...]], bool],
    root: str | os.PathLike | None = None,
) -> list[str]:
    """Delete the folder (or file) ``path`` as far as its caller owns it: a regular file is
    removed when ``owned(parts)`` says so (``parts``: its path relative to ``path``), a folder
    when it is then empty. Links are never followed nor removed; returns the paths left in
    place (not owned, links, other kinds), which keep their folders."""
    kind = file_kind(path, root)
    if kind is None:
        return []
    if kind == "file":
        if owned(()):
            unlink(path, root)
            return []
        return [str(path)]
    left: list[str] = []
    with _parent(path, create=False, root=root) as d:
        fd = os.open(d.name, _DIR_FLAGS, dir_fd=d.fd)
        try:
            _remove_in(fd, (), owned, d.full(), left)
        finally:
            os.close(fd)
        if not left:
            try:
                os.rmdir(d.name, dir_fd=d.fd)
            except OSError as exc:
                raise _named(exc, d.full()) from exc
        _fsync(d.fd)
    return left


def _remove_in(
    fd: int, prefix: tuple[str, ...], owned: Callable, shown: str, left: list[str]
) -> None:
    with os.scandir(fd) as it:
        found = [(e.name, e.is_symlink(), e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False)) for e in it]  # fmt: skip
    for name, link, is_dir, is_file in sorted(found):
        parts = (*prefix, name)
        full = os.path.join(shown, *parts)
        if link or not (is_dir or is_file):
            left.append(full)
        elif is_file:
            if owned(parts):
                try:
                    os.unlink(name, dir_fd=fd)
                except OSError as exc:
                    raise _named(exc, full) from exc
            else:
                left.append(full)
        else:
            sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
            before = len(left)
            try:
                _remove_in(sub, parts, owned, shown, left)
            finally:
                os.close(sub)
            if len(left) == before:
                try:
                    os.rmdir(name, dir_fd=fd)
                except OSError as exc:
                    raise _named(exc, full) from exc
