"""The one stacked optimizer step against a slow obvious reference: one torch.optim.AdamW and
one clip_grad_norm_ per member, in a Python loop."""

from __future__ import annotations

import math

import pytest
import torch

from hierlens.core.optim import StackedAdamW, clip_grad_norms_, lr_at

SHAPES = {"w": (4, 5), "b": (5,), "s": ()}
S = 3


def _init(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(S, *shape, generator=g) for k, shape in SHAPES.items()}


SCALE = torch.tensor([1.0, 30.0, 5.0])


def _loss(params: dict[str, torch.Tensor], step: int, rows=slice(None)) -> torch.Tensor:
    """A loss with a different gradient at every step for the stack's members ``rows``
    (``params`` hold those rows); member ``s``'s part is scaled by ``SCALE[s]`` (large values
    make clipping bite)."""
    g = torch.Generator().manual_seed(1000 + step)
    total = 0.0
    for k, p in params.items():
        target = torch.randn(S, *SHAPES[k], generator=g)[rows]
        weight = 1 + torch.rand(S, *SHAPES[k], generator=g)[rows]
        per = ((p - target) ** 2 * weight).reshape(p.shape[0], -1)
        total = total + (per.sum(1) * SCALE[rows]).sum()
    return total


LRS = [1e-2, 3e-2, 2e-2]
WDS = [0.1, 0.0, 0.3]
BETAS = [(0.9, 0.999), (0.8, 0.99), (0.9, 0.98)]
CLIPS = [1.0, None, 2.0]


def _schedule(member: int, step: int, steps: int) -> float:
    return lr_at(step, base_lr=LRS[member], total_steps=steps, warmup_steps=3, min_lr_ratio=0.1)


def _reference(steps: int, fused: bool) -> dict[str, torch.Tensor]:
    """Each member alone: its own leaf tensors, torch.optim.AdamW (weight decay on the
    matrix only), clip_grad_norm_, the learning rate set per step."""
    start = _init()
    out = {k: [] for k in SHAPES}
    for s in range(S):
        params = {k: start[k][s].clone().requires_grad_(True) for k in SHAPES}
        opt = torch.optim.AdamW(
            [
                {"params": [params["w"]], "weight_decay": WDS[s]},
                {"params": [params["b"], params["s"]], "weight_decay": 0.0},
            ],
            betas=BETAS[s],
            fused=fused,
            foreach=None if fused else False,
        )
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = _schedule(s, step, steps)
            stacked = {k: p[None] for k, p in params.items()}
            _loss(stacked, step, [s]).backward()
            if CLIPS[s] is not None:
                torch.nn.utils.clip_grad_norm_(list(params.values()), CLIPS[s])
            opt.step()
            opt.zero_grad()
        for k in SHAPES:
            out[k].append(params[k].detach())
    return {k: torch.stack(v) for k, v in out.items()}


def _stacked_run(steps, fused, start=None, opt_state=None, first=0, stop=None):
    params = {k: t.clone().requires_grad_(True) for k, t in (start or _init()).items()}
    opt = StackedAdamW(
        params, betas=BETAS, weight_decay=WDS, grad_clip=CLIPS, decay={"w"}, fused=fused
    )
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    for step in range(first, steps if stop is None else stop):
        _loss(params, step).backward()
        opt.step([_schedule(s, step, steps) for s in range(S)])
        opt.zero_grad()
    return params, opt


@pytest.mark.parametrize("fused", [True, False])
def test_stacked_step_equals_one_adamw_per_member(fused):
    steps = 12
    want = _reference(steps, fused)
    got, _ = _stacked_run(steps, fused)
    for k in SHAPES:
        torch.testing.assert_close(got[k].detach(), want[k], rtol=1e-6, atol=1e-7)
        assert not torch.allclose(got[k], _init()[k])  # it moved


def test_clipping_bites_in_the_reference_setting():
    """Member 1's gradient norm is far above member 0's and 2's limits: the comparison
    above exercises clipping (and its absence for member 1)."""
    params = {k: t.clone().requires_grad_(True) for k, t in _init().items()}
    _loss(params, 0).backward()
    norms = torch.stack(
        [
            torch.linalg.vector_norm(torch.stack([p.grad[s].norm() for p in params.values()]))
            for s in range(S)
        ]
    )
    assert norms[0] > CLIPS[0] and norms[2] > CLIPS[2]


def test_members_sharing_settings_take_the_whole_tensor_path():
    """All members with one learning rate and settings are updated by one call over the
    whole tensors; the result equals the per-member reference."""
    params = {k: t.clone().requires_grad_(True) for k, t in _init().items()}
    opt = StackedAdamW(params, weight_decay=0.1, grad_clip=1.0, decay={"w"})
    refs = []
    for s in range(S):
        own = {k: t[s].clone().requires_grad_(True) for k, t in _init().items()}
        refs.append(
            (
                own,
                torch.optim.AdamW(
                    [
                        {"params": [own["w"]], "weight_decay": 0.1},
                        {"params": [own["b"], own["s"]], "weight_decay": 0.0},
                    ],
                    lr=1e-2,
                    fused=True,
                ),
            )
        )
    for step in range(5):
        _loss(params, step).backward()
        opt.step(1e-2)
        opt.zero_grad()
        for s, (own, ref_opt) in enumerate(refs):
            _loss({k: p[None] for k, p in own.items()}, step, [s]).backward()
            torch.nn.utils.clip_grad_norm_(list(own.values()), 1.0)
            ref_opt.step()
            ref_opt.zero_grad()
    for k in SHAPES:
        want = torch.stack([own[k].detach() for own, _ in refs])
        torch.testing.assert_close(params[k].detach(), want, rtol=1e-6, atol=1e-7)


def test_one_unstacked_member_is_torch_adamw_bitwise():
    """A module's own parameters (no member axis): exactly torch.optim.AdamW (fused) with
    clip_grad_norm_, the path one model's training takes."""
    torch.manual_seed(0)
    a, b = torch.nn.Linear(6, 4), torch.nn.Linear(6, 4)
    b.load_state_dict(a.state_dict())
    opt = StackedAdamW(dict(a.named_parameters()), stacked=False, weight_decay=0.05,
                       grad_clip=0.5, decay={"weight"}, betas=(0.9, 0.98))  # fmt: skip
    ref = torch.optim.AdamW(
        [{"params": [b.weight], "weight_decay": 0.05}, {"params": [b.bias], "weight_decay": 0}],
        betas=(0.9, 0.98),
        fused=True,
    )
    x = torch.randn(16, 6)
    for step in range(6):
        lr = lr_at(step, base_lr=3e-2, total_steps=6, warmup_steps=2)
        (a(x) ** 2).sum().backward()
        opt.step(lr)
        opt.zero_grad()
        (b(x) ** 2).sum().backward()
        torch.nn.utils.clip_grad_norm_(b.parameters(), 0.5, foreach=True)
        for group in ref.param_groups:
            group["lr"] = lr
        ref.step()
        ref.zero_grad()
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_state_round_trip_resumes_bitwise():
    straight, _ = _stacked_run(10, True)
    _, first = _stacked_run(10, True, stop=4)
    midway = {k: t.detach() for k, t in first.params.items()}
    state = first.state_dict()
    assert state["step"].tolist() == [4.0] * S and state["exp_avg.w"].shape == (S, 4, 5)
    resumed, _ = _stacked_run(10, True, start=midway, opt_state=state, first=4)
    for k in SHAPES:
        assert torch.equal(resumed[k], straight[k])


def test_member_state_and_keep():
    """One member's rows load into another stack's row; ``keep`` drops members and their
    state."""
    _, opt = _stacked_run(6, True, stop=3)
    one = opt.state_dict(rows=[2])
    assert one["exp_avg.b"].shape == (1, 5)
    params = {k: t.clone().requires_grad_(True) for k, t in _init(1).items()}
    other = StackedAdamW(params)
    other.load_state_dict(one, rows=[0])
    torch.testing.assert_close(other.state_dict(rows=[0]), one, rtol=0, atol=0)
    assert other.state_dict()["step"].tolist() == [3.0, 0.0, 0.0]
    kept = {k: t.detach()[[0, 2]].clone().requires_grad_(True) for k, t in opt.params.items()}
    opt.keep([0, 2], kept)
    assert opt.members == 2 and opt.grad_clip == [CLIPS[0], CLIPS[2]]
    assert torch.equal(opt.state_dict()["exp_avg_sq.w"][1], one["exp_avg_sq.w"][0])


def test_bad_state_is_a_clear_error():
    params = {k: t.clone().requires_grad_(True) for k, t in _init().items()}
    opt = StackedAdamW(params)
    with pytest.raises(ValueError, match="lacks"):
        opt.load_state_dict({"step": torch.zeros(S)})
    state = opt.state_dict()
    state["exp_avg.w"] = torch.zeros(S, 5, 4)
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(state)
    with pytest.raises(ValueError, match="members"):
        StackedAdamW(params, weight_decay=[0.1, 0.2])


def test_clip_grad_norms_against_clip_grad_norm_per_member():
    g = torch.Generator().manual_seed(3)
    tensors = [torch.zeros(4, 3, 2), torch.zeros(4, 7), torch.zeros(4)]
    for t in tensors:
        t.grad = torch.randn(t.shape, generator=g) * 3
    want = []
    for s, c in enumerate([0.5, None, 100.0, 2.0]):
        own = [t.grad[s].clone() for t in tensors]
        holders = [torch.zeros_like(x) for x in own]
        for h, x in zip(holders, own, strict=True):
            h.grad = x
        if c is not None:
            torch.nn.utils.clip_grad_norm_(holders, c)
        want.append([h.grad for h in holders])
    clip_grad_norms_(tensors, [0.5, None, 100.0, 2.0])
    for i, t in enumerate(tensors):
        torch.testing.assert_close(t.grad, torch.stack([w[i] for w in want]))


def test_lr_at_closed_forms():
    kw = dict(base_lr=1.0, total_steps=100, warmup_steps=10)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(55, **kw, schedule="linear") == pytest.approx(0.5)
    assert lr_at(55, **kw) == pytest.approx(0.5)  # cosine at half way
    assert lr_at(10 + 45 // 2, **kw, schedule="constant") == 1.0
    # hold, then decay linearly to 0 over the last 20% (decay_start = 80)
    hold = dict(base_lr=2.0, total_steps=100, warmup_steps=0, schedule="linear")
    assert lr_at(79, **hold, decay_start=80) == 2.0
    assert lr_at(90, **hold, decay_start=80) == pytest.approx(2.0 * 10 / 20)
    # warmup overlapping the decay multiplies the two factors
    both = lr_at(4, base_lr=1.0, total_steps=10, warmup_steps=5, schedule="linear", decay_start=2)
    assert both == pytest.approx((5 / 5) * (1 - 2 / 8))
    assert lr_at(200, **kw, min_lr_ratio=0.25) == pytest.approx(0.25)
    assert math.isclose(lr_at(100, **kw, schedule="linear"), 0.0, abs_tol=1e-12)
    with pytest.raises(ValueError, match="schedule"):
        lr_at(0, base_lr=1.0, total_steps=10, schedule="step")
