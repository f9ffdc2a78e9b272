"""Small models of every family and Dyck minimal pairs, shared by the causal tests."""

from __future__ import annotations

import pytest
import torch

from hierlens.models import ModelConfig, build_transformer, get_task
from hierlens.models.architectures import ArchConfig, build_model
from hierlens.models.tasks.variables import minimal_pairs

TASK = get_task("dyck", n_types=2, max_depth=4, min_length=4, max_length=12)


@pytest.fixture(scope="session")
def dyck_task():
    return TASK


@pytest.fixture(scope="session")
def top_pairs():
    return minimal_pairs(TASK, "stack_top", 3, seed=0)


def _native():
    cfg = ModelConfig.for_task(TASK, d_model=16, n_layers=2, n_heads=2, seed=1)
    return build_transformer(cfg, device="cpu").eval()


def _arch(arch: str):
    cfg = ArchConfig(arch=arch, vocab_size=len(TASK.vocab), d_model=12, memory_size=6,
                     memory_dim=4, seed=2)  # fmt: skip
    return build_model(cfg).eval()


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    from transformer_lens.model_bridge import TransformerBridge

    from tests.hf_folders import build_tiny_gpt2

    folder = build_tiny_gpt2(tmp_path_factory.mktemp("gpt2"))
    bridge = TransformerBridge.boot_transformers(str(folder), device="cpu", dtype=torch.float32)
    return bridge.eval()


@pytest.fixture(scope="session", params=["native", "lstm", "stack_rnn", "gpt2"])
def any_model(request):
    """``(name, model, hooks)`` for a TL-native transformer, an LSTM, a Stack-RNN and a
    tiny GPT-2 loaded through the bridge."""
    if request.param == "native":
        hooks = ["blocks.0.hook_resid_pre", "blocks.*.hook_resid_post", "blocks.1.attn.hook_z"]
        return "native", _native(), hooks
    if request.param == "gpt2":
        model = request.getfixturevalue("tiny_gpt2")
        return "gpt2", model, ["blocks.0.hook_resid_post", "blocks.0.attn.hook_z"]
    if request.param == "lstm":
        return "lstm", _arch("lstm"), ["hook_embed", "hook_hidden", "hook_cell"]
    return "stack_rnn", _arch("stack_rnn"), ["hook_embed", "hook_hidden", "hook_stack"]
