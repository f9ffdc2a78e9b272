"""capture() on plain nn.Modules (module names, forward hooks) and hook-name resolution."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hierlens.models.capture import capture
from hierlens.models.hooks import resolve_hook_names


class Block(nn.Module):
    """Residual block mixing positions by a (masked) mean: causal prefix mean, or the mean
    over all real positions when ``bidirectional``."""

    def __init__(self, d: int, bidirectional: bool) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.bidirectional = bidirectional

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask[..., None].to(x.dtype)
        if self.bidirectional:
            mixed = (x * m).sum(1, keepdim=True) / m.sum(1, keepdim=True)
            mixed = mixed.expand_as(x)
        else:
            mixed = (x * m).cumsum(1) / m.cumsum(1).clamp(min=1)
        return x + self.mlp(mixed)


class Toy(nn.Module):
    def __init__(self, vocab=11, d=8, n_layers=3, bidirectional=False, seed=0):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.embed = nn.Embedding(vocab, d)
            self.layers = nn.ModuleList(Block(d, bidirectional) for _ in range(n_layers))
            self.head = nn.Linear(d, vocab)

    def forward(self, tokens, attention_mask=None):
        mask = torch.ones_like(tokens) if attention_mask is None else attention_mask
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x, mask)
        return self.head(x)

    def reference(self, tokens):
        """Layer outputs computed by hand on one unpadded sequence (no hooks involved)."""
        x = self.embed(tokens[None])
        out = {}
        mask = torch.ones_like(tokens[None])
        for i, layer in enumerate(self.layers):
            x = layer(x, mask)
            out[f"layers.{i}"] = x[0]
        out["head"] = self.head(x)[0]
        return out


def _seqs(n, seed=0, vocab=11):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(0, vocab, (int(L),), generator=g)
        for L in torch.randint(1, 12, (n,), generator=g)
    ]


@pytest.mark.parametrize("bidirectional", [False, True])
def test_plain_module_matches_manual_forward(bidirectional, tmp_path):
    model = Toy(bidirectional=bidirectional)
    seqs = _seqs(9)
    store = capture(
        model,
        seqs,
        ["layers.*", "head"],
        batch_size=4,
        progress=False,
        out_dir=tmp_path / "s",
        shard_bytes=512,
    )
    assert store.hooks == ["layers.0", "layers.1", "layers.2", "head"]
    with torch.no_grad():
        refs = [model.reference(s) for s in seqs]
    for h in store.hooks:
        torch.testing.assert_close(store[h], torch.cat([r[h] for r in refs]), atol=1e-6, rtol=1e-5)
    assert store.index["sequence"].tolist() == [i for i, s in enumerate(seqs) for _ in s]
    assert len(store.manifest["shards"]) > 1


def test_module_without_attention_mask_is_called_with_tokens_only():
    class NoMask(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(5, 3)

        def forward(self, tokens):
            return self.emb(tokens)

    model = NoMask()
    seqs = [[1, 2, 3], [4]]
    store = capture(model, seqs, "emb", batch_size=2, progress=False)
    torch.testing.assert_close(store["emb"], model.emb.weight[[1, 2, 3, 4]].detach())


def test_module_used_twice_is_rejected():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(5, 3)
            self.lin = nn.Linear(3, 3)

        def forward(self, tokens):
            return self.lin(self.lin(self.emb(tokens)))

    with pytest.raises(ValueError, match="more than once"):
        capture(Twice(), [[1, 2]], "lin", batch_size=1, progress=False)


def test_unknown_module_name_lists_closest():
    model = Toy()
    with pytest.raises(ValueError) as info:
        resolve_hook_names(model, ["layers.1.mlpp"])
    assert "'layers.1.mlp'" in str(info.value)
    with pytest.raises(ValueError, match="matches no module"):
        resolve_hook_names(model, ["blocks.*"])
    with pytest.raises(TypeError):
        resolve_hook_names(model, [3])


def test_glob_semantics():
    model = Toy()
    assert resolve_hook_names(model, "layers.*") == ["layers.0", "layers.1", "layers.2"]
    assert resolve_hook_names(model, "layers.[!0].mlp") == ["layers.1.mlp", "layers.2.mlp"]
    deep = resolve_hook_names(model, "layers.**.mlp.?")
    assert deep == [f"layers.{i}.mlp.{j}" for i in range(3) for j in range(3)]
    # duplicates and explicit names keep their first position
    assert resolve_hook_names(model, ["head", "layers.1", "head"]) == ["head", "layers.1"]


def test_nonfinite_raises_or_is_counted():
    model = Toy()
    with torch.no_grad():
        model.embed.weight[3] = float("nan")
    seqs = [[1, 2], [4, 5, 6], [3, 1], [2]]
    with pytest.raises(ValueError, match=r"'layers\.0'.*batch 1 \(sequences 2\.\.3\)"):
        capture(model, seqs, ["layers.0"], batch_size=2, progress=False)
    store = capture(
        model, seqs, ["embed", "layers.0"], batch_size=2, progress=False, allow_nonfinite=True
    )
    # embed: one NaN row of width 8; layers.0 (causal): the NaN spreads from position 0 of
    # sequence 2 to both of its positions
    assert store.nonfinite == {"embed": 8, "layers.0": 16}
    assert int(torch.isnan(store["layers.0"]).sum()) == 16


def test_storage_dtype_and_positions_list():
    model = Toy()
    seqs = _seqs(5, seed=1)
    masks = [[p % 2 == 0 for p in range(len(s))] for s in seqs]
    store = capture(
        model, seqs, "layers.1", batch_size=2, positions=masks, dtype=torch.bfloat16, progress=False
    )
    assert store["layers.1"].dtype == torch.bfloat16
    with torch.no_grad():
        ref = torch.cat([model.reference(s)["layers.1"][::2] for s in seqs])
    torch.testing.assert_close(store["layers.1"], ref.to(torch.bfloat16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_pinned_path_matches_cpu(tmp_path):
    model = Toy(bidirectional=True)
    seqs = _seqs(30, seed=2)
    cpu = capture(model, seqs, ["layers.*"], batch_size=4, device="cpu", progress=False)
    gpu = capture(
        model,
        seqs,
        ["layers.*"],
        batch_size=4,
        device="cuda",
        progress=False,
        out_dir=tmp_path,
        shard_bytes=1024,
    )
    assert len(gpu.manifest["shards"]) > 2  # several shards through the double buffers
    for h in cpu.hooks:
        torch.testing.assert_close(gpu[h], cpu[h], atol=1e-5, rtol=1e-5)
