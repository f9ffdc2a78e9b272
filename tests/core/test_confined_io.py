"""The confined file layer and its checksum manifests: links, names leaving the root, FIFOs
and hard links are refused for every kind of access; deletion removes only owned files; a
write is recorded before and after its data; a torn JSONL tail is cut, never continued."""

from __future__ import annotations

import json
import logging
import os
import threading

import pytest

from hierlens.core import confined_io as fs
from hierlens.core.atomic_io import (
    append_jsonl,
    read_json,
    read_jsonl,
    salvage_jsonl,
    write_checked_json,
    write_checked_jsonl,
)
from hierlens.core.checksums import (
    CHECKSUMS,
    CorruptFileError,
    is_committed,
    read_manifest,
    write_checked,
)
from hierlens.core.confined_delete import remove_tree, unlink


@pytest.fixture
def tree(tmp_path):
    """``root`` (the trusted folder) with a sub-folder, and ``outside`` with a victim file."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "victim").write_text("precious\n")
    return root, outside


def test_a_link_inside_the_root_is_refused_for_every_access(tree):
    root, outside = tree
    (root / "leaf").symlink_to(outside / "victim")
    (root / "dir").symlink_to(outside, target_is_directory=True)
    with fs.confine(root):
        for call in (
            lambda: fs.read_bytes(root / "leaf"),
            lambda: fs.write_bytes(root / "leaf", b"x"),
            lambda: fs.append_bytes(root / "leaf", b"x"),
            lambda: fs.truncate(root / "leaf", 0),
            lambda: fs.open_lock(root / "leaf"),
            lambda: fs.file_kind(root / "leaf"),
            lambda: fs.read_bytes(root / "dir" / "victim"),
            lambda: fs.write_bytes(root / "dir" / "new", b"x"),
            lambda: fs.make_dirs(root / "dir" / "a"),
            lambda: fs.entries(root / "dir"),
            lambda: remove_tree(root / "dir", lambda parts: True),
        ):
            with pytest.raises(fs.UnsafePathError, match="symbolic link") as info:
                call()
            assert str(root) in info.value.filename
    assert (outside / "victim").read_text() == "precious\n"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]


def test_the_root_itself_may_be_a_link(tmp_path, tree):
    root, _ = tree
    alias = tmp_path / "alias"
    alias.symlink_to(root, target_is_directory=True)
    with fs.confine(alias):
        fs.write_bytes(alias / "sub" / "f", b"ok")
        assert fs.read_bytes(alias / "sub" / "f") == b"ok"
    assert (root / "sub" / "f").read_bytes() == b"ok"


def test_names_leaving_the_root_are_refused(tree):
    root, outside = tree
    with pytest.raises(fs.UnsafePathError, match="leaves its root"):
        fs.write_bytes(outside / "victim", b"x", root=root)
    with pytest.raises(fs.UnsafePathError, match="leaves its root"):
        fs.read_bytes(os.path.join(root, "sub", "..", "..", "outside", "victim"), root=root)
    assert (outside / "victim").read_text() == "precious\n"


def test_a_fifo_is_refused_without_blocking(tree):
    root, _ = tree
    os.mkfifo(root / "metrics.jsonl")
    done = []

    def read():
        with pytest.raises(fs.UnsafePathError, match="not a regular file"):
            fs.read_bytes(root / "metrics.jsonl")
        done.append(True)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    assert done == [True]


def test_a_hard_linked_file_is_never_modified_in_place(tree):
    root, outside = tree
    os.link(outside / "victim", root / "metrics.jsonl")
    with pytest.raises(fs.UnsafePathError, match="hard links"):
        fs.append_bytes(root / "metrics.jsonl", b"more\n")
    os.link(outside / "victim", root / ".hierlens.lock")
    with pytest.raises(fs.UnsafePathError, match="hard links"):
        fs.open_lock(root / ".hierlens.lock")
    assert (outside / "victim").read_text() == "precious\n"


def test_remove_tree_removes_only_owned_files_and_never_follows_links(tree):
    root, outside = tree
    (root / "sub" / "mine.json").write_text("{}")
    (root / "sub" / "yours.txt").write_text("keep")
    (root / "sub" / "deep").mkdir()
    (root / "sub" / "deep" / "mine.json").write_text("{}")
    (root / "sub" / "link").symlink_to(outside, target_is_directory=True)
    left = remove_tree(root / "sub", lambda parts: parts[-1] == "mine.json", root=root)
    assert sorted(left) == [str(root / "sub" / "link"), str(root / "sub" / "yours.txt")]
    assert sorted(p.name for p in (root / "sub").iterdir()) == ["link", "yours.txt"]
    assert (outside / "victim").read_text() == "precious\n"
    (root / "sub" / "link").unlink()
    (root / "sub" / "yours.txt").unlink()
    assert remove_tree(root / "sub", lambda parts: True, root=root) == []
    assert not (root / "sub").exists()
    assert unlink(root / "missing", root=root) is False


def test_a_write_is_recorded_before_and_after_its_data(tmp_path, monkeypatch):
    """Killed between the pending record and the data, or between the data and the commit,
    the file reads as valid (old or new) or as missing; never as unchecked, and a rerun's
    write commits it."""
    path = tmp_path / "cfg.json"
    write_checked_json(path, {"v": 1})
    real = fs.write_bytes
    calls = []

    def crash_after(n):
        def write(p, data, root=None):
            calls.append(p)
            if len(calls) == n:
                raise KeyboardInterrupt  # the process dies here
            real(p, data, root)

        return write

    for n, expected in ((2, {"v": 1}), (3, {"v": 2})):  # before the data / before the commit
        calls.clear()
        monkeypatch.setattr(fs, "write_bytes", crash_after(n))
        with pytest.raises(KeyboardInterrupt):
            write_checked_json(path, {"v": 2})
        monkeypatch.setattr(fs, "write_bytes", real)
        assert read_json(path) == expected
        assert path.name in read_manifest(tmp_path)["pending"]
        assert not is_committed(path)  # a writer writes it again
        write_checked_json(path, {"v": 1})
        assert is_committed(path) and not read_manifest(tmp_path)["pending"]


def test_a_checked_file_without_its_manifest_is_an_error(tmp_path):
    write_checked({tmp_path / "a.json": b"{}", tmp_path / "b.json": b"[]"})
    (tmp_path / CHECKSUMS).unlink()
    with pytest.raises(CorruptFileError, match="no checksum manifest"):
        read_json(tmp_path / "a.json")
    write_checked_json(tmp_path / "a.json", {})
    with pytest.raises(CorruptFileError, match="not recorded"):
        read_json(tmp_path / "b.json")


def test_a_torn_tail_is_cut_with_a_warning_and_never_continued(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, [{"step": 1, "split": "train"}])
    with open(path, "ab") as f:  # what a write cut by a full disk or a size limit leaves
        f.write(b'{"step": 2, "spl')
    assert read_jsonl(path) == [{"step": 1, "split": "train"}]  # readers ignore it
    caplog.set_level(logging.WARNING)
    append_jsonl(path, [{"step": 3, "split": "train"}])
    assert str(path) in caplog.text and "torn last line" in caplog.text
    lines = path.read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 3]


def test_strict_json_and_salvage(tmp_path, caplog):
    path = tmp_path / "t.jsonl"
    write_checked_jsonl(path, [{"step": 1, "loss": float("nan")}, {"step": 2, "loss": 1.0}])
    text = path.read_text()
    assert "NaN" not in text and json.loads(text.splitlines()[0])["loss"] is None
    path.write_bytes(path.read_bytes()[:-5])  # truncated inside the committed content
    with pytest.raises(CorruptFileError, match="checksum mismatch"):
        read_jsonl(path)
    caplog.set_level(logging.WARNING)
    assert salvage_jsonl(path, {"step": int}) == [{"step": 1, "loss": None}]
    assert str(path) in caplog.text
    assert read_jsonl(path) == [{"step": 1, "loss": None}]  # committed anew
    with pytest.raises(CorruptFileError, match="field 'step' must be int"):
        write_checked_jsonl(path, [{"step": "x"}])
        read_jsonl(path, schema={"step": int})
