"""Deleting what a run wrote, and only that.

A file belongs to the run when a manifest of the run records it: the checksum manifest of its
folder (:mod:`~hierlens.core.checksums`, which lists every checked file: configs, JSONL
results, checkpoints, SAE folders, the report and figures), the manifest of the activation
store it belongs to (index and shards), or when it is a temporary file of an interrupted
write. The experiment trackers' folders (``trackers/``) are written by their libraries on the
run's behalf and belong to it whole, as do the report, the figures of the run's
``figures/`` folder and the SAEBench result files under ``saes/saebench/`` (outputs written
without checksums). Nothing is deleted through a link
(:func:`~hierlens.core.confined_delete.remove_tree`); what is left is named in a warning.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

from hierlens.core import confined_io as fs
from hierlens.core.checksums import CorruptFileError, recorded_names
from hierlens.core.confined_delete import remove_tree

from .run_layout import RunLayout
from .run_lock import LOCK_FILE

log = logging.getLogger(__name__)

__all__ = ["clear_run", "remove_owned"]

_TMP = re.compile(r"\..+\.(tmp|tmp-\d+|old-\d+)")
_STORE_FORMAT = "hierlens.activation_store"
_PART = re.compile(r"shard-\d+\.json")
_FIGURES = (".png", ".pdf", ".svg", ".json", ".html")


def _store_listed(base: Path) -> set[str]:
    """Relative paths the activation-store manifest in ``base`` records (none when ``base``
    holds no store manifest)."""
    try:
        manifest = json.loads(fs.read_bytes(base / "manifest.json"))
    except (OSError, ValueError, RecursionError):
        return set()
    if not isinstance(manifest, dict) or manifest.get("format") != _STORE_FORMAT:
        return set()
    out = {"manifest.json"}
    index = manifest.get("index")
    if isinstance(index, dict) and isinstance(index.get("file"), str):
        out.add(index["file"])
    for shard in manifest.get("shards") or []:
        files = shard.get("files") if isinstance(shard, dict) else None
        for entry in (files or {}).values() if isinstance(files, dict) else ():
            if isinstance(entry, dict) and isinstance(entry.get("file"), str):
                out.add(os.path.normpath(entry["file"]))
    return out


class _Ownership:
    """Whether a file of the run ``run_dir`` belongs to it (see the module docstring); the
    manifests it reads are kept, so removing a manifest does not disown its files."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(os.path.abspath(run_dir))
        self.trackers = self.run_dir / "trackers"
        self.saebench = RunLayout(self.run_dir).saebench_dir
        self.recorded: dict[Path, set[str]] = {}
        self.stores: dict[Path, set[str]] = {}

    def _recorded(self, folder: Path) -> set[str]:
        if folder not in self.recorded:
            try:
                self.recorded[folder] = recorded_names(folder)
            except (OSError, CorruptFileError):
                self.recorded[folder] = set()
        return self.recorded[folder]

    def _store(self, folder: Path) -> set[str]:
        if folder not in self.stores:
            self.stores[folder] = _store_listed(folder)
        return self.stores[folder]

    def __call__(self, path: Path) -> bool:
        path = Path(os.path.abspath(path))
        folder, name = path.parent, path.name
        if name == LOCK_FILE and folder == self.run_dir:
            return False
        if _TMP.fullmatch(name) or name in self._recorded(folder):
            return True
        if self.trackers in path.parents:
            return True
        if (folder == self.run_dir and name == "report.html") or (
            folder == self.run_dir / "figures" and path.suffix in _FIGURES
        ):
            return True
        if folder.parent == self.saebench and name.endswith("_eval_results.json"):
            return True
        if folder.name == "parts" and _PART.fullmatch(name) and self._store(folder.parent):
            return True
        return any(str(path.relative_to(b)) in self._store(b) for b in (folder, folder.parent))


def remove_owned(
    run_dir: str | os.PathLike, paths: Iterable[str | os.PathLike], what: str = "the run"
) -> list[str]:
    """Remove each of ``paths`` (files or folders of the run ``run_dir``) as far as the run
    owns them; returns what was left, after naming it in a warning."""
    owned = _Ownership(run_dir)
    left: list[str] = []
    with fs.confine(run_dir):
        for path in map(Path, paths):
            left += remove_tree(path, lambda parts, b=path: owned(b.joinpath(*parts)))
    if left:
        shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
        log.warning("left %d file(s) that %s did not write in place: %s", len(left), what, shown)
    return left


def clear_run(run_dir: str | os.PathLike) -> list[str]:
    """Remove everything the run ``run_dir`` wrote (all but its lock and the files it does
    not own, which are named in a warning), for starting it again; returns what was left."""
    with fs.confine(run_dir):
        found = {n: k for n, k in fs.entries(run_dir).items() if n != LOCK_FILE}
    links = [str(Path(run_dir) / n) for n, k in found.items() if k in ("link", "other")]
    plain = [Path(run_dir) / n for n, k in found.items() if k in ("file", "dir")]
    if links:
        log.warning("left %d link(s) or special file(s) in place: %s", len(links), links)
    return links + remove_owned(run_dir, plain)
