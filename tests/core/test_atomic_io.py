"""Atomic writes: content, permissions of a plain open(), no temporary files left."""

from __future__ import annotations

import os
import stat

from hierlens.core.atomic_io import atomic_write_bytes, atomic_write_json, read_json


def test_atomic_write_uses_the_umask_like_open(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"abc")
        with open(tmp_path / "plain.bin", "wb") as f:
            f.write(b"abc")
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "a.bin").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "plain.bin").st_mode) == 0o640
    assert (tmp_path / "a.bin").read_bytes() == b"abc"


def test_atomic_json_round_trip_leaves_no_temporary_file(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"a": [1, 2]})
    atomic_write_json(tmp_path / "x.json", {"a": [3]})
    assert read_json(tmp_path / "x.json", verify=False) == {"a": [3]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
