"""ActivationStore on disk: manifest and checksums, corruption detection, shuffled batches."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from hierlens.core.checksums import CorruptFileError
from hierlens.models.capture import capture
from hierlens.models.store import ActivationStore

sys.path.insert(0, str(Path(__file__).parent))
from test_capture_module import Toy  # noqa: E402

HOOKS = ["layers.0", "layers.2"]


def _seqs(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(0, 11, (int(L),), generator=g)
        for L in torch.randint(1, 15, (n,), generator=g)
    ]


def _capture(out_dir: Path | None = None) -> ActivationStore:
    """The tests' store: ``Toy(seed=3)`` on ``_seqs()`` in batches of 3, each token labelled
    with the parity of its position; in memory, or in small shards under ``out_dir``."""
    model, seqs = Toy(seed=3), _seqs()
    labels = {"parity": [[p % 2 for p in range(len(s))] for s in seqs]}
    disk = {} if out_dir is None else {"out_dir": out_dir, "shard_bytes": 2048}
    return capture(model, seqs, HOOKS, batch_size=3, progress=False, labels=labels, **disk)


@pytest.fixture
def stores(tmp_path):
    disk = _capture(out_dir=tmp_path / "s")
    memory = _capture()
    return disk, memory, tmp_path / "s"


def test_disk_and_memory_stores_agree(stores):
    disk, memory, path = stores
    assert len(disk.manifest["shards"]) > 3
    reopened = ActivationStore.open(path)
    for h in HOOKS:
        assert torch.equal(disk[h], memory[h])
        assert torch.equal(reopened[h], memory[h])
    for k in ("sequence", "position", "token"):
        assert torch.equal(reopened.index[k], memory.index[k])
    assert torch.equal(reopened.labels["parity"], reopened.index["position"] % 2)
    assert reopened.hooks == HOOKS and len(reopened) == len(memory)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["dtype"] == "float32" and manifest["complete"]
    assert set(manifest["hooks"]) == set(HOOKS)
    assert all(len(e["sha256"]) == 64 for s in manifest["shards"] for e in s["files"].values())
    with pytest.raises(KeyError, match="layers.1"):
        reopened["layers.1"]


def test_flipped_byte_is_detected_and_named(stores):
    _, _, path = stores
    shard = path / "layers.2" / "shard_00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01  # a flip inside the tensor bytes still parses
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=r"layers\.2/shard_00002\.safetensors") as info:
        ActivationStore.open(path)
    assert "layers.0/" not in str(info.value)
    store = ActivationStore.open(path, verify=False)
    with pytest.raises(CorruptFileError, match="shard_00002"):
        store["layers.2"]


def test_truncated_and_missing_files_are_named(stores):
    _, _, path = stores
    (path / "layers.0" / "shard_00001.safetensors").write_bytes(b"\x00" * 10)
    (path / "layers.2" / "shard_00003.safetensors").unlink()
    with pytest.raises(CorruptFileError) as info:
        ActivationStore.open(path)
    msg = str(info.value)
    assert "layers.0/shard_00001" in msg and "layers.2/shard_00003" in msg


def test_capture_repairs_bad_shards(stores):
    disk, memory, path = stores
    (path / "layers.2" / "shard_00001.safetensors").write_bytes(b"junk")
    repaired = _capture(out_dir=path)
    for h in HOOKS:
        assert torch.equal(repaired[h], memory[h])


def test_bad_manifest_is_clear(tmp_path, stores):
    _, _, path = stores
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="manifest.json"):
        ActivationStore.open(path)
    with pytest.raises(FileNotFoundError, match="not an activation store"):
        ActivationStore.open(tmp_path / "nowhere")
