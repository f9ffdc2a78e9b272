import json

import pytest

from hierlens.analysis.pipeline import DEMO_CONFIG, PipelineConfig, load_config, run
from hierlens.models.run import Run
from tests.tiny_configs import analysis_sections

TINY = {
    "name": "tiny",
    "task": {"name": "dyck", "params": {"max_depth": 4, "min_length": 4, "max_length": 10}},
    "model": {"d_model": 16, "n_layers": 2, "n_heads": 2},
    "train": {
        "steps": 20,
        "batch_size": 8,
        "warmup_steps": 2,
        "eval_every": 10,
        "eval_n": 16,
        "checkpoint_every": 10,
        "train_pool": 100,
        "device": "cpu",
    },
    "capture": {"hooks": ["blocks.*.hook_resid_post"], "n": 24},
    **analysis_sections("blocks.1.hook_resid_post", ["topk", "relu"]),
}


def _with(section, **changes):
    cfg = json.loads(json.dumps(TINY))
    cfg[section] = {**cfg[section], **changes} if isinstance(cfg[section], dict) else changes
    return cfg


@pytest.mark.parametrize(
    "config, match",
    [
        ({**TINY, "trian": {}}, "did you mean 'train'"),
        (_with("train", stpes=3), r"\[train\].*did you mean 'steps'"),
        (_with("task", name="dyk"), r"\[task\].*did you mean 'dyck'"),
        (_with("model", d_vocab=3), r"\[model\] d_vocab comes from the task"),
        (_with("sae", ks=[32]), r"\[sae\].*exceeds every width"),
        (_with("sae", architectures=["topk", "gated"]), r"\[sae\].*unknown \['gated'\]"),
        (_with("tree", layer=0), r"tree.layer .*layer 0, the embeddings"),
        ({k: v for k, v in TINY.items() if k != "name"}, "name"),
    ],
)
def test_config_errors_are_clear(config, match):
    with pytest.raises(ValueError, match=match):
        load_config(config)


def test_toml_and_json_configs(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text(
        'name = "x"\n[task]\nname = "dyck"\n[train]\nsteps = 7\n[sae]\nwidths = [8, 16]\nks = [2]\n'
    )
    cfg = load_config(toml)
    assert cfg.train.steps == 7 and cfg.sae.widths == (8, 16)
    (tmp_path / "c.json").write_text(json.dumps(TINY))
    assert load_config(tmp_path / "c.json").to_dict()["sae"]["widths"] == [8, 16]
    (tmp_path / "bad.toml").write_text("name = \n")
    with pytest.raises(ValueError, match="cannot parse"):
        load_config(tmp_path / "bad.toml")
    assert isinstance(load_config(DEMO_CONFIG), PipelineConfig)


def test_bad_hook_and_label_fail_before_training(tmp_path):
    with pytest.raises(ValueError, match="closest"):
        run(
            {**_with("capture", hooks=["blocks.*.hook_resid_postt"]), "out_dir": str(tmp_path)},
            progress=False,
        )
    with pytest.raises(ValueError, match=r"\[probes\] unknown label"):
        run({**_with("probes", labels=["colour"]), "out_dir": str(tmp_path)}, progress=False)
    n_layers = TINY["model"]["n_layers"]  # a tracked layer the model lacks
    with pytest.raises(ValueError, match="layer out of range"):
        run({**_with("tree", layer=n_layers + 1), "out_dir": str(tmp_path)}, progress=False)
    assert not (tmp_path / "tiny").exists()


def test_end_to_end_and_resume_skips_finished_stages(tmp_path):
    cfg = {**TINY, "out_dir": str(tmp_path)}
    run_dir = run(cfg, progress=False)
    layout = Run(run_dir)
    table = [json.loads(x) for x in layout.sae_table_path.read_text().splitlines()]
    assert {r["name"] for r in table} == {
        "topk_w8_k2",
        "topk_w16_k2",
        "relu_w8_l1c0.01",
        "relu_w16_l1c0.01",
    }
    assert all(r["fvu"] >= 0 for r in table)
    assert all(r["fvu_train"] >= 0 and r["fvu_heldout"] >= 0 for r in table)
    assert set(layout.sae_dirs()) == {r["name"] for r in table}
    probes = layout.probe_results_path.read_text().splitlines()
    assert len(probes) == 2 * 2  # 2 hooks x 2 ks for the binary label
    tracking = layout.tracking_path.read_text().splitlines()
    assert len(tracking) == 2
    stamps = {
        p: p.stat().st_mtime_ns
        for p in [
            *layout.saes_dir.glob("*/sae_weights.safetensors"),
            layout.probe_results_path,
            layout.tracking_path,
            layout.checkpoint_dir(20) / "model.safetensors",
        ]
    }
    run(cfg, progress=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_sae_stage_trains_on_the_configured_device(tmp_path, monkeypatch):
    """The SAE stage used to train on the CPU whatever [train] device said."""
    import torch

    from hierlens.analysis.pipeline import stages
    from hierlens.sae import grid_train

    class Stop(Exception):
        pass

    seen = {}

    def fake_train(saes, acts, **kwargs):
        config = kwargs.get("config")
        seen["device"] = config.device if config is not None else kwargs.get("device")
        raise Stop

    class Store:
        hooks = ["blocks.1.hook_resid_post"]

        def __getitem__(self, hook):
            return torch.randn(40, 16)

    monkeypatch.setattr(grid_train, "train_saes", fake_train)
    for device, own in (("cuda:1", None), ("cuda:1", "cuda:2")):
        sae = {**TINY["sae"], **({"device": own} if own else {})}
        cfg = load_config({**TINY, "train": {**TINY["train"], "device": device}, "sae": sae})
        with pytest.raises(Stop):
            stages._sae_stage(cfg, tmp_path, Store(), progress=False)
        assert seen["device"] == (own or device)


def test_sae_section_is_flat_and_round_trips():
    cfg = load_config({**TINY, "out_dir": "x"})
    assert cfg.sae.train.steps == 5 and cfg.sae.train.batch_size == 32
    assert cfg.sae.train.lr == 1e-3  # the stage's own setting for short runs
    flat = cfg.to_dict()["sae"]
    assert flat["steps"] == 5 and "train" not in flat
    assert PipelineConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"\[sae\].*'stepz'"):
        load_config(_with("sae", stepz=3))


def test_seeds_train_fused_and_each_seed_gets_the_stages(tmp_path, caplog):
    import logging

    from hierlens.models import open_run

    cfg = {
        **TINY,
        "out_dir": str(tmp_path),
        "seeds": [0, 3],
        "sae": {**TINY["sae"], "enabled": False},
        "probes": {"enabled": False},
        "tree": {"enabled": False},
    }
    with caplog.at_level(logging.INFO, logger="hierlens.models.train_many"):
        root = run(cfg, progress=False)
    assert "2 model(s) in 1 stack(s)" in caplog.text
    assert root == tmp_path / "tiny"
    for s in (0, 3):
        r = open_run(root / f"seed{s}")
        assert r.steps == [10, 20]
        assert r.model_config.seed == s and r.train_config.seed == s
        assert Run(root / f"seed{s}").activations_dir(20).exists()
    with pytest.raises(ValueError, match="seed comes from seeds"):
        load_config({**cfg, "model": {**TINY["model"], "seed": 1}})
    with pytest.raises(ValueError, match="distinct"):
        load_config({**cfg, "seeds": [1, 1]})
