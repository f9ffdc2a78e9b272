import pytest
import torch

from hierlens.models import ModelConfig, build_transformer, get_task


@pytest.mark.parametrize("direction", ["causal", "bidirectional"])
def test_forward_shapes_and_hooks(direction):
    cfg = ModelConfig(
        d_vocab=11, n_ctx=16, d_model=32, n_layers=2, n_heads=4, attention_dir=direction
    )
    model = build_transformer(cfg, device="cpu")
    tokens = torch.randint(0, 11, (3, 9))
    logits, cache = model.run_with_cache(
        tokens, names_filter=lambda n: n.endswith("hook_resid_post")
    )
    assert logits.shape == (3, 9, 11)
    assert cache["blocks.1.hook_resid_post"].shape == (3, 9, 32)
    assert model.cfg.attention_dir == direction


@pytest.mark.parametrize("direction", ["causal", "bidirectional"])
def test_attention_direction_controls_what_a_position_sees(direction):
    model = build_transformer(
        ModelConfig(d_vocab=11, n_ctx=16, d_model=32, attention_dir=direction)
    )
    a = torch.tensor([[1, 2, 3, 4, 5, 6]])
    b = a.clone()
    b[0, -1] = 7  # change only the last token
    with torch.no_grad():
        diff = (model(a)[0, :-1] - model(b)[0, :-1]).abs().max().item()
    if direction == "causal":
        assert diff == 0.0
    else:
        assert diff > 1e-4


def test_seeded_build_is_deterministic_and_leaves_global_rng_alone():
    cfg = ModelConfig(d_vocab=7, n_ctx=8, d_model=16, n_heads=2, seed=3)
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    m1 = build_transformer(cfg)
    after = torch.rand(1)
    assert torch.equal(before, after)
    m2 = build_transformer(cfg)
    m3 = build_transformer(cfg.replace(seed=4))
    s1, s2, s3 = m1.state_dict(), m2.state_dict(), m3.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not torch.equal(s1["embed.weight"], s3["embed.weight"])


def test_config_roundtrip_and_for_task():
    task = get_task("dyck", max_length=20)
    cfg = ModelConfig.for_task(task, d_model=32, n_heads=2)
    assert cfg.d_vocab == len(task.vocab) and cfg.n_ctx == task.max_len == 22
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"d_model": 30, "n_heads": 4}, "divisible"),
        ({"attention_dir": "sideways"}, "attention_dir"),
        ({"n_layers": 0}, "n_layers"),
        ({"act_fn": "tanh"}, "act_fn"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(d_vocab=5, n_ctx=8, **kwargs)


def test_unknown_config_key_suggests_the_right_one():
    with pytest.raises(ValueError, match="did you mean 'd_model'"):
        ModelConfig.from_dict({"d_vocab": 5, "n_ctx": 8, "d_modle": 4})


@pytest.mark.parametrize("direction", ["causal", "bidirectional"])
def test_training_fast_path_matches_bridge_and_trains_its_parameters(direction):
    from hierlens.models.forward import training_forward

    model = build_transformer(ModelConfig(d_vocab=9, n_ctx=12, d_model=32, attention_dir=direction))
    tokens = torch.randint(0, 9, (4, 10))
    mask = torch.ones(4, 10, dtype=torch.bool)
    mask[0, 6:] = False
    forward = training_forward(model)
    fast = forward(tokens, mask)
    slow = (
        model(tokens, attention_mask=mask.long()) if direction == "bidirectional" else model(tokens)
    )
    assert torch.allclose(fast[mask], slow[mask], atol=1e-5)
    fast.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_training_forward_on_a_plain_module():
    from hierlens.models.forward import training_forward

    plain = torch.nn.Sequential(torch.nn.Embedding(5, 8), torch.nn.Linear(8, 5))
    tokens = torch.randint(0, 5, (2, 3))
    assert torch.equal(training_forward(plain)(tokens, None), plain(tokens))
