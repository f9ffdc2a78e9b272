"""ActivationStore.batches: every row exactly once per epoch, bounded windows, seeded order."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from hierlens.models.capture import capture

sys.path.insert(0, str(Path(__file__).parent))
from test_capture_module import Toy  # noqa: E402


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    g = torch.Generator().manual_seed(1)
    seqs = [
        torch.randint(0, 11, (int(L),), generator=g)
        for L in torch.randint(1, 9, (50,), generator=g)
    ]
    model = Toy(seed=0)
    disk = capture(
        model,
        seqs,
        "layers.1",
        batch_size=4,
        shard_bytes=1024,
        out_dir=tmp_path_factory.mktemp("s"),
        progress=False,
    )
    memory = capture(model, seqs, "layers.1", batch_size=4, progress=False)
    return {"disk": disk, "memory": memory}


@pytest.mark.parametrize("kind", ["disk", "memory"])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("batch_size,window", [(1, 1), (7, 2), (32, 3), (10_000, 2)])
def test_every_row_exactly_once(stores, kind, shuffle, batch_size, window):
    store = stores[kind]
    full = store["layers.1"]
    items = list(
        store.batches(
            "layers.1", batch_size, shuffle=shuffle, seed=3, window=window, return_rows=True
        )
    )
    rows = torch.cat([r for _, r in items])
    assert sorted(rows.tolist()) == list(range(len(store)))
    for x, r in items:
        assert torch.equal(x, full[r])  # each batch holds the rows it says it holds
    sizes = [len(r) for _, r in items]
    assert all(s == batch_size for s in sizes[:-1]) and 0 < sizes[-1] <= batch_size
    if not shuffle:
        assert rows.tolist() == list(range(len(store)))


def test_shuffle_is_seeded_and_mixes_shards(stores):
    store = stores["disk"]
    n_shards = len(store.manifest["shards"])
    assert n_shards >= 6

    def order(seed):
        return torch.cat([r for _, r in store.batches("layers.1", 16, seed=seed, return_rows=True)])

    a, b, c = order(0), order(0), order(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, torch.arange(len(store)))
    # a batch of a 2-shard window draws rows from more than one shard
    bounds = torch.tensor([s["row_end"] for s in store.manifest["shards"]])
    first = next(iter(store.batches("layers.1", 16, seed=0, return_rows=True)))[1]
    assert len(torch.bucketize(first, bounds, right=True).unique()) > 1


def test_drop_last_and_bad_arguments(stores):
    store = stores["memory"]
    n = len(store)
    sizes = [len(x) for x in store.batches("layers.1", 7, drop_last=True)]
    assert sizes == [7] * (n // 7)
    with pytest.raises(ValueError, match="batch_size"):
        store.batches("layers.1", 0)
    with pytest.raises(KeyError):
        store.batches("layers.9", 4)
