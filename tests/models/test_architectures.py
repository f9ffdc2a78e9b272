"""Sequence architectures: memory updates against hand traces and exact stacks/tapes, shapes,
gradients, seeding and capture through hook points."""

from __future__ import annotations

import pytest
import torch

from hierlens.models.architectures import (
    ARCHS,
    POS_ENCODINGS,
    ArchConfig,
    build_model,
    stack_update,
    tape_update,
)
from hierlens.models.capture import capture

V = 10


def _cfg(arch, **kw):
    base = dict(arch=arch, vocab_size=V, d_model=16, n_heads=2, memory_size=6, memory_dim=3)
    return ArchConfig(**{**base, **kw})


CONFIGS = [_cfg(a) for a in ARCHS if a != "transformer"] + [
    _cfg("transformer", pos_encoding=pe) for pe in POS_ENCODINGS
]


def test_stack_update_hand_trace():
    # stack (top first) of 1-d cells [1, 2, 0]; push 0.5 / pop 0.3 / no-op 0.2 of value 9
    stack = torch.tensor([[[1.0], [2.0], [0.0]]])
    new = stack_update(stack, torch.tensor([[0.5, 0.3, 0.2]]), torch.tensor([[9.0]]))
    # top: .5*9 + .3*2 + .2*1 ; middle: .5*1 + .3*0 + .2*2 ; bottom: .5*2 + .3*0 + .2*0
    torch.testing.assert_close(new[0, :, 0], torch.tensor([5.3, 0.9, 1.0]))


def test_stack_update_is_an_exact_stack_with_one_hot_actions():
    g = torch.Generator().manual_seed(0)
    S, D, B = 8, 2, 4
    stack = torch.zeros(B, S, D)
    ref = [[] for _ in range(B)]
    for _ in range(30):
        a = torch.randint(0, 3, (B,), generator=g)
        v = torch.randn(B, D, generator=g)
        stack = stack_update(stack, torch.nn.functional.one_hot(a, 3).float(), v)
        for b in range(B):
            if a[b] == 0:
                ref[b] = [v[b]] + ref[b][: S - 1]
            elif a[b] == 1:
                ref[b] = ref[b][1:]
        for b in range(B):
            expect = torch.zeros(S, D)
            if ref[b]:
                expect[: len(ref[b])] = torch.stack(ref[b])
            torch.testing.assert_close(stack[b], expect)


def test_tape_update_hand_trace():
    tape = torch.tensor([[[1.0], [2.0], [3.0], [4.0]]])  # head on the first cell
    v = torch.tensor([[9.0]])
    jump = torch.tensor([2])
    one = lambda k: torch.nn.functional.one_hot(torch.tensor([k]), 5).float()  # noqa: E731
    cells = lambda a: tape_update(tape, a, v, jump)[0, :, 0].tolist()  # noqa: E731
    assert cells(one(0)) == [9, 2, 3, 4]  # write, stay
    assert cells(one(1)) == [4, 9, 2, 3]  # write, head left: now on the last cell
    assert cells(one(2)) == [2, 3, 4, 9]  # write, head right
    assert cells(one(3)) == [3, 4, 9, 2]  # write, jump left by 2
    assert cells(one(4)) == [3, 4, 9, 2]  # write, jump right by 2 (same on a 4-cell tape)
    mixed = tape_update(tape, torch.tensor([[0.5, 0.5, 0, 0, 0]]), v, jump)[0, :, 0]
    torch.testing.assert_close(mixed, torch.tensor([6.5, 5.5, 2.5, 3.5]))


def test_tape_update_is_an_exact_tape_with_one_hot_actions():
    g = torch.Generator().manual_seed(1)
    M, B = 7, 3
    tape = torch.zeros(B, M, 1)
    jump = torch.tensor([3, 5, 1])
    ref = [[0.0] * M for _ in range(B)]
    head = [0] * B
    for _ in range(40):
        a = torch.randint(0, 5, (B,), generator=g)
        v = torch.randn(B, 1, generator=g)
        tape = tape_update(tape, torch.nn.functional.one_hot(a, 5).float(), v, jump)
        for b in range(B):
            ref[b][head[b]] = float(v[b])
            move = [0, -1, 1, -int(jump[b]), int(jump[b])][int(a[b])]
            head[b] = (head[b] + move) % M
            expect = [ref[b][(head[b] + i) % M] for i in range(M)]
            torch.testing.assert_close(tape[b, :, 0], torch.tensor(expect))


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.arch}-{c.pos_encoding}")
def test_shape_gradients_and_seed(cfg):
    tokens = torch.randint(0, V, (3, 9), generator=torch.Generator().manual_seed(0))
    model = build_model(cfg)
    logits = model(tokens)
    assert logits.shape == (3, 9, V)
    logits.square().mean().backward()
    missing = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert not missing, missing
    again = build_model(cfg.to_dict())
    torch.testing.assert_close(again(tokens), logits.detach())
    other = build_model(cfg.replace(seed=1))
    assert not torch.allclose(other(tokens), logits)


@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "transformer"])
def test_recurrent_models_are_causal(arch):
    model = build_model(_cfg(arch))
    a = torch.tensor([[4, 5, 6, 7, 8]])
    b = torch.tensor([[4, 5, 6, 1, 2]])
    if arch == "tape_rnn":  # the jump distance counts non-blank tokens: keep it equal
        b = torch.tensor([[4, 5, 6, 1, 9]])
    torch.testing.assert_close(model(a)[:, :3], model(b)[:, :3])


@pytest.mark.parametrize("pe", POS_ENCODINGS)
def test_transformer_padding_is_masked(pe):
    model = build_model(_cfg("transformer", pos_encoding=pe)).eval()
    short = torch.tensor([[4, 5, 6]])
    padded = torch.tensor([[4, 5, 6, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    torch.testing.assert_close(model(padded, attention_mask=mask)[:, :3], model(short))


def test_position_encodings_break_permutation_symmetry():
    tokens = torch.tensor([[4, 5, 6, 7]])
    perm = torch.tensor([1, 3, 0, 2])  # not a reversal, to which symmetric ALiBi is blind
    nope = build_model(_cfg("transformer", pos_encoding="none"))
    torch.testing.assert_close(nope(tokens[:, perm]), nope(tokens)[:, perm])
    for pe in ("sincos", "learned", "relative", "rope", "alibi"):
        model = build_model(_cfg("transformer", pos_encoding=pe))
        assert not torch.allclose(model(tokens[:, perm]), model(tokens)[:, perm], atol=1e-5), pe


def test_capture_through_hook_points():
    cfg = _cfg("stack_rnn")
    model = build_model(cfg)
    seqs = [[4, 5, 6], [7, 8, 9, 4, 5]]
    hooks = ["hook_hidden", "hook_actions", "hook_stack", "hook_read"]
    store = capture(model, seqs, hooks, batch_size=2, progress=False)
    assert store["hook_hidden"].shape == (8, cfg.d_model)
    assert store["hook_actions"].shape == (8, 3)
    assert store["hook_stack"].shape == (8, cfg.memory_size * cfg.memory_dim)
    assert store["hook_read"].shape == (8, cfg.memory_dim)
    torch.testing.assert_close(store["hook_actions"].sum(1), torch.ones(8))
    # the reference: a hook on the module, one sequence at a time
    seen = {}
    handle = model.hook_stack.register_forward_hook(lambda m, i, o: seen.setdefault("s", o))
    with torch.no_grad():
        model(torch.tensor([seqs[1]]))
    handle.remove()
    torch.testing.assert_close(store["hook_stack"][3:], seen["s"][0].flatten(1))


def test_capture_transformer_blocks():
    model = build_model(_cfg("transformer", n_layers=2, pos_encoding="rope"))
    store = capture(
        model,
        [[4, 5, 6], [7, 8]],
        ["blocks.*.hook_resid_post", "blocks.0.attn.hook_pattern"],
        batch_size=2,
        progress=False,
    )
    assert store["blocks.1.hook_resid_post"].shape == (5, 16)
    assert store["blocks.0.attn.hook_pattern"].shape[0] == 5


def test_bad_config_and_input():
    with pytest.raises(ValueError, match="arch"):
        ArchConfig(arch="gru")
    with pytest.raises(ValueError, match="pos_encoding"):
        ArchConfig(arch="transformer", pos_encoding="xpos")
    with pytest.raises(ValueError, match="divisible"):
        ArchConfig(arch="transformer", d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="unknown"):
        build_model({"arch": "lstm", "width": 3})
    with pytest.raises(TypeError):
        build_model("lstm")
    model = build_model(_cfg("lstm"))
    with pytest.raises(ValueError, match="batch, pos"):
        model(torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="max_len"):
        build_model(_cfg("transformer", max_len=4))(torch.zeros(1, 5, dtype=torch.long))


def test_attention_dir_reflects_causality():
    assert _cfg("transformer").attention_dir == "bidirectional"
    assert _cfg("transformer", causal=True).attention_dir == "causal"
    assert _cfg("lstm").attention_dir == "causal"
