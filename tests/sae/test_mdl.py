"""Description length, precision search and MDL selection against counting by hand."""

from __future__ import annotations

import math
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from hierlens.sae import (
    NoSAEMeetsBoundError,
    SAETrainConfig,
    TopKSAE,
    fit_mdl_sae,
    fvu,
    mdl_select,
)
from hierlens.sae.mdl import description_length, quantise, search_bin_width


class IdentitySAE:
    """codes = activations: the codes under test are exactly the activations given."""

    def __init__(self, d: int) -> None:
        self.cfg = SimpleNamespace(d_in=d, d_sae=d)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes.clone()


def _reference(codes: list[list[int]], d_sae: int) -> dict[str, float]:
    """Slow count over a table of integer codes (bin width 1)."""
    n = len(codes)
    which = value = l0 = 0.0
    active_values = []
    for i in range(d_sae):
        vals = [row[i] for row in codes if row[i] != 0]
        active_values += vals
        p = len(vals) / n
        l0 += p
        if 0 < p < 1:
            which += -p * math.log2(p) - (1 - p) * math.log2(1 - p)
        h = 0.0
        for c in Counter(vals).values():
            h -= c / len(vals) * math.log2(c / len(vals))
        value += p * h
    bpv = math.log2(max(active_values) - min(active_values) + 1) if active_values else 0.0
    flat = [v for row in codes for v in row]
    raw_bpv = math.log2(max(flat) - min(flat) + 1)
    return {
        "which_bits": which,
        "value_bits": value,
        "bits": which + value,
        "l0": l0,
        "bits_per_value": bpv,
        "naive_bits": l0 * (math.log2(d_sae) + bpv),
        "raw_bits": d_sae * raw_bpv,
    }


def test_tiny_table_by_hand():
    # latent 0: always on with value 1 -> 0 "which" bits, 0 value bits;
    # latent 1: on half the rows, values {2, 3} equally -> h(1/2) = 1 bit, 1/2 * 1 bit.
    codes = torch.tensor([[1.0, 0.0], [1.0, 2.0], [1.0, 3.0], [1.0, 0.0]])
    dl = description_length(IdentitySAE(2), codes, bin_width=1.0)
    assert dl.which_bits == pytest.approx(1.0)
    assert dl.value_bits == pytest.approx(0.5)
    assert dl.bits == pytest.approx(1.5)
    assert dl.l0 == pytest.approx(1.5)
    assert dl.bits_per_value == pytest.approx(math.log2(3))  # levels 1, 2, 3
    assert dl.naive_bits == pytest.approx(1.5 * (1 + math.log2(3)))
    assert dl.raw_bits == pytest.approx(2 * 2)  # levels 0..3
    assert dl.firing_probability.tolist() == pytest.approx([1.0, 0.5])
    assert dl.value_entropy.tolist() == pytest.approx([0.0, 1.0])
    assert dl.fvu == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entropy_terms_match_counting(seed):
    g = torch.Generator().manual_seed(seed)
    n, d = 60, 5
    choices = torch.tensor([0, 0, 0, 1, 2, 3, -1, 5])
    codes = choices[torch.randint(0, len(choices), (n, d), generator=g)]
    codes[:, 4] = 0  # a dead latent
    codes[0, 4] = 7  # ...that fires once
    ref = _reference(codes.tolist(), d)
    dl = description_length(IdentitySAE(d), codes.float(), bin_width=1.0, batch_size=7)
    for key, value in ref.items():
        assert getattr(dl, key) == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_bin_width_quantises_codes_before_counting():
    # with bin width 2: 1 -> round(0.5) = 0 (ties to even: dropped), 3 -> 2, 5 -> 2, -3 -> -2
    g = torch.Generator().manual_seed(5)
    codes = torch.tensor([1.0, 3.0, 5.0, -3.0, 0.0])[torch.randint(0, 5, (40, 3), generator=g)]
    dl = description_length(IdentitySAE(3), codes, bin_width=2.0)
    q = torch.round(codes / 2).long()
    ref = _reference(q.tolist(), 3)
    assert dl.which_bits == pytest.approx(ref["which_bits"])
    assert dl.value_bits == pytest.approx(ref["value_bits"])
    assert dl.l0 == pytest.approx(ref["l0"])
    assert quantise(torch.tensor([1.0, 3.0, 5.0, -3.0]), 2.0).tolist() == [0, 2, 2, -2]
    expected_fvu = float(((q * 2.0 - codes) ** 2).sum() / ((codes - codes.mean(0)) ** 2).sum())
    assert dl.fvu == pytest.approx(expected_fvu)


def test_always_on_latent_costs_no_which_bits():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(500, 1, generator=g) + 1.0  # never rounds to zero
    dl = description_length(IdentitySAE(1), x, bin_width=0.05)
    assert dl.which_bits == 0.0
    assert dl.firing_probability.tolist() == [1.0]
    assert dl.value_bits > 0
    assert dl.bits == dl.value_bits


@pytest.mark.parametrize("seed", range(6))
def test_naive_bound_covers_entropy_cost_when_l0_at_least_e(seed):
    g = torch.Generator().manual_seed(seed)
    n, d, k = 300, 16, 3 + seed % 3
    codes = torch.zeros(n, d)
    # k active latents per row drawn with skewed frequencies, smooth values
    probs = torch.rand(d, generator=g) ** 3 + 0.01
    idx = torch.multinomial(probs.expand(n, d), k, replacement=False, generator=g)
    codes.scatter_(1, idx, torch.rand(n, k, generator=g) * 4 + 0.3)
    for width in (0.01, 0.1, 1.0):
        dl = description_length(IdentitySAE(d), codes, bin_width=width)
        assert dl.l0 >= math.e
        assert dl.naive_bits >= dl.bits


def test_naive_bound_condition_is_needed():
    # L0 = 1 < e with d_sae = 2 and each latent on half the rows: the per-latent on/off code
    # costs 2 bits, the index 1 bit (the docstring's condition L0 >= e is not vacuous)
    codes = torch.tensor([[1.0, 0.0], [0.0, 1.0]] * 10)
    dl = description_length(IdentitySAE(2), codes, bin_width=1.0)
    assert dl.which_bits == pytest.approx(2.0)
    assert dl.naive_bits == pytest.approx(1.0)


def test_halving_bin_width_adds_one_bit_per_active_value():
    g = torch.Generator().manual_seed(0)
    n, d = 200_000, 3
    on = torch.rand(n, d, generator=g) < torch.tensor([0.2, 0.5, 0.9])
    codes = (torch.rand(n, d, generator=g, dtype=torch.float64) * 2 + 1) * on
    coarse = description_length(IdentitySAE(d), codes, bin_width=0.02)
    fine = description_length(IdentitySAE(d), codes, bin_width=0.01)
    assert fine.which_bits == pytest.approx(coarse.which_bits)
    per_value = (fine.value_bits - coarse.value_bits) / coarse.l0
    assert per_value == pytest.approx(1.0, abs=0.02)
    assert fine.fvu < coarse.fvu


def _topk_sae(d_in=6, d_sae=12, k=3, seed=0):
    sae = TopKSAE(d_in, d_sae, k=k, seed=seed, device="cpu")
    with torch.no_grad():
        sae.b_dec.normal_(generator=torch.Generator().manual_seed(seed + 1))
    return sae


def test_quantised_reconstruction_distortion_on_a_real_sae():
    sae = _topk_sae()
    x = torch.randn(300, 6, generator=torch.Generator().manual_seed(2))
    width = 0.3
    dl = description_length(sae, x, bin_width=width, batch_size=64)
    with torch.no_grad():
        codes = sae.encode(x)
        recon_q = sae.decode(torch.round(codes / width) * width)
        recon = sae.decode(codes)
    assert dl.fvu == pytest.approx(fvu(x, recon_q), rel=1e-5)
    assert dl.fvu_unquantised == pytest.approx(fvu(x, recon), rel=1e-5)
    assert dl.fvu_increase == pytest.approx(dl.fvu - dl.fvu_unquantised)
    assert dl.l0 == pytest.approx(float((torch.round(codes / width) != 0).sum(1).float().mean()))
    r = torch.round(x.double() / width)
    assert dl.raw_bits == pytest.approx(6 * math.log2(float(r.max() - r.min()) + 1))
    d = dl.to_dict()
    assert "firing_probability" not in d and d["compression_ratio"] == dl.raw_bits / dl.bits


def test_bad_input_is_reported():
    sae = _topk_sae()
    x = torch.randn(20, 6)
    with pytest.raises(ValueError, match="d_in=6"):
        description_length(sae, torch.randn(20, 5), bin_width=0.1)
    bad = x.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        description_length(sae, bad, bin_width=0.1)
    bad[3, 2] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        search_bin_width(sae, bad)
    with pytest.raises(ValueError, match="bin_width"):
        description_length(sae, x, bin_width=0.0)
    with pytest.raises(ValueError, match=r"\(n, d_in\)"):
        description_length(sae, x[0], bin_width=0.1)
    with pytest.raises(TypeError):
        description_length(sae, x.long(), bin_width=0.1)
    with pytest.raises(ValueError, match="zero variance"):
        description_length(sae, torch.ones(5, 6), bin_width=0.1)
    with pytest.raises(ValueError, match="budget"):
        search_bin_width(sae, x, max_fvu_increase=None)
    with pytest.raises(ValueError, match="model"):
        search_bin_width(sae, x, max_ce_increase=0.1)


def test_precision_search_finds_the_coarsest_width_within_budget():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20_000, 2, generator=g, dtype=torch.float64) * 3 + 1
    var = float(((x - x.mean(0)) ** 2).sum(1).mean())
    budget = 0.002
    res = search_bin_width(IdentitySAE(2), x, max_fvu_increase=budget, rtol=1e-3)
    assert res.fvu_increase <= budget
    assert res.rejected_bin_width <= res.bin_width * (1 + 1e-3) * (1 + 1e-9)
    coarser = description_length(IdentitySAE(2), x, bin_width=res.rejected_bin_width)
    assert coarser.fvu_increase > budget
    # uniform rounding error: FVU increase = 2 * width^2 / 12 / var (closed form)
    assert res.bin_width == pytest.approx(math.sqrt(6 * budget * var), rel=0.03)
    # and description_length(bin_width=None) runs the same search
    dl = description_length(IdentitySAE(2), x, max_fvu_increase=budget, rtol=1e-3)
    assert dl.bin_width == pytest.approx(res.bin_width)


def test_precision_search_contract_against_brute_force_grid():
    # a random (untrained) SAE: distortion is not monotone in the bin width, so check the
    # documented contract against a brute-force pass over the scan grid
    sae = _topk_sae()
    x = torch.randn(400, 6, generator=torch.Generator().manual_seed(1))
    budget = 0.01
    res = search_bin_width(sae, x, max_fvu_increase=budget, rtol=1e-4)
    base = description_length(sae, x, bin_width=1e-9).fvu
    with torch.no_grad():
        top = float(sae.encode(x).abs().max())
    grid = [2 * top * 2 ** (-j / 4) for j in range(200)]
    first = next(w for w in grid if description_length(sae, x, bin_width=w).fvu - base <= budget)
    assert first <= res.bin_width < first * 2**0.25
    assert res.fvu_increase <= budget
    assert description_length(sae, x, bin_width=res.rejected_bin_width).fvu - base > budget
    assert res.rejected_bin_width <= res.bin_width * (1 + 1e-4) * (1 + 1e-9)


class _TinyLM(torch.nn.Module):
    """Predicts token ``t + 1 (mod vocab)`` from token ``t`` through the identity ``mid``."""

    def __init__(self, vocab: int = 5) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.embed = torch.nn.Embedding(vocab, vocab)
        self.mid = torch.nn.Identity()
        self.unembed = torch.nn.Linear(vocab, vocab, bias=False)
        with torch.no_grad():
            self.embed.weight.copy_(
                3 * torch.eye(vocab) + 0.5 * torch.randn(vocab, vocab, generator=g)
            )
            self.unembed.weight.copy_(3 * torch.eye(vocab).roll(1, 0))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.unembed(self.mid(self.embed(tokens)))


def test_precision_search_with_a_ce_budget():
    from hierlens.sae import spliced_ce

    lm = _TinyLM()
    start = torch.randint(0, 5, (8, 1), generator=torch.Generator().manual_seed(0))
    tokens = (start + torch.arange(10)) % 5
    with torch.no_grad():
        x = lm.embed(tokens).reshape(-1, 5)
    sae = IdentitySAE(5)
    budget = 0.02
    res = search_bin_width(
        sae,
        x,
        max_fvu_increase=None,
        max_ce_increase=budget,
        model=lm,
        tokens=tokens,
        hook_name="mid",
        rtol=1e-2,
    )

    def ce_at(width):
        rep = lambda a: torch.round(a / width) * width  # noqa: E731
        return spliced_ce(lm, rep, tokens, hook_name="mid")["ce_spliced"]

    clean = spliced_ce(lm, lambda a: a, tokens, hook_name="mid")["ce_spliced"]
    assert ce_at(res.bin_width) - clean <= budget + 1e-6
    assert ce_at(res.rejected_bin_width) - clean > budget
    assert res.ce_increase == pytest.approx(ce_at(res.bin_width) - clean, abs=1e-5)
    dl = description_length(
        sae, x, bin_width=res.bin_width, model=lm, tokens=tokens, hook_name="mid"
    )
    assert dl.ce_increase == pytest.approx(ce_at(res.bin_width) - clean, abs=1e-5)


# ----- selection ---------------------------------------------------------------------------------
class TopMagnitudeSAE:
    """Keeps the ``k`` largest-magnitude coordinates of ``x`` (codes), decodes as identity."""

    def __init__(self, d: int, k: int) -> None:
        self.cfg = SimpleNamespace(d_in=d, d_sae=d, k=k)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        idx = x.abs().topk(self.cfg.k, dim=-1).indices
        return torch.zeros_like(x).scatter(-1, idx, x.gather(-1, idx))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes.clone()


class DropTopSAE(TopMagnitudeSAE):
    """Zeroes the largest-magnitude coordinate of ``x`` and keeps the rest."""

    def __init__(self, d: int) -> None:
        super().__init__(d, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x - super().encode(x)


def _sparse_data(n=2000, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([3.0, 2.0, 1.0, 0.5, 0.3, 0.1])[:d]
    return torch.randn(n, d, generator=g) * scale


def test_selection_matches_brute_force_at_a_fixed_bin_width():
    x = _sparse_data()
    saes = {f"k{k}": TopMagnitudeSAE(6, k) for k in range(1, 7)}
    saes["random_topk"] = _topk_sae(d_in=6, d_sae=12, k=4)
    width = 0.05
    lengths = {n: description_length(s, x, bin_width=width) for n, s in saes.items()}
    for bound in (0.02, 0.1, 0.3, 0.6, 1.5):
        ok = {n: dl for n, dl in lengths.items() if dl.fvu <= bound}
        if not ok:
            with pytest.raises(ValueError, match="no SAE meets"):
                mdl_select(saes, x, max_fvu=bound, bin_width=width)
            continue
        sel = mdl_select(saes, x, max_fvu=bound, bin_width=width)
        expected = min(ok, key=lambda n: ok[n].bits)
        assert sel.best_name == expected
        assert sel.best is saes[expected]
        assert sel.best_length.fvu <= bound
        assert set(sel.ranking) == set(ok)
        bits = [lengths[n].bits for n in sel.ranking]
        assert bits == sorted(bits)
        for row in sel.table:
            assert row["eligible"] == (row["name"] in ok)
            assert (row["reason"] is None) == row["eligible"]


@pytest.mark.parametrize("bound", [0.005, 0.05, 0.2, 0.5])
def test_selection_never_returns_an_sae_over_the_bound(bound):
    x = _sparse_data(n=800, seed=3)
    saes = [TopMagnitudeSAE(6, k) for k in range(1, 7)]
    saes += [_topk_sae(d_in=6, d_sae=w, k=k, seed=w + k) for w, k in ((8, 2), (16, 3), (12, 6))]
    try:
        sel = mdl_select(saes, x, max_fvu=bound)
    except NoSAEMeetsBoundError as exc:
        assert all(not r["eligible"] for r in exc.table)
        return
    assert sel.best_length.fvu <= bound
    reference = description_length(sel.best, x, bin_width=sel.best_length.bin_width)
    assert reference.fvu <= bound
    assert reference.bits == pytest.approx(sel.best_length.bits)
    for row in sel.table:
        if row["eligible"]:
            assert row["fvu"] <= bound
            assert row["bits"] >= sel.best_length.bits
        elif "fvu" in row:
            assert "exceeds" in row["reason"] or "failed" in row["reason"]
    # each eligible SAE was quantised as coarsely as the bound allows: a slightly coarser
    # width (the search's rejected bracket end) breaks the bound
    for name in sel.ranking:
        dl = sel.lengths[name]
        assert dl.fvu <= bound


def test_exclusion_reasons_and_best_distortion_reported():
    x = _sparse_data()
    saes = {"k1": TopMagnitudeSAE(6, 1), "k2": TopMagnitudeSAE(6, 2), "k6": TopMagnitudeSAE(6, 6)}
    fvus = {n: description_length(s, x, bin_width=1e-6).fvu for n, s in saes.items()}
    bound = (fvus["k2"] + fvus["k6"]) / 2
    sel = mdl_select(saes, x, max_fvu=bound)
    assert sel.best_name == "k6" and sel.ranking == ["k6"]
    reasons = {r["name"]: r["reason"] for r in sel.table}
    assert "without quantisation already exceeds max_fvu" in reasons["k1"]
    assert "without quantisation already exceeds max_fvu" in reasons["k2"]
    assert reasons["k6"] is None
    # the bound is spent on precision: the quantised FVU sits at the bound
    assert sel.best_length.fvu == pytest.approx(bound, rel=0.05)
    with pytest.raises(NoSAEMeetsBoundError) as info:
        mdl_select({"k1": saes["k1"], "k2": saes["k2"]}, x, max_fvu=bound)
    assert f"best FVU reached {fvus['k2']:.4g}" in str(info.value)
    assert "k1:" in str(info.value) and "k2:" in str(info.value)


def test_selection_input_errors():
    x = _sparse_data()
    with pytest.raises(ValueError, match="'odd' expects d_in=5"):
        mdl_select({"ok": TopMagnitudeSAE(6, 2), "odd": TopMagnitudeSAE(5, 2)}, x, max_fvu=0.5)
    bad = x.clone()
    bad[10, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        mdl_select([TopMagnitudeSAE(6, 2)], bad, max_fvu=0.5)
    with pytest.raises(ValueError, match="max_fvu"):
        mdl_select([TopMagnitudeSAE(6, 2)], x, max_fvu=-1.0)
    with pytest.raises(ValueError, match="at least one"):
        mdl_select([], x, max_fvu=0.5)
    with pytest.raises(ValueError, match="model"):
        mdl_select([TopMagnitudeSAE(6, 2)], x, max_ce_increase=0.1)


def test_selection_with_a_ce_bound():
    lm = _TinyLM()
    start = torch.randint(0, 5, (8, 1), generator=torch.Generator().manual_seed(1))
    tokens = (start + torch.arange(10)) % 5
    with torch.no_grad():
        x = lm.embed(tokens).reshape(-1, 5)
    saes = {f"k{k}": TopMagnitudeSAE(5, k) for k in range(1, 6)}
    saes["drop_top"] = DropTopSAE(5)
    bound = 0.05
    sel = mdl_select(saes, x, max_ce_increase=bound, model=lm, tokens=tokens, hook_name="mid")
    assert sel.best_length.ce_increase <= bound
    assert sel.best_name == "k1"  # the top coordinate alone predicts the next token
    assert not sel.table[-1]["eligible"] and sel.table[-1]["ce_increase_unquantised"] > bound
    for row in sel.table:
        if row["eligible"]:
            assert row["ce_increase"] <= bound
        else:
            assert "CE increase" in row["reason"]


# ----- fitting a grid ----------------------------------------------------------------------------
def _grid_data(n=512, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    atoms = torch.nn.functional.normalize(torch.randn(12, d, generator=g), dim=1)
    on = torch.rand(n, 12, generator=g) < 0.15
    return (on * (torch.rand(n, 12, generator=g) + 0.5)) @ atoms


def test_fit_grid_trains_each_sae_as_alone_and_writes_the_table(tmp_path):
    from hierlens.core.atomic_io import read_json, read_jsonl
    from hierlens.sae import load_sae, train_saes

    x = _grid_data()
    fit = fit_mdl_sae(
        x,
        widths=[4, 16],
        ks=[1, 2, 8],
        max_fvu=0.95,
        config=SAETrainConfig(steps=25, batch_size=64, lr=3e-3, seed=1, device="cpu"),
        out_dir=tmp_path,
        progress=False,
    )
    assert sorted(fit.saes) == [
        "topk_w16_k1",
        "topk_w16_k2",
        "topk_w16_k8",
        "topk_w4_k1",
        "topk_w4_k2",
    ]
    assert fit.skipped == ["topk_w4_k8: k=8 > width=4"]
    assert fit.best is fit.saes[fit.selection.best_name]
    assert fit.selection.best_length.fvu <= 0.95
    # every grid SAE equals the same SAE trained on its own with the same seed
    alone = TopKSAE(8, 16, k=2, seed=1, device="cpu")
    train_saes([alone], x, steps=25, batch_size=64, lr=3e-3, seed=1, device="cpu", progress=False)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        torch.testing.assert_close(
            getattr(fit.saes["topk_w16_k2"], name), getattr(alone, name), atol=1e-6, rtol=1e-5
        )
    # the table on disk is the returned table, and the SAEs load back
    rows = read_jsonl(tmp_path / "mdl_table.jsonl")
    assert [r["name"] for r in rows] == [r["name"] for r in fit.selection.table]
    assert {r["name"]: r["width"] for r in rows}["topk_w4_k2"] == 4
    best_row = next(r for r in rows if r["name"] == fit.selection.best_name)
    assert best_row["rank"] == 1 and best_row["bits"] == fit.selection.best_length.bits
    assert read_json(tmp_path / "mdl_selection.json")["best"] == fit.selection.best_name
    loaded = load_sae(tmp_path / fit.selection.best_name, device="cpu")
    torch.testing.assert_close(loaded.W_dec, fit.best.W_dec)


def test_fit_grid_errors(tmp_path):
    from hierlens.core.atomic_io import read_jsonl

    x = _grid_data(n=128)
    bad = x.clone()
    bad[0, 0] = float("nan")
    kw = dict(config=SAETrainConfig(steps=2, batch_size=32, device="cpu"), progress=False)
    with pytest.raises(ValueError, match="NaN or inf"):
        fit_mdl_sae(bad, [4], [1], max_fvu=0.5, **kw)
    with pytest.raises(ValueError, match="unknown architecture"):
        fit_mdl_sae(x, [4], [1], architecture="nope", max_fvu=0.5, **kw)
    with pytest.raises(ValueError, match="needs ks"):
        fit_mdl_sae(x, [4], max_fvu=0.5, **kw)
    with pytest.raises(ValueError, match="distortion bound"):
        fit_mdl_sae(x, [4], [1], **kw)
    with pytest.raises(ValueError, match="eval_activations"):
        fit_mdl_sae(x, [4], [1], max_fvu=0.5, eval_activations=x[:, :3], **kw)
    with pytest.raises(TypeError, match="SAETrainConfig"):
        fit_mdl_sae(x, [4], [1], max_fvu=0.5, config={"steps": 2}, progress=False)
    with pytest.raises(TypeError, match="steps"):  # settings come only as the config
        fit_mdl_sae(x, [4], [1], max_fvu=0.5, steps=2, progress=False)
    with pytest.raises(NoSAEMeetsBoundError, match="best FVU reached"):
        fit_mdl_sae(x, [4, 8], [1], max_fvu=1e-6, out_dir=tmp_path, **kw)
    assert len(read_jsonl(tmp_path / "mdl_table.jsonl")) == 2  # the table survives
    fit = fit_mdl_sae(
        x, [4], sparsity_coefficients=[0.1, 1.0], architecture="relu", max_fvu=2.0, **kw
    )
    assert sorted(fit.saes) == ["relu_w4_l1c0.1", "relu_w4_l1c1"]


# ----- digits data -------------------------------------------------------------------------------
def _write_idx(path, arr, type_byte, fmt):
    import struct

    header = bytes([0, 0, type_byte, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(fmt).tobytes()


def test_digits_images_are_the_sklearn_digits():
    from sklearn.datasets import load_digits

    from hierlens.sae.digits import load_digits_images

    images, labels = load_digits_images()
    ref = load_digits()
    assert images.shape == (1797, 64) and labels.shape == (1797,)
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    torch.testing.assert_close(images * 16, torch.tensor(ref.data, dtype=torch.float32))
    assert labels.tolist() == ref.target.tolist()


def test_idx_reader_round_trip_and_errors(tmp_path):
    import gzip

    import numpy as np

    from hierlens.sae.digits import load_mnist, read_idx

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(5, 3, 4)).astype(np.uint8)
    labs = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    (tmp_path / "img").write_bytes(_write_idx(tmp_path, imgs, 0x08, ">u1"))
    (tmp_path / "lab.gz").write_bytes(gzip.compress(_write_idx(tmp_path, labs, 0x08, ">u1")))
    floats = rng.standard_normal((2, 3))
    (tmp_path / "f64").write_bytes(_write_idx(tmp_path, floats, 0x0E, ">f8"))
    assert np.array_equal(read_idx(tmp_path / "img"), imgs)
    assert np.array_equal(read_idx(tmp_path / "f64"), floats)
    x, y = load_mnist(tmp_path / "img", tmp_path / "lab.gz")
    assert x.shape == (5, 12)
    torch.testing.assert_close(x, torch.tensor(imgs.reshape(5, 12) / 255.0, dtype=torch.float32))
    assert y.tolist() == [3, 1, 4, 1, 5]
    (tmp_path / "short").write_bytes((tmp_path / "img").read_bytes()[:-1])
    with pytest.raises(ValueError, match="short"):
        read_idx(tmp_path / "short")
    (tmp_path / "junk").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "junk")
    with pytest.raises(ValueError, match="expected 5 labels"):
        (tmp_path / "lab3").write_bytes(_write_idx(tmp_path, labs[:3], 0x08, ">u1"))
        load_mnist(tmp_path / "img", tmp_path / "lab3")
