"""SAELens-layout files: exact round trip, cfg.json fields, and files we did not write."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import hierlens.sae as hsae
from hierlens.sae import (
    BatchTopKSAE,
    JumpReLUSAE,
    MatchingPursuitSAE,
    ReluSAE,
    TopKSAE,
)


def _perturb(sae, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in sae.tensor_names:
            t = getattr(sae, name)
            t.add_(torch.randn(t.shape, generator=g).to(t.dtype) * 0.1)
    return sae


ALL = [
    lambda: ReluSAE(
        5, 12, l1_coefficient=0.2, hook_name="blocks.1.hook_resid_post", seed=3, device="cpu"
    ),
    lambda: TopKSAE(
        5,
        12,
        k=3,
        k_aux=4,
        aux_coefficient=0.05,
        hook_name="blocks.0.hook_mlp_out",
        device="cpu",
    ),
    lambda: BatchTopKSAE(5, 12, k=2, topk_threshold_lr=0.2, dtype="float64", device="cpu"),
    lambda: JumpReLUSAE(
        5, 12, l0_coefficient=0.3, bandwidth=0.05, init_threshold=0.02, device="cpu"
    ),
    lambda: MatchingPursuitSAE(
        5,
        12,
        k=4,
        residual_threshold=0.1,
        max_iterations=7,
        stop_on_duplicate_support=True,
        apply_b_dec_to_input=True,
        device="cpu",
    ),
]


@pytest.mark.parametrize("make", ALL)
def test_round_trip_is_exact(tmp_path, make):
    sae = _perturb(make())
    sae.save(tmp_path / "s")
    back = hsae.load_sae(tmp_path / "s", device="cpu")
    assert type(back) is type(sae)
    assert back.cfg == sae.cfg
    for name in sae.tensor_names:
        a, b = getattr(sae, name), getattr(back, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name
    x = torch.randn(7, 5, dtype=sae.dtype)
    assert torch.equal(sae.encode(x), back.encode(x))
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    for key in (
        "architecture",
        "d_in",
        "d_sae",
        "dtype",
        "hook_name",
        "apply_b_dec_to_input",
        "normalize_activations",
        "metadata",
    ):
        assert key in cfg, key
    assert cfg["architecture"] == sae.architecture
    assert cfg["d_in"] == 5 and cfg["d_sae"] == 12
    assert cfg["metadata"]["hook_name"] == sae.cfg.hook_name
    with open(tmp_path / "s" / "sae_weights.safetensors", "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    names = set(header) - {"__metadata__"}
    assert {"W_enc", "W_dec", "b_enc", "b_dec"} <= names
    assert header["W_enc"]["shape"] == [5, 12] and header["W_dec"]["shape"] == [12, 5]
    if isinstance(sae, (TopKSAE, MatchingPursuitSAE)):
        assert cfg["k"] == sae.cfg.k
    if isinstance(sae, TopKSAE):
        assert cfg["activation_fn_kwargs"] == {"k": sae.cfg.k}
    if isinstance(sae, ReluSAE):
        assert cfg["l1_coefficient"] == 0.2 and cfg["hook_layer"] == 1
    if isinstance(sae, (JumpReLUSAE, BatchTopKSAE)):
        assert "threshold" in names


def _write_foreign(path, cfg, tensors):
    path.mkdir(parents=True)
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, str(path / "sae_weights.safetensors")
    )


def test_load_handwritten_saelens_files(tmp_path):
    g = torch.Generator().manual_seed(0)
    d_in, d_sae = 4, 10
    W_enc = torch.randn(d_in, d_sae, generator=g)
    W_dec = torch.randn(d_sae, d_in, generator=g)
    b_enc = torch.randn(d_sae, generator=g) * 0.1
    b_dec = torch.randn(d_in, generator=g) * 0.1
    threshold = torch.rand(d_sae, generator=g)
    x = torch.randn(6, d_in, generator=g)
    pre = (x - b_dec) @ W_enc + b_enc

    # a v5-style "standard" SAE: top-level hook_name, torch-prefixed dtype
    _write_foreign(
        tmp_path / "std",
        {
            "architecture": "standard",
            "d_in": d_in,
            "d_sae": d_sae,
            "dtype": "torch.float32",
            "hook_name": "blocks.0.hook_resid_pre",
            "apply_b_dec_to_input": True,
            "normalize_activations": "none",
            "model_name": "x",
            "context_size": 128,
        },
        {"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec},
    )
    std = hsae.load_sae(tmp_path / "std", device="cpu")
    assert isinstance(std, ReluSAE) and std.cfg.hook_name == "blocks.0.hook_resid_pre"
    torch.testing.assert_close(std.encode(x), torch.relu(pre))
    torch.testing.assert_close(std.reconstruct(x), torch.relu(pre) @ W_dec + b_dec)

    # a v6-style TopK SAE: hook name in metadata, k in activation_fn_kwargs
    _write_foreign(
        tmp_path / "topk",
        {
            "architecture": "topk",
            "d_in": d_in,
            "d_sae": d_sae,
            "dtype": "float32",
            "activation_fn_kwargs": {"k": 2},
            "metadata": {"hook_name": "blocks.1.hook_resid_post"},
        },
        {"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec},
    )
    tk = hsae.load_sae(tmp_path / "topk", device="cpu")
    assert (
        isinstance(tk, TopKSAE) and tk.cfg.k == 2 and tk.cfg.hook_name == "blocks.1.hook_resid_post"
    )
    ref = torch.zeros_like(pre)
    for n in range(pre.shape[0]):
        top = sorted(range(d_sae), key=lambda j: -pre[n, j].item())[:2]
        for j in top:
            ref[n, j] = max(pre[n, j].item(), 0.0)
    torch.testing.assert_close(tk.encode(x), ref)

    # a JumpReLU SAE without apply_b_dec_to_input
    _write_foreign(
        tmp_path / "jr",
        {
            "architecture": "jumprelu",
            "d_in": d_in,
            "d_sae": d_sae,
            "dtype": "float32",
            "apply_b_dec_to_input": False,
        },
        {"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec, "threshold": threshold},
    )
    jr = hsae.load_sae(tmp_path / "jr", device="cpu")
    pre_nc = x @ W_enc + b_enc
    torch.testing.assert_close(
        jr.encode(x), torch.where(pre_nc > threshold, pre_nc, torch.zeros(()))
    )


def test_bad_files_raise_clearly(tmp_path):
    t = {
        "W_enc": torch.zeros(4, 10),
        "W_dec": torch.zeros(10, 4),
        "b_enc": torch.zeros(10),
        "b_dec": torch.zeros(4),
    }
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        hsae.load_sae(tmp_path / "nothing")
    for name, cfg, match in [
        ("arch", {"architecture": "gatted", "d_in": 4, "d_sae": 10}, "gated|architecture"),
        ("shape", {"architecture": "standard", "d_in": 4, "d_sae": 11}, "shape"),
        ("thr", {"architecture": "jumprelu", "d_in": 4, "d_sae": 10}, "threshold"),
        ("k", {"architecture": "topk", "d_in": 4, "d_sae": 10}, "'k'"),
        (
            "norm",
            {
                "architecture": "standard",
                "d_in": 4,
                "d_sae": 10,
                "normalize_activations": "layer_norm",
            },
            "normalize_activations",
        ),
    ]:
        _write_foreign(tmp_path / name, cfg, t)
        with pytest.raises(ValueError, match=match):
            hsae.load_sae(tmp_path / name, device="cpu")
    (tmp_path / "trunc").mkdir()
    (tmp_path / "trunc" / "cfg.json").write_text(
        '{"architecture": "standard", "d_in": 4, "d_sae": 10}'
    )
    (tmp_path / "trunc" / "sae_weights.safetensors").write_bytes(b"\x10\x00\x00")
    with pytest.raises(ValueError, match="sae_weights.safetensors"):
        hsae.load_sae(tmp_path / "trunc", device="cpu")
