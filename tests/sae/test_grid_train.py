"""The one SAE-grid path: SAEGridConfig's k rule and train_sae_grid (build, train, save, table)."""

from __future__ import annotations

import logging

import pytest
import torch

from hierlens.core.atomic_io import read_jsonl
from hierlens.sae import (
    SAEGridConfig,
    SAETrainConfig,
    TopKSAE,
    grid_table,
    load_sae,
    train_sae_grid,
    train_saes,
)

CONFIG = SAETrainConfig(steps=6, batch_size=32, lr=3e-3, device="cpu", seed=2)


def _acts(n: int = 96, d: int = 6) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(0))


def test_k_above_a_width_is_skipped_with_a_warning_and_above_every_width_is_an_error(caplog):
    grid = SAEGridConfig(widths=(2, 8), architectures=("topk", "relu"), ks=(4,))
    with caplog.at_level(logging.WARNING, logger="hierlens.sae.grid"):
        saes, skipped = grid.build(6, device="cpu")
    assert sorted(saes) == ["relu_w2_l1c0.01", "relu_w8_l1c0.01", "topk_w8_k4"]
    assert skipped == ["topk_w2_k4: k=4 > width=2"] and "topk_w2_k4" in caplog.text
    with pytest.raises(ValueError, match="exceeds every width"):
        SAEGridConfig(widths=(2, 8), ks=(16, 32))
    # a penalised architecture alone does not use ks: no rule to break
    assert SAEGridConfig(widths=(2,), architectures=("relu",), ks=(16,)).values("relu") == (0.01,)
    with pytest.raises(ValueError, match="unknown"):
        SAEGridConfig(widths=(8,), architectures=("gated",))


def test_members_equal_saes_trained_alone_and_table_and_files(tmp_path):
    x = _acts()
    grid = SAEGridConfig(widths=(4, 8), ks=(1, 2))
    fit = train_sae_grid(
        grid,
        x,
        CONFIG,
        save_dir=tmp_path,
        table=lambda saes: grid_table(saes, x),
        table_path=tmp_path / "table.jsonl",
        progress=False,
        seed=CONFIG.seed,
    )
    assert fit.trained == ["topk_w4_k1", "topk_w4_k2", "topk_w8_k1", "topk_w8_k2"]
    alone = TopKSAE(6, 8, k=2, seed=2, device="cpu")
    train_saes([alone], x, config=CONFIG, progress=False)
    torch.testing.assert_close(fit.saes["topk_w8_k2"].W_dec, alone.W_dec, atol=1e-6, rtol=1e-5)
    rows = read_jsonl(tmp_path / "table.jsonl")
    assert [r["name"] for r in rows] == fit.trained == [r["name"] for r in fit.table]
    assert all(r["description_length_bits"] > 0 and r["fvu"] >= 0 for r in rows)
    torch.testing.assert_close(
        load_sae(tmp_path / "topk_w4_k1").W_dec, fit.saes["topk_w4_k1"].W_dec
    )


def _resume_trains_k2_only(grid, x, save_dir, **options):
    """Resume the (w4; k1, k2) grid in ``save_dir`` and check that it trains only
    ``topk_w4_k2`` and tabulates both members."""
    again = train_sae_grid(
        grid,
        x,
        CONFIG,
        save_dir=save_dir,
        resume=True,
        table=lambda saes: [{"name": n} for n in saes],
        progress=False,
        **options,
    )
    assert again.trained == ["topk_w4_k2"]
    assert [r["name"] for r in again.table] == ["topk_w4_k1", "topk_w4_k2"]


def test_resume_trains_only_the_missing_members_and_tabulates_all(tmp_path):
    x = _acts()
    grid = SAEGridConfig(widths=(4,), ks=(1, 2))
    first = train_sae_grid(
        grid, x, CONFIG, save_dir=tmp_path, members=["topk_w4_k1"], progress=False
    )
    assert first.trained == ["topk_w4_k1"] and first.table is None
    stamp = (tmp_path / "topk_w4_k1" / "sae_weights.safetensors").stat().st_mtime_ns
    _resume_trains_k2_only(grid, x, tmp_path)
    assert (tmp_path / "topk_w4_k1" / "sae_weights.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="no grid member"):
        train_sae_grid(grid, x, CONFIG, members=["topk_w4_k9"], progress=False)
    with pytest.raises(ValueError, match="needs save_dir"):
        train_sae_grid(grid, x, CONFIG, resume=True, progress=False)


def test_resume_trains_again_a_member_whose_save_was_cut_short(tmp_path):
    from hierlens.core.checksums import manifest_path

    x = _acts()
    grid = SAEGridConfig(widths=(4,), ks=(1, 2))
    train_sae_grid(grid, x, CONFIG, save_dir=tmp_path, progress=False, seed=CONFIG.seed)
    cut = tmp_path / "topk_w4_k2"
    (cut / "sae_weights.safetensors").unlink()  # killed after cfg.json, before the weights
    manifest_path(cut / "cfg.json").unlink()
    _resume_trains_k2_only(grid, x, tmp_path, seed=CONFIG.seed)
    load_sae(cut, device="cpu", verify=True)


def test_checkpoint_dir_resumes_the_grid_mid_run(tmp_path, monkeypatch, caplog):
    import hierlens.sae.train_stack as sae_train

    x = _acts()
    grid = SAEGridConfig(widths=(4, 8), ks=(2,))
    config = CONFIG.replace(steps=8, checkpoint_every=2)
    whole = train_sae_grid(
        grid, x, config, checkpoint_dir=tmp_path / "a", progress=False, seed=CONFIG.seed
    )
    real, saved = sae_train.save_trainer_checkpoint, []

    def killed_after_two(*args, **kwargs):
        real(*args, **kwargs)
        saved.append(args[1])
        if len(saved) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(sae_train, "save_trainer_checkpoint", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        train_sae_grid(grid, x, config, checkpoint_dir=tmp_path / "b", progress=False, seed=2)
    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="hierlens.sae.train_stack"):
        resumed = train_sae_grid(
            grid, x, config, checkpoint_dir=tmp_path / "b", progress=False, seed=CONFIG.seed
        )
    assert "resuming SAE training at step 4" in caplog.text
    for name, sae in whole.saes.items():
        torch.testing.assert_close(resumed.saes[name].W_dec, sae.W_dec, atol=0, rtol=0)
