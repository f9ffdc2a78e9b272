"""Interrupted captures resume to exactly the same arrays; changed inputs are refused."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hierlens.core.atomic_io import read_json
from hierlens.models.capture import capture
from hierlens.models.store import ActivationStore

HERE = Path(__file__).parent

CAPTURE_KW = dict(hooks=["layers.0", "layers.2"], batch_size=4, shard_bytes=8192, progress=False)


def build():
    """The model and data of the interrupted capture (the same in every process)."""
    sys.path.insert(0, str(HERE))
    from test_capture_module import Toy

    model = Toy(d=16, n_layers=3, seed=7)
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 20, (60,), generator=g)
    return model, [torch.randint(0, 11, (int(n),), generator=g) for n in lengths]


# The child captures into argv[1] and, when argv[2] >= 0, SIGKILLs itself from inside a
# forward hook at that forward call: a hard crash in the middle of a capture, with shards
# already written and the next one half computed.
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {here!r})
    from test_capture_resume import CAPTURE_KW, build
    from hierlens.models.capture import capture

    out_dir, kill_at = sys.argv[1], int(sys.argv[2])
    model, seqs = build()
    calls = [0]

    def killer(module, inputs, output):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    model.layers[0].register_forward_hook(killer)
    capture(model, seqs, out_dir=out_dir, **CAPTURE_KW)
    """
)


def _run_child(tmp_path: Path, out_dir: Path, kill_at: int) -> subprocess.CompletedProcess:
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(here=str(HERE)))
    return subprocess.run(
        [sys.executable, str(script), str(out_dir), str(kill_at)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_killed_capture_resumes_to_identical_arrays(tmp_path):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    done = _run_child(tmp_path, ref_dir, -1)
    assert done.returncode == 0, done.stderr
    # forward call 1 is the probe, so call 10 is batch 9 of 15 (shards hold ~2 batches)
    killed = _run_child(tmp_path, run_dir, 10)
    assert killed.returncode == -9, killed.stderr

    manifest = read_json(run_dir / "manifest.json", verify=False)  # schema-checked, no sum
    complete = [s for s in manifest["shards"] if s["files"]]
    assert not manifest["complete"]
    assert 0 < len(complete) < len(manifest["shards"])
    with pytest.raises(ValueError, match="incomplete"):
        ActivationStore.open(run_dir)
    kept = {
        e["file"]: os.stat(run_dir / e["file"]).st_ino
        for s in complete
        for e in s["files"].values()
    }

    model, seqs = build()  # resume in this process
    capture(model, seqs, out_dir=run_dir, **CAPTURE_KW)
    ref, run = ActivationStore.open(ref_dir), ActivationStore.open(run_dir)
    for hook in ("layers.0", "layers.2"):
        assert torch.equal(ref[hook], run[hook])
    for key in ("sequence", "position", "token"):
        assert torch.equal(ref.index[key], run.index[key])
    assert not list(run_dir.rglob(".*.tmp"))  # no temporary file of a torn write is left
    # the shards written before the crash were kept, not recomputed (same inode: not replaced)
    assert {f: os.stat(run_dir / f).st_ino for f in kept} == kept


def _toy():
    sys.path.insert(0, str(HERE))
    from test_capture_module import Toy

    return Toy


def test_changed_model_or_data_is_refused(tmp_path):
    Toy = _toy()
    seqs = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    store = capture(Toy(seed=0), seqs, "layers.1", batch_size=2, out_dir=tmp_path, progress=False)
    first = store["layers.1"]
    with pytest.raises(ValueError, match="model"):
        capture(Toy(seed=1), seqs, "layers.1", batch_size=2, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="data"):
        capture(Toy(seed=0), seqs[:2], "layers.1", batch_size=2, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="hooks"):
        capture(Toy(seed=0), seqs, "layers.0", batch_size=2, out_dir=tmp_path, progress=False)
    # an explicit model identity is what is compared
    with pytest.raises(ValueError, match="model"):
        capture(
            Toy(seed=0),
            seqs,
            "layers.1",
            batch_size=2,
            out_dir=tmp_path,
            progress=False,
            model_id={"run": "x", "step": 5},
        )
    # nothing was lost by the refusals
    assert torch.equal(ActivationStore.open(tmp_path)["layers.1"], first)
    # the same capture again is a no-op resume; overwrite replaces the store
    again = capture(Toy(seed=0), seqs, "layers.1", batch_size=2, out_dir=tmp_path, progress=False)
    assert torch.equal(again["layers.1"], first)
    other = capture(
        Toy(seed=1),
        seqs,
        "layers.0",
        batch_size=2,
        out_dir=tmp_path,
        progress=False,
        overwrite=True,
    )
    assert other.hooks == ["layers.0"]
    assert not (tmp_path / "layers.1").exists()
    with torch.no_grad():
        expected = torch.cat([Toy(seed=1).reference(torch.tensor(s))["layers.0"] for s in seqs])
    torch.testing.assert_close(ActivationStore.open(tmp_path)["layers.0"], expected)


def test_non_store_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an activation store"):
        capture(_toy()(), [[1, 2]], "layers.0", batch_size=1, out_dir=tmp_path, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"
