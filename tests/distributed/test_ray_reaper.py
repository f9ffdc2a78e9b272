"""A process that started a local Ray for its jobs and is then killed (SIGKILL) leaves no Ray
process behind: servers, agents and workers all go (Linux: the reaper reads /proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest


def _descendants(pid: int) -> dict[int, str]:
    """``{pid: start time}`` of every process descending from ``pid``."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                rest = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            table[int(entry)] = (int(rest[1]), rest[19])
    out, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, start) in table.items():
            if ppid == parent and child not in out:
                out[child] = start
                todo.append(child)
    return out


def _alive(pid: int, start: str) -> bool:
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return rest[19] == start and rest[0] != "Z"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_a_killed_driver_leaves_no_ray_process(tmp_path):
    pytest.importorskip("ray")
    marker = tmp_path / "job-started"
    code = textwrap.dedent(
        f"""
        import pathlib, time
        from hierlens.analysis.ray_backend import map_tasks

        def job(path):
            pathlib.Path(path).write_text("running")
            time.sleep(600)

        map_tasks(job, [(0, ({str(marker)!r},))], local_cpus=1)
        """
    )
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert driver.poll() is None, "the driver exited before its job started"
            if time.monotonic() > deadline:
                pytest.fail("the local Ray did not start its job within 240 s")
            time.sleep(0.5)
        time.sleep(2)  # the reaper has seen the tree at least once
        started = _descendants(driver.pid)
        assert len(started) >= 3  # Ray's servers and agents, the worker, the reaper
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = {p: s for p, s in started.items() if _alive(p, s)}
        if not left:
            return
        time.sleep(1)
    names = {p: Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in left}
    for pid in left:  # do not leave them running for the next test either
        os.kill(pid, signal.SIGKILL)
    pytest.fail(f"processes left after the driver was killed: {names}")
