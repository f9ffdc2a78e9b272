"""The fused forward (models/fused.py) against the bridge's own forward and backward."""

import itertools
import warnings

import pytest
import torch

from hierlens.models import ModelConfig, TrainConfig, build_transformer, get_task, train
from hierlens.models.forward import compiled, model_logits, training_forward
from hierlens.models.fused import fused_logits, fused_spec, native_params

NORMS = ["LN", "LNPre", "RMS", "RMSPre", None]
CONFIGS = (
    [
        dict(positional_embedding_type=pos, normalization_type=norm, attention_dir=d)
        for pos, norm, d in itertools.product(
            ["standard", "rotary"], NORMS, ["causal", "bidirectional"]
        )
    ]
    + [
        dict(act_fn=act, attention_dir=d, positional_embedding_type=pos)
        for act, d, pos in [
            ("gelu_new", "causal", "standard"),
            ("relu", "bidirectional", "rotary"),
            ("silu", "causal", "rotary"),
            ("solu_ln", "bidirectional", "standard"),
            ("solu_ln", "causal", "rotary"),
        ]
    ]
    + [
        dict(attn_only=True, attention_dir=d, positional_embedding_type=pos)
        for d, pos in itertools.product(["causal", "bidirectional"], ["standard", "rotary"])
    ]
)


def _ids(kw):
    return "-".join(str(v) for v in kw.values())


def _model(seed=0, **kw):
    cfg = ModelConfig(d_vocab=11, n_ctx=12, d_model=16, n_layers=2, n_heads=2, seed=seed, **kw)
    model = build_transformer(cfg, device="cpu")
    with torch.no_grad():  # move norms and biases off their initial ones and zeros
        gen = torch.Generator().manual_seed(seed + 1)
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def _batch(rows=3, seq=10, lead=()):
    gen = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, 11, (*lead, rows, seq), generator=gen)
    mask = torch.ones(*lead, rows, seq, dtype=torch.bool)
    mask[..., 1, 6:] = False
    mask[..., 2, 3:] = False
    return tokens, mask


def _grads(out, params):
    return torch.autograd.grad(out, list(params.values()), allow_unused=True)


def _assert_grads_close(got, want):
    # Relative to the largest gradient: some entries are zero in exact arithmetic (a key
    # bias shifts every score of a query equally) and float noise in either path.
    scale = max(w.abs().max() for w in want if w is not None)
    for g, w in zip(got, want):
        assert (g - w).abs().max() <= 1e-5 * scale


@pytest.mark.parametrize("kw", CONFIGS, ids=_ids)
def test_forward_and_gradients_equal_the_bridge(kw):
    model = _model(**kw)
    spec = fused_spec(model)
    assert spec is not None
    params = native_params(model)
    tokens, mask = _batch()
    want = model_logits(model, tokens, mask)
    got = fused_logits(spec, params, tokens, mask)
    scale = want[mask].abs().max()
    assert (got[mask] - want[mask]).abs().max() <= 1e-5 * scale
    weights = torch.randn(want[mask].shape, generator=torch.Generator().manual_seed(3))
    _assert_grads_close(
        _grads((got[mask] * weights).sum(), params), _grads((want[mask] * weights).sum(), params)
    )


@pytest.mark.parametrize("kw", CONFIGS[:4] + CONFIGS[10:14], ids=_ids)
def test_unpadded_forward_computes_the_padded_one_at_real_tokens(kw):
    model = _model(**kw)
    spec, params = fused_spec(model), native_params(model)
    tokens, mask = _batch()
    keep = mask.flatten().nonzero().squeeze(1)
    padded = fused_logits(spec, params, tokens, mask)[mask]
    packed = fused_logits(spec, params, tokens, mask, keep=keep)
    assert packed.shape == padded.shape
    torch.testing.assert_close(packed, padded, atol=1e-6, rtol=1e-5)
    _assert_grads_close(
        _grads(packed.square().sum(), params), _grads(padded.square().sum(), params)
    )


def test_unpadded_bidirectional_forward_needs_the_mask():
    model = _model(attention_dir="bidirectional")
    tokens, mask = _batch()
    with pytest.raises(ValueError, match="attention_mask"):
        fused_logits(fused_spec(model), native_params(model), tokens, None, keep=torch.arange(5))


@pytest.mark.parametrize("kw", [CONFIGS[0], CONFIGS[13], CONFIGS[-1]], ids=_ids)
def test_a_stack_of_models_equals_each_model_alone(kw):
    models = [_model(seed=s, **kw) for s in range(3)]
    spec = fused_spec(models[0])
    each = [native_params(m) for m in models]
    stacked = {name: torch.stack([p[name] for p in each]) for name in each[0]}
    tokens, mask = _batch(lead=(3,))
    tokens[1] = torch.randint(0, 11, tokens[1].shape)  # each model its own batch
    together = fused_logits(spec, stacked, tokens, mask)
    for i in range(3):
        alone = fused_logits(spec, each[i], tokens[i], mask[i])
        torch.testing.assert_close(together[i], alone, atol=1e-6, rtol=1e-5)


def _stacked_keep(mask):
    """(S, n) keep: each model's real slots, then its first padding slots up to the largest
    count (as train_many builds it)."""
    flat = mask.reshape(mask.shape[0], -1)
    n = int(flat.sum(1).max())
    order = torch.argsort((~flat).to(torch.int8), dim=1, stable=True)
    return order[:, :n]


@pytest.mark.parametrize("group", [2, 32], ids=["groups-across-models", "one-group"])
@pytest.mark.parametrize("kw", [CONFIGS[0], CONFIGS[3], CONFIGS[13], CONFIGS[-2]], ids=_ids)
def test_an_unpadded_stack_equals_each_model_unpadded_alone(kw, group, monkeypatch):
    # a stack attends in groups of `group` sequences sorted by length across its models
    monkeypatch.setattr("hierlens.models.fused_layouts.STACK_GROUP_SEQUENCES", group)
    models = [_model(seed=s, **kw) for s in range(3)]
    spec = fused_spec(models[0])
    each = [native_params(m) for m in models]
    stacked = {name: torch.stack([p[name] for p in each]) for name in each[0]}
    tokens, mask = _batch(lead=(3,))
    tokens[1] = torch.randint(0, 11, tokens[1].shape)
    mask[0, 0, 4:] = False  # model 0 has fewer real tokens: its keep lists padding slots too
    mask[2, :, 9:] = False
    keep = _stacked_keep(mask)
    together = fused_logits(spec, stacked, tokens, mask, keep=keep)
    assert together.shape == (3, keep.shape[1], 11)
    weights = torch.randn(together.shape, generator=torch.Generator().manual_seed(5))
    counts = mask.reshape(3, -1).sum(1)
    real = torch.arange(keep.shape[1])[None, :] < counts[:, None]
    grads = _grads((together * weights)[real].sum(), stacked)
    for i in range(3):
        alone = fused_logits(spec, each[i], tokens[i], mask[i], keep=keep[i, : counts[i]])
        torch.testing.assert_close(together[i, : counts[i]], alone, atol=1e-6, rtol=1e-5)
        want = _grads((alone * weights[i, : counts[i]]).sum(), each[i])
        _assert_grads_close([g[i] for g in grads], want)
    with pytest.raises(ValueError, match="keep must be"):
        fused_logits(spec, stacked, tokens, mask, keep=keep[0])
    with pytest.raises(ValueError, match="a stack needs attention_mask"):
        fused_logits(spec, stacked, tokens, None, keep=keep)


def test_configurations_the_kernels_do_not_compute_are_refused():
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge.sources.native import boot

    base = dict(d_model=16, n_layers=1, n_heads=4, d_head=4, d_mlp=32, n_ctx=8, d_vocab=9)
    gated = boot(TransformerBridgeConfig(**base, gated_mlp=True, act_fn="silu"), device="cpu")
    gqa = boot(TransformerBridgeConfig(**base, n_key_value_heads=2), device="cpu")
    assert fused_spec(gated) is None and fused_spec(gqa) is None
    assert fused_spec(torch.nn.Linear(3, 3)) is None
    tokens = torch.randint(0, 9, (2, 5))
    for model in (gated, gqa):  # the training forward falls back to the model itself
        torch.testing.assert_close(
            training_forward(model)(tokens, None), model_logits(model, tokens)
        )


def test_compile_falls_back_to_the_eager_forward(monkeypatch):
    model = _model()
    eager = training_forward(model)
    tokens, mask = _batch()

    def no_compiler(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", no_compiler)
    with pytest.warns(UserWarning, match="unavailable"):
        forward = compiled(eager, torch.device("cpu"))
    assert forward is eager

    def broken_on_first_call(fn, **kwargs):
        def call(*args):
            raise RuntimeError("backend failed")

        return call

    monkeypatch.setattr(torch, "compile", broken_on_first_call)
    forward = compiled(eager, torch.device("cpu"))
    with pytest.warns(UserWarning, match="failed"):
        out = forward(tokens, mask, None)
    torch.testing.assert_close(out, eager(tokens, mask, None))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # later calls go straight to the eager forward
        forward(tokens, mask, None)


@pytest.mark.parametrize("direction", ["causal", "bidirectional"])
def test_training_unpadded_equals_training_padded(tmp_path, direction):
    if direction == "causal":
        task = get_task("dyck", n_types=2, max_depth=3, min_length=2, max_length=12)
    else:  # a masked task: right-padded rows of varied lengths, attention both ways
        task = get_task("reverse_string", n_train=6, n_test=8)
    cfg = ModelConfig.for_task(task, d_model=16, n_layers=2, n_heads=2, seed=1)
    weights, models = [], []
    for unpad in (False, True):
        model = build_transformer(cfg, device="cpu")
        train_cfg = TrainConfig(
            steps=15,
            batch_size=8,
            train_pool=100,
            eval_every=0,
            checkpoint_every=0,
            log_every=5,
            device="cpu",
            unpad=unpad,
        )
        train(model, task, train_cfg, tmp_path / f"{unpad}", progress=False)
        weights.append(native_params(model))
        models.append(model)
    for name, w in weights[0].items():
        if name.endswith("attn.k.bias"):
            # Its exact gradient is zero (it shifts all of a query's scores equally), so Adam
            # turns the two paths' different float noise into different steps; it has no
            # effect on the function, which is compared below.
            continue
        torch.testing.assert_close(weights[1][name], w, atol=1e-5, rtol=1e-4, msg=name)
    tokens = torch.randint(0, len(task.vocab), (4, 8))
    with torch.no_grad():
        torch.testing.assert_close(models[1](tokens), models[0](tokens), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kw", [CONFIGS[0], CONFIGS[11], CONFIGS[13], CONFIGS[-1]], ids=_ids)
def test_grouped_attention_of_a_ragged_batch_equals_the_padded_forward(kw):
    # 13 rows of lengths 1..10 in a random order: the rows fall into groups of different
    # widths, and the logits come back in the caller's order of real tokens.
    model = _model(**kw)
    spec, params = fused_spec(model), native_params(model)
    gen = torch.Generator().manual_seed(11)
    lengths = torch.randint(1, 11, (13,), generator=gen)
    tokens = torch.randint(0, 11, (13, 10), generator=gen)
    mask = torch.arange(10)[None, :] < lengths[:, None]
    keep = mask.flatten().nonzero().squeeze(1)
    padded = fused_logits(spec, params, tokens, mask)[mask]
    packed = fused_logits(spec, params, tokens, mask, keep=keep)
    torch.testing.assert_close(packed, padded, atol=1e-6, rtol=1e-5)
    weights = torch.randn(padded.shape, generator=gen)
    _assert_grads_close(
        _grads((packed * weights).sum(), params), _grads((padded * weights).sum(), params)
    )
