"""SAE metrics against closed forms and brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from hierlens.models.transformer import ModelConfig, build_transformer
from hierlens.sae import (
    ReluSAE,
    TopKSAE,
    dead_latents,
    dense_latents,
    evaluate_sae,
    feature_recovery,
    firing_counts,
    fvu,
    l0,
    mse,
    spliced_ce,
)


def _identity_sae(d):
    """relu(x) - relu(-x) = x: an SAE whose reconstruction is exact."""
    sae = ReluSAE(d, 2 * d, device="cpu", hook_name="blocks.0.hook_resid_post")
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def _zero_sae(d):
    sae = ReluSAE(d, 8, device="cpu", hook_name="blocks.0.hook_resid_post")
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.b_dec.zero_()
    return sae


@pytest.fixture(scope="module")
def model():
    cfg = ModelConfig(d_vocab=11, n_ctx=12, d_model=16, n_layers=2, n_heads=2, seed=3)
    return build_transformer(cfg, device="cpu")


def test_ce_recovered_identity_and_zero_on_bridge(model):
    tokens = torch.randint(0, 11, (6, 12), generator=torch.Generator().manual_seed(0))
    ident = spliced_ce(model, _identity_sae(16), tokens, batch_size=4)
    assert ident["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-5)
    assert ident["kl_spliced"] == pytest.approx(0.0, abs=1e-6)
    assert ident["kl_zero"] > 0
    zero = spliced_ce(model, _zero_sae(16), tokens)
    assert zero["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-6)
    assert zero["kl_spliced"] == pytest.approx(zero["kl_zero"], rel=1e-5)
    # the clean CE is the model's own next-token cross-entropy
    with torch.no_grad():
        logits = model(tokens)
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 11), tokens[:, 1:].reshape(-1)
    )
    assert ident["ce_clean"] == pytest.approx(float(ce), rel=1e-5)
    assert ident["n_positions"] == 6 * 11
    # a trained-ish SAE lies in between, and a wrong width is refused
    partial = spliced_ce(model, lambda a: a * 0.5, tokens, hook_name="blocks.0.hook_resid_post")
    assert math.isfinite(partial["ce_loss_recovered"])
    with pytest.raises(ValueError, match="d_in=8"):
        spliced_ce(
            model, TopKSAE(8, 16, k=2, device="cpu", hook_name="blocks.0.hook_resid_post"), tokens
        )


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.embed = torch.nn.Embedding(7, 5)
        self.mid = torch.nn.Linear(5, 5)
        self.out = torch.nn.Linear(5, 7)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, tokens):
        return self.out(torch.tanh(self.mid(self.embed(tokens))))


def test_spliced_ce_on_plain_module_against_hand_computation():
    model = _Toy()
    tokens = torch.randint(0, 7, (3, 5), generator=torch.Generator().manual_seed(1))
    targets = torch.full_like(tokens, -100)
    targets[:, 1:4] = tokens[:, 2:5]
    f = lambda a: 0.3 * a + 0.1  # noqa: E731
    res = spliced_ce(model, f, tokens, hook_name="mid", targets=targets)

    def logits_with(h_fn):
        h = h_fn(model.mid(model.embed(tokens)))
        return model.out(torch.tanh(h)).log_softmax(-1)

    with torch.no_grad():
        lc, ls, lz = logits_with(lambda h: h), logits_with(f), logits_with(torch.zeros_like)
    ce = {}
    kl = {}
    for name, lp in (("clean", lc), ("spliced", ls), ("zero", lz)):
        vals, kls = [], []
        for b in range(3):
            for t in range(5):
                if targets[b, t] != -100:
                    vals.append(-lp[b, t, targets[b, t]].item())
                    kls.append(
                        sum(
                            lc[b, t, v].exp().item() * (lc[b, t, v] - lp[b, t, v]).item()
                            for v in range(7)
                        )
                    )
        ce[name], kl[name] = np.mean(vals), np.mean(kls)
    assert res["ce_clean"] == pytest.approx(ce["clean"], rel=1e-5)
    assert res["ce_spliced"] == pytest.approx(ce["spliced"], rel=1e-5)
    assert res["ce_zero"] == pytest.approx(ce["zero"], rel=1e-5)
    assert res["kl_spliced"] == pytest.approx(kl["spliced"], rel=1e-4, abs=1e-7)
    assert res["kl_zero"] == pytest.approx(kl["zero"], rel=1e-4)
    expected = (ce["zero"] - ce["spliced"]) / (ce["zero"] - ce["clean"])
    assert res["ce_loss_recovered"] == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError, match="nope"):
        spliced_ce(model, f, tokens, hook_name="nope")


def test_reconstruction_and_sparsity_metrics():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 4, generator=g)
    r = x + 0.1 * torch.randn(50, 4, generator=g)
    xn, rn = x.double().numpy(), r.double().numpy()
    assert mse(x, r) == pytest.approx(np.mean(np.sum((xn - rn) ** 2, 1)), rel=1e-5)
    assert fvu(x, r) == pytest.approx(
        np.sum((xn - rn) ** 2) / np.sum((xn - xn.mean(0)) ** 2), rel=1e-5
    )
    codes = torch.tensor([[0.0, 1.0, 0.0, 2.0], [0.0, 0.5, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0]])
    assert l0(codes) == pytest.approx(4 / 3)
    counts = firing_counts(codes)
    assert counts.tolist() == [0, 3, 0, 1]
    assert dead_latents(counts).tolist() == [True, False, True, False]
    assert dense_latents(counts, 3, threshold=0.5).tolist() == [False, True, False, False]
    sae = TopKSAE(4, 16, k=2, device="cpu")
    ev = evaluate_sae(sae, x, batch_size=7)
    codes = sae.encode(x)
    assert ev["l0"] == pytest.approx(2.0)
    assert ev["fvu"] == pytest.approx(fvu(x, sae.decode(codes)), rel=1e-5)
    assert ev["dead_fraction"] == pytest.approx(float((firing_counts(codes) == 0).float().mean()))
    with pytest.raises(ValueError, match="d_in=4"):
        evaluate_sae(sae, torch.randn(10, 5))


def test_feature_recovery_against_brute_force():
    g = torch.Generator().manual_seed(2)
    true = torch.randn(4, 6, generator=g)
    dic = torch.randn(5, 6, generator=g)
    res = feature_recovery(true, dic, levels=[0, 1, 1, 2])
    a = true.double().numpy()
    b = dic.double().numpy()
    cos = np.array(
        [
            [np.dot(a[i], b[j]) / np.linalg.norm(a[i]) / np.linalg.norm(b[j]) for j in range(5)]
            for i in range(4)
        ]
    )
    np.testing.assert_allclose(res["best_cosine"], cos.max(1), rtol=1e-9)
    best_total, best_perm = -np.inf, None
    for perm in itertools.permutations(range(5), 4):
        total = sum(cos[i, perm[i]] for i in range(4))
        if total > best_total:
            best_total, best_perm = total, perm
    assert res["hungarian_cosine"] == pytest.approx(best_total / 4)
    assert res["assignment"] == list(best_perm)
    assert res["per_level"][1]["n"] == 2
    assert res["per_level"][1]["mean_best_cosine"] == pytest.approx(cos.max(1)[1:3].mean())
    assert res["per_level"][2]["hungarian_cosine"] == pytest.approx(cos[3, best_perm[3]])
    # a dictionary containing the true features (scaled) recovers them perfectly
    perfect = feature_recovery(true, torch.cat([dic, 3 * true]))
    assert perfect["hungarian_cosine"] == pytest.approx(1.0)
