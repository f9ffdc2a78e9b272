"""Matryoshka BatchTopK SAE: its loss equals a plain per-prefix reference loss."""

import pytest
import torch

from hierlens.sae import (
    MatryoshkaBatchTopKSAE,
    description_length,
    load_sae,
    sae_class,
    train_saes,
)


def _reference_loss(sae, x, codes):
    """Bussmann et al. 2025: sum over prefixes m of mean_b ||x_b - (codes_b[:m] W_dec[:m] +
    b_dec)||^2, written with one explicit loop per prefix and per row."""
    total = 0.0
    for m in sae.cfg.matryoshka_widths:
        err = 0.0
        for b in range(x.shape[0]):
            recon = sae.b_dec.detach().double().clone()
            for i in range(m):
                recon += codes[b, i] * sae.W_dec.detach().double()[i]
            err += float(((x[b].double() - recon) ** 2).sum())
        total += err / x.shape[0]
    return total


def test_loss_equals_per_prefix_reference():
    torch.manual_seed(0)
    sae = MatryoshkaBatchTopKSAE(6, 10, k=2.5, matryoshka_widths=(3, 7), device="cpu",
                                 dtype="float64", aux_coefficient=0.0)  # fmt: skip
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(0, 0.1)
    x = torch.randn(16, 6, dtype=torch.float64)
    sae.train()
    out = sae(x)
    assert sae.cfg.matryoshka_widths == (3, 7, 10)
    assert int((out.codes != 0).sum()) == round(2.5 * 16)
    ref = _reference_loss(sae, x, out.codes.detach().double())
    assert float(out.loss.detach()) == pytest.approx(
        ref, rel=1e-6
    )  # the loss is accumulated in float32
    assert float((out.terms["mse"] + out.terms["matryoshka"]).detach()) == pytest.approx(
        ref, rel=1e-6
    )  # the loss is accumulated in float32


def test_registry_files_training_and_mdl(tmp_path):
    assert sae_class("matryoshka") is MatryoshkaBatchTopKSAE
    assert sae_class("matryoshka_batchtopk") is MatryoshkaBatchTopKSAE
    x = torch.randn(600, 8)
    sae = MatryoshkaBatchTopKSAE(8, 16, k=2, matryoshka_widths=[4, 8], device="cpu")
    res = train_saes([sae], x, steps=60, batch_size=64, lr=1e-2, progress=False, log_every=20)
    first, last = res.history[0], res.history[-1]
    assert last["matryoshka"] < first["matryoshka"] and last["l0"] == pytest.approx(2.0)
    sae.save(tmp_path / "m")
    cfg = (tmp_path / "m" / "cfg.json").read_text()
    assert '"architecture": "matryoshka_batchtopk"' in cfg and '"matryoshka_widths"' in cfg
    back = load_sae(tmp_path / "m")
    assert isinstance(back, MatryoshkaBatchTopKSAE) and back.cfg == sae.cfg
    assert torch.equal(back.encode(x), sae.encode(x))
    dl = description_length(sae, x[:200])
    assert dl.bits > 0 and dl.l0 > 0


def test_bad_widths():
    with pytest.raises(ValueError, match="strictly increasing"):
        MatryoshkaBatchTopKSAE(4, 8, k=1, matryoshka_widths=(5, 3))
    with pytest.raises(ValueError, match="strictly increasing"):
        MatryoshkaBatchTopKSAE(4, 8, k=1, matryoshka_widths=(0, 4))
