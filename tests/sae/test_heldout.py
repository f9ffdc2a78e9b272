"""Small corpora: the batch size capped by the rows (with a warning naming both numbers) and
each SAE's FVU on seeded held-out rows beside its training FVU."""

from __future__ import annotations

import warnings

import pytest
import torch

from hierlens.sae import ReluSAE, SAETrainConfig, TopKSAE, train_saes
from hierlens.sae.heldout import heldout_split

D_IN = 6


def _data(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 12, generator=g).relu() @ torch.randn(12, D_IN, generator=g)


def _fvu(sae, x: torch.Tensor) -> float:
    """FVU by its definition, one forward over all rows."""
    with torch.no_grad():
        recon = sae.decode(sae.encode(x))
    return float(((x - recon) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


def test_batch_capped_by_rows_with_a_warning_naming_both_numbers():
    x = _data(40)
    capped = [TopKSAE(D_IN, 16, k=2, seed=1, device="cpu")]
    with pytest.warns(UserWarning, match=r"batch_size 4096 is larger than the 40 training rows"):
        res = train_saes(capped, x, steps=5, heldout_fraction=0.0, shuffle=False, progress=False)
    assert res.config.batch_size == 40 and res.tokens == 5 * 40
    # the same run as asking for batches of 40 rows in the first place
    plain = [TopKSAE(D_IN, 16, k=2, seed=1, device="cpu")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no cap, no warning
        train_saes(
            plain, x, steps=5, batch_size=40, heldout_fraction=0.0, shuffle=False, progress=False
        )
    assert torch.equal(capped[0].W_dec, plain[0].W_dec)
    # a run length in rows keeps its rows: more steps of the smaller batch
    with pytest.warns(UserWarning, match="larger than the 40 training rows"):
        res = train_saes(
            [TopKSAE(D_IN, 16, k=2, device="cpu")],
            x,
            tokens=400,
            batch_size=100,
            heldout_fraction=0.0,
            progress=False,
        )
    assert res.steps == 10 and res.config.batch_size == 40
    # the cap counts the rows left after the held-out split: 36 of 40
    with pytest.warns(UserWarning, match="larger than the 36 training rows"):
        res = train_saes([TopKSAE(D_IN, 16, k=2, device="cpu")], x, steps=1, progress=False)
    assert res.config.batch_size == 36


def test_heldout_split_is_seeded_disjoint_and_sized():
    tr, ho = heldout_split(200, 0.1, seed=3)
    assert len(ho) == 20 and len(tr) == 180
    assert sorted(tr.tolist() + ho.tolist()) == list(range(200))
    again_tr, again_ho = heldout_split(200, 0.1, seed=3)
    assert torch.equal(ho, again_ho) and torch.equal(tr, again_tr)
    assert not torch.equal(ho, heldout_split(200, 0.1, seed=4)[1])
    assert len(heldout_split(200, 0.0, seed=3)[1]) == 0
    assert len(heldout_split(10, 0.01, seed=0)[1]) == 2  # at least 2 rows to measure FVU on
    assert len(heldout_split(3, 0.5, seed=0)[1]) == 0  # too few rows to hold any out
    with pytest.raises(ValueError, match="heldout_fraction"):
        SAETrainConfig(steps=1, heldout_fraction=1.0)


def test_trainer_never_sees_heldout_rows_and_reports_their_fvu():
    x = _data(64, seed=1)
    frac, seed = 0.25, 5
    tr, ho = heldout_split(64, frac, seed)
    # full-batch steps on the training rows only, as a plain reference loop
    got = [ReluSAE(D_IN, 32, l1_coefficient=1e-3, seed=2, device="cpu")]
    res = train_saes(
        got,
        x,
        steps=3,
        batch_size=48,
        heldout_fraction=frac,
        seed=seed,
        shuffle=False,
        lr=1e-2,
        grad_clip=None,
        decay_fraction=0.0,
        progress=False,
    )
    ref = ReluSAE(D_IN, 32, l1_coefficient=1e-3, seed=2, device="cpu")
    assert not ref.cfg.unit_norm_decoder
    opt = torch.optim.Adam([getattr(ref, n) for n in ref.trainable_names()], lr=1e-2)
    ref.train()
    for _ in range(3):
        ref(x[tr]).loss.backward()  # ReluSAE: no unit-norm decoder, its L1 weighs the norms
        opt.step()
        opt.zero_grad()
    torch.testing.assert_close(got[0].W_dec, ref.W_dec, rtol=1e-4, atol=1e-5)
    (ev,) = res.evaluation
    assert ev["n_train_rows"] == 48 and ev["n_heldout_rows"] == 16
    assert ev["fvu_train"] == pytest.approx(_fvu(got[0], x[tr]), rel=1e-5)
    assert ev["fvu_heldout"] == pytest.approx(_fvu(got[0], x[ho]), rel=1e-5)


def test_heldout_fvu_exposes_memorising_a_small_corpus():
    # 24 noise rows and a dictionary as wide as the data: the SAE fits its training rows
    # far better than rows it never saw
    x = torch.randn(32, D_IN, generator=torch.Generator().manual_seed(0))
    sae = TopKSAE(D_IN, 64, k=1, seed=0, device="cpu")
    res = train_saes([sae], x, steps=400, lr=3e-2, heldout_fraction=0.25, progress=False)
    (ev,) = res.evaluation
    assert ev["fvu_train"] < 0.5 * ev["fvu_heldout"]
