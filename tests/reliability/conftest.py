"""Fixtures of the fault-injection tests: a fork server that has hierlens imported (so a
child stage starts in milliseconds, not seconds), and run-directory snapshots to compare."""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.forkserver
from pathlib import Path
from typing import Any

import pytest

from hierlens.core.checksums import CHECKSUMS

PRELOAD = [
    "torch",
    "transformer_lens.config",
    "transformer_lens.model_bridge",
    "transformer_lens.model_bridge.sources.native",
    "transformer_lens.model_bridge.sources.native.model",
    "hierlens.models",
    "hierlens.sae",
    "hierlens.probes",
    "hierlens.analysis.pipeline",
    "hierlens.analysis.grokking",
    "hierlens.analysis.cli",
    "tests.reliability._stages",
]


class Stages:
    """Runs :func:`tests.reliability._stages.run_stage` in forked children."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def run(self, kind: str, run_dir: Path, kill_at: int = 0, timeout: float = 120) -> tuple:
        """``(exit code, file events)``: -9 when killed; events only when it finished."""
        from tests.reliability._stages import run_stage

        count = run_dir.parent / f".{run_dir.name}.events"
        count.unlink(missing_ok=True)
        proc = self.ctx.Process(target=run_stage, args=(kind, str(run_dir), kill_at, str(count)))
        proc.start()
        proc.join(timeout)
        if proc.is_alive():  # never leave a process behind
            proc.kill()
            proc.join()
            pytest.fail(f"stage {kind} did not finish in {timeout} s")
        events = json.loads(count.read_text()) if count.exists() else None
        return proc.exitcode, events


@pytest.fixture(scope="package")
def stages():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    try:
        yield Stages(ctx)
    finally:
        server = multiprocessing.forkserver._forkserver
        stop = getattr(server, "_stop", None)
        if stop is not None:
            stop()


def _jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def snapshot(run_dir: Path) -> dict[str, Any]:
    """What a rerun must reproduce: every file of the run directory by relative path, JSON
    parsed (timings dropped), other files by content. Hidden temporary files of interrupted
    writes (``.name.tmp``, ``.step_….tmp-PID``) and the lock file are not results."""
    out: dict[str, Any] = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix == ".jsonl":
            records = _jsonl(path)
            for r in records:
                r.pop("tokens_per_s", None)
            out[str(rel)] = records
        elif path.suffix == ".json":
            data = json.loads(path.read_text())
            if path.name == CHECKSUMS:  # what it records, less the checksums of timings
                files = {
                    k: "timed" if k == "metrics.jsonl" else v for k, v in data["files"].items()
                }
                data = {"files": dict(sorted(files.items())), "pending": data.get("pending")}
            out[str(rel)] = data
        else:
            out[str(rel)] = path.read_bytes()
    return out


def diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The paths whose content differs (or that only one side has)."""
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
