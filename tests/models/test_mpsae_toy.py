"""Costa et al.'s toy: statistics and geometry checked against their closed forms."""

import itertools

import numpy as np
import pytest

from hierlens.models.tasks.mpsae_toy import MPSAEToy


@pytest.mark.parametrize("c", [0.0, 0.3, 0.8])
def test_geometry_is_exact(c):
    toy = MPSAEToy(within_cosine=c, seed=3)
    tree = toy.tree()
    d = tree.directions.double().numpy()
    assert d.shape == (20, 20) and toy.dim == 20
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-12)
    top = list(range(11))
    groups = [top] + list(toy.children_of.values())
    group_of = {i: g for g, members in enumerate(groups) for i in members}
    for i, j in itertools.combinations(range(20), 2):
        expect = c if group_of[i] == group_of[j] else 0.0
        assert d[i] @ d[j] == pytest.approx(expect, abs=1e-12), (i, j)
    for p, kids in toy.children_of.items():  # each child orthogonal to its parent
        assert all(tree.parent[k] == p for k in kids)
        assert np.abs(d[kids] @ d[p]).max() < 1e-12


def test_sampling_statistics():
    toy = MPSAEToy(within_cosine=0.5)
    assert toy.expected_l0 == pytest.approx(1.36)
    n = 40_000
    s = toy.sample(n, seed=1)
    active = s.codes != 0
    l0 = active.sum(1).double()
    # the sample mean is within 4 standard errors of 1.36 (L0 - 1 is Bernoulli(0.36))
    se = np.sqrt(0.36 * 0.64 / n)
    assert abs(float(l0.mean()) - 1.36) < 4 * se
    assert int(active[:, :11].sum(1).min()) == 1 and int(active[:, :11].sum(1).max()) == 1
    for p, kids in toy.children_of.items():  # children only with their parent, at most one
        kid_on = active[:, kids]
        assert bool((kid_on.sum(1) <= 1).all())
        assert bool((active[kid_on.any(1), p]).all())
        share = float(kid_on.any(1)[active[:, p]].double().mean())
        assert abs(share - 0.6) < 0.03
    vals = s.codes[active].double()
    assert abs(float(vals.mean()) - 1.5) < 0.01 and abs(float(vals.std()) - 0.25) < 0.01
    np.testing.assert_allclose(s.x.double(), s.codes.double() @ s.tree.directions.double(),
                               atol=1e-5)  # fmt: skip


def test_bad_config():
    with pytest.raises(ValueError, match="within_cosine"):
        MPSAEToy(within_cosine=1.0)
    with pytest.raises(ValueError, match="n_children"):
        MPSAEToy(p_child=0.5)
