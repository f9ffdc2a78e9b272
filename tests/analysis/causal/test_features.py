"""Interventions through SAE features, neurons and probe directions, against closed forms."""

from __future__ import annotations

import pytest
import torch

from hierlens.analysis.causal.features import (
    inlp_directions,
    neuron_edit,
    projection_edit,
    sae_feature_edit,
    steering_edit,
    task_metric_under,
)
from hierlens.sae import ReluSAE


def test_sae_edits_change_only_the_chosen_features():
    sae = ReluSAE(d_in=6, d_sae=12, seed=0)
    x = torch.randn(2, 5, 6)
    f = sae.encode(x)
    everything = torch.arange(12)
    zeroed = sae_feature_edit(sae, everything, "zero")(x)
    torch.testing.assert_close(zeroed, x - sae.decode(f) + sae.b_dec, atol=1e-5, rtol=0)
    same = sae_feature_edit(sae, [3, 7], "patch", f[..., [3, 7]])(x)
    torch.testing.assert_close(same, x, atol=1e-6, rtol=0)
    mean = f[..., [1]].mean((0, 1))
    edited = sae_feature_edit(sae, [1], "mean", mean)(x)
    want = x + (mean - f[..., [1]]) @ sae.W_dec[[1]]
    torch.testing.assert_close(edited, want, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="out of range"):
        sae_feature_edit(sae, [12])


@pytest.mark.parametrize("seed", range(6))
def test_projection_and_steering_closed_forms(seed):
    torch.manual_seed(seed)
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    d = torch.randn(2, 5, dtype=torch.float64)
    out = projection_edit(d)(x)
    assert float((out @ d.T).abs().max()) < 1e-10
    torch.testing.assert_close(projection_edit(d)(out), out)
    u = torch.randn(5, dtype=torch.float64)
    moved = steering_edit(u, 2.0)(x) - x
    torch.testing.assert_close(moved, (2.0 * u / u.norm()).expand_as(x))
    torch.testing.assert_close(
        neuron_edit([0, 2])(x)[..., [0, 2]], torch.zeros(3, 4, 2, dtype=x.dtype)
    )


def test_inlp_removes_linear_information():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (400,), generator=g)
    X = torch.randn(400, 6, generator=g, dtype=torch.float64)
    X[:, 0] += 3.0 * (2 * y - 1)
    X[:, 3] += 1.0 * (2 * y - 1)
    W = inlp_directions(X, y, n_directions=3)
    clean = projection_edit(W)(X[None])[0]
    from sklearn.linear_model import LogisticRegression

    before = LogisticRegression().fit(X.numpy(), y.numpy()).score(X.numpy(), y.numpy())
    after = LogisticRegression().fit(clean.numpy(), y.numpy()).score(clean.numpy(), y.numpy())
    assert before > 0.95 and after < 0.65


def test_task_metric_under_edits(dyck_task):
    from hierlens.models import ModelConfig, build_transformer

    model = build_transformer(
        ModelConfig.for_task(dyck_task, d_model=16, n_layers=1, n_heads=2), device="cpu"
    )
    plain = dyck_task.evaluate(model, "test_id", 60)
    same = task_metric_under(model, dyck_task, {}, n=60)
    assert same == plain
    # zeroing the final residual stream makes every logit the unembedding bias: constant
    zero = task_metric_under(
        model, dyck_task, {"blocks.0.hook_resid_post": neuron_edit(range(16))}, n=60
    )
    assert zero["loss"] != plain["loss"]
    assert dyck_task.evaluate(model, "test_id", 60) == plain  # hooks removed afterwards
