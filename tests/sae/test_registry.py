"""The SAE registry, config-built constructors, grid names, SAETrainConfig, renamed names, the
SAELens 6 metadata of saved files, and the import structure of the package."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest
import torch

import hierlens.sae as hsae
from hierlens.sae import (
    SAE,
    BatchTopKSAE,
    JumpReLUSAE,
    MatchingPursuitSAE,
    ReluSAE,
    SAETrainConfig,
    TopKSAE,
    TopKSAEConfig,
    grid_name,
    sae_class,
    train_saes,
)

SAE_DIR = Path(hsae.__file__).parent


def test_registry_names_and_aliases():
    assert sorted(SAE.registry) == [
        "batch_topk",
        "jumprelu",
        "matryoshka_batchtopk",
        "mp",
        "relu",
        "topk",
    ]
    expect = {
        "topk": TopKSAE,
        "TopKSAE": TopKSAE,
        "batch_topk": BatchTopKSAE,
        "batchtopk": BatchTopKSAE,
        "mp": MatchingPursuitSAE,
        "matching_pursuit": MatchingPursuitSAE,
        "relu": ReluSAE,
        "standard": ReluSAE,
        "jumprelu": JumpReLUSAE,
    }
    for name, cls in expect.items():
        assert sae_class(name) is cls, name
    with pytest.raises(ValueError, match=r"unknown architecture 'gated'.*batch_topk.*topk"):
        sae_class("gated")
    with pytest.raises(ValueError, match="already registered"):

        class Again(SAE, name="other", aliases=("topk",)):
            pass


def test_constructors_take_the_config_defaults():
    sae = TopKSAE(64, 256, k=4, device="cpu")
    assert sae.cfg == TopKSAEConfig(d_in=64, d_sae=256, k=4)
    assert ReluSAE(64, 256, l1_coefficient=3e-3, device="cpu").cfg.l1_coefficient == 3e-3
    for cls in SAE.registry.values():
        built = cls(8, 64, device="cpu").cfg
        assert built == cls.config_class(d_in=8, d_sae=64), cls.__name__
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['kk'\]"):
        TopKSAE(8, 16, kk=2)


def test_grid_names_read_unambiguously():
    assert grid_name("topk", 64, 8) == "topk_w64_k8"
    assert grid_name("TopKSAE", 64, 8) == "topk_w64_k8"
    assert grid_name("relu", 64, 0.01) == "relu_w64_l1c0.01"
    assert grid_name("jumprelu", 32, 0.5) == "jumprelu_w32_l0c0.5"
    assert grid_name("batchtopk", 16, 2) == "batch_topk_w16_k2"
    grid, skipped = hsae.build_sae_grid(
        ["mp", "relu"], 4, [2, 8], ks=[4], coefficients=[0.1], device="cpu", seed=3
    )
    assert sorted(grid) == ["mp_w8_k4", "relu_w2_l1c0.1", "relu_w8_l1c0.1"]
    assert skipped == ["mp_w2_k4: k=4 > width=2"]
    assert all(s.cfg.seed == 3 for s in grid.values())
    with pytest.raises(ValueError, match="needs sparsity coefficients"):
        hsae.build_sae_grid(["relu"], 4, [8], ks=[2])


def test_train_config_round_trip_and_checks():
    cfg = SAETrainConfig(steps=5, lr=(1e-3, 2e-3), betas=(0.8, 0.9), device="cpu")
    assert SAETrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert SAETrainConfig(tokens=10, batch_size=4).total_steps == 3
    with pytest.raises(ValueError, match="exactly one"):
        SAETrainConfig(steps=2, tokens=4)
    with pytest.raises(ValueError, match="decay_fraction"):
        SAETrainConfig(decay_fraction=2.0)
    with pytest.raises(ValueError, match="batch_size"):
        SAETrainConfig(batch_size=0)


def test_keywords_and_config_train_identically():
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(0))

    def make():
        return [TopKSAE(6, 12, k=2, seed=1, device="cpu"), ReluSAE(6, 12, seed=2, device="cpu")]

    a, b = make(), make()
    res_a = train_saes(a, x, steps=4, batch_size=16, lr=1e-2, device="cpu", progress=False)
    config = SAETrainConfig(steps=4, batch_size=16, lr=1e-2, device="cpu")
    res_b = train_saes(b, x, config=config, progress=False)
    assert res_a.config == res_b.config == config
    assert isinstance(res_a, hsae.SAETrainResult)
    for s, t in zip(a, b):
        for name in s.tensor_names:
            assert torch.equal(getattr(s, name), getattr(t, name))
    with pytest.raises(TypeError, match="unknown argument"):
        train_saes(make(), x, steps=1, learning_rate=1e-3)


def test_renamed_public_names():
    import hierlens.models as models
    import hierlens.sae.mdl_select as mdl_select

    assert not hasattr(hsae, "TrainResult")  # renamed SAETrainResult, no alias
    import hierlens.sae.checkpoint as ckpt

    assert models.TrainResult is not hsae.SAETrainResult
    assert not hasattr(ckpt, "save_checkpoint") and not hasattr(ckpt, "load_checkpoint")
    assert callable(ckpt.save_trainer_checkpoint) and callable(ckpt.load_trainer_checkpoint)
    assert not hasattr(mdl_select, "fit_mdl_sae")  # it lives in hierlens.sae.mdl_fit


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions (relative names kept)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            out.add(base)
            out.update(f"{base}.{a.name}" if not node.module else base for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_base_does_not_import_files():
    imported = _imported_modules(SAE_DIR / "base.py")
    assert not {m for m in imported if m in (".files", "hierlens.sae.files", "..files")}
    assert ".files" not in _imported_modules(SAE_DIR / "saelens_format.py")


# ----- SAELens 6 --------------------------------------------------------------------------------
# How SAELens 6 reads a folder (SAE.load_from_disk, handle_config_defaulting in
# sae_lens/loading/pretrained_sae_loaders.py, the config classes in sae_lens/saes/):
# 1. the version is cfg["sae_lens_version"], else cfg["metadata"]["sae_lens_version"]; a missing
#    one or one below 6.0.0 sends the file through the pre-6.0 conversion, which evaluates
#    `"hook_z" in cfg.get("hook_name", "")` and fails on a null hook name;
# 2. cfg["architecture"] must be an inference architecture it registers;
# 3. the config class takes its own fields from the top level (d_in, d_sae, dtype, device,
#    apply_b_dec_to_input, normalize_activations, reshape_activations; k for topk) and
#    builds its metadata from cfg["metadata"] (a dict whose entries may be null);
# 4. the state dict must hold the architecture's tensors (threshold for jumprelu).
SAELENS6_ARCHITECTURES = {"standard", "gated", "topk", "jumprelu"}
SAELENS6_DTYPES = {"float32", "float64", "float16", "bfloat16"}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("-")[0].split(".")[:3])


def saelens6_reads(folder: Path) -> dict:
    """The config SAELens 6 would build from ``folder``, following the rules above; an
    AssertionError names the rule a file breaks."""
    cfg = json.loads((folder / "cfg.json").read_text())
    version = cfg.get("sae_lens_version") or (cfg.get("metadata") or {}).get("sae_lens_version")
    assert version and _version(version) >= (6, 0, 0), "read as a pre-6.0 file"
    assert cfg["architecture"] in SAELENS6_ARCHITECTURES, cfg["architecture"]
    assert isinstance(cfg["d_in"], int) and isinstance(cfg["d_sae"], int)
    assert cfg["dtype"] in SAELENS6_DTYPES
    assert cfg.get("normalize_activations", "none") == "none"
    assert cfg.get("reshape_activations", "none") in ("none", "hook_z")
    assert isinstance(cfg.get("metadata", {}), dict)
    if cfg["architecture"] == "topk":
        assert isinstance(cfg["k"], int)
    with open(folder / "sae_weights.safetensors", "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    need = {"W_enc", "b_enc", "W_dec", "b_dec"}
    if cfg["architecture"] == "jumprelu":
        need.add("threshold")
        assert header["threshold"]["shape"] == [cfg["d_sae"]]
    assert need <= set(header)
    return cfg


@pytest.mark.parametrize("hook_name", [None, "blocks.0.hook_resid_post"])
@pytest.mark.parametrize("arch", ["topk", "batch_topk", "relu", "jumprelu"])
def test_saved_files_follow_saelens6_rules(tmp_path, arch, hook_name):
    cls = sae_class(arch)
    knob = {cls.grid_knob: 2 if cls.grid_knob == "k" else 0.1}
    sae = cls(5, 12, hook_name=hook_name, device="cpu", **knob)
    sae.save(tmp_path / "s")
    cfg = saelens6_reads(tmp_path / "s")
    assert cfg["metadata"]["hook_name"] == hook_name
    assert type(hsae.load_sae(tmp_path / "s", device="cpu")) is type(sae)


def test_batch_topk_inference_is_the_jumprelu_saelens_reads(tmp_path):
    """A BatchTopK file says jumprelu: its inference codes are relu(pre) * (pre > theta)."""
    sae = BatchTopKSAE(5, 12, k=2, device="cpu")
    with torch.no_grad():
        sae.threshold.fill_(0.05)
        sae.b_enc.normal_(generator=torch.Generator().manual_seed(0))
    x = torch.randn(9, 5)
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    ref = torch.relu(pre) * (pre > sae.threshold)
    torch.testing.assert_close(sae.encode(x), ref)
    sae.save(tmp_path / "b")
    assert saelens6_reads(tmp_path / "b")["architecture"] == "jumprelu"


def test_config_fields_have_parameter_docs():
    from hierlens.analysis.cli.common import config_field_docs

    docs = config_field_docs(SAETrainConfig)
    assert set(docs) == {f.name for f in dataclasses.fields(SAETrainConfig)}
