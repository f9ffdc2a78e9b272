"""The grouped top-k selection against torch.topk and a brute-force sort."""

import pytest
import torch

from hierlens.sae.topk_select import grouped_topk
from hierlens.sae.workspace import Workspace


def _check(x, k, v, i):
    """``(v, i)`` is a top-k of ``x``: valid distinct indices whose values are ``v`` and the
    ``k`` largest values of each row (a full sort, as the independent reference)."""
    assert v.shape == i.shape == (*x.shape[:-1], k)
    torch.testing.assert_close(x.gather(-1, i), v, atol=0, rtol=0, equal_nan=True)
    assert bool((i.sort(-1).values.diff(dim=-1) > 0).all())  # distinct per row
    ref = x.sort(-1, descending=True).values[..., :k]
    torch.testing.assert_close(v.sort(-1, descending=True).values, ref, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape,k", [((64, 1024), 32), ((3, 5, 512), 8), ((2048,), 16)])
def test_grouped_topk_equals_a_full_sort(shape, k, dtype):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    _check(x, k, *grouped_topk(x, k))


def test_grouped_topk_with_many_ties():
    """Small integers: most values tie, including at the k-th place and across groups."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 6, (200, 512), generator=g).float()
    x[:20] = 0.0  # whole rows of one value
    x[20:40, ::8] = 9.0  # the top values all in one strided group's slab positions
    _check(x, 16, *grouped_topk(x, 16))


def test_grouped_topk_with_nan_and_inf_selects_like_torch_topk():
    x = torch.randn(50, 1024, generator=torch.Generator().manual_seed(2))
    x[0, 5] = float("nan")
    x[1, :40] = float("nan")  # more NaNs than k
    x[2, 7] = float("inf")
    x[3] = float("-inf")
    v, i = grouped_topk(x, 32)
    rv, _ = x.topk(32, dim=-1, sorted=False)
    torch.testing.assert_close(x.gather(-1, i), v, atol=0, rtol=0, equal_nan=True)
    assert torch.equal(v.isnan().sum(-1), rv.isnan().sum(-1))
    torch.testing.assert_close(
        v.nan_to_num(1e30).sort(-1).values, rv.nan_to_num(1e30).sort(-1).values
    )


def test_grouped_topk_falls_back_for_narrow_or_uneven_rows():
    for n, k in ((100, 4), (256, 32), (1000, 3)):  # 100, 1000 % 8 != 0; 256 < 2 * 8 * 32
        x = torch.randn(10, n, generator=torch.Generator().manual_seed(n))
        _check(x, k, *grouped_topk(x, k))


def test_grouped_topk_with_a_workspace_keeps_results_apart():
    """The group maxima live in the workspace between calls; earlier results stay valid."""
    ws = Workspace()
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(40, 1024, generator=g) for _ in range(3)]
    results = [grouped_topk(x, 16, workspace=ws) for x in xs]
    for x, (v, i) in zip(xs, results):
        _check(x, 16, v, i)
