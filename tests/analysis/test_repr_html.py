"""Results show themselves in notebooks: ``_repr_html_`` parses as HTML and shows the
numbers it holds."""

from html.parser import HTMLParser

import torch

from hierlens.analysis.grokking import grokking_summary
from hierlens.analysis.report import show
from hierlens.models import ModelConfig, TrainConfig, build_transformer, get_task, train
from hierlens.models.capture import capture
from hierlens.sae import TopKSAE
from hierlens.sae.metrics import evaluate_sae


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.text, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def _parse(markup):
    p = _Text()
    p.feed(markup)
    p.close()
    assert "table" in p.tags or "svg" in p.tags or "div" in p.tags
    return " ".join(p.text)


def test_sae_evaluation_and_grokking_summary_show_their_numbers():
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    result = evaluate_sae(TopKSAE(d_in=8, d_sae=16, k=2), x)
    text = _parse(result._repr_html_())
    assert f"{result['l0']:.4g}" in text and f"{result['fvu']:.4g}" in text
    records = [
        {"step": 10, "main_metric": "accuracy", "test_id/accuracy": 0.99, "test_ood/accuracy": 0.2},
        {"step": 40, "main_metric": "accuracy", "test_id/accuracy": 1.0, "test_ood/accuracy": 0.85},
    ]
    text = _parse(grokking_summary(records)._repr_html_())
    assert "0.85" in text and "40" in text


def test_store_and_report_section(tmp_path):
    task = get_task("dyck", max_depth=4, max_length=12)
    mc = ModelConfig.for_task(task, d_model=16, n_layers=1, n_heads=2, d_mlp=32, seed=1)
    cfg = TrainConfig(
        steps=10,
        batch_size=8,
        log_every=5,
        eval_every=5,
        eval_n=8,
        eval_splits=("test_id",),
        checkpoint_every=10,
        train_pool=50,
        device="cpu",
    )
    model = build_transformer(mc, device="cpu")
    run_dir = tmp_path / "run"
    train(model, task, cfg, run_dir, progress=False)
    store = capture(
        model, task.sample(4, "test_id", 0), "blocks.0.hook_resid_post", batch_size=4, device="cpu"
    )
    text = _parse(store._repr_html_())
    assert "blocks.0.hook_resid_post" in text and str(store.n_tokens) in text
    section = show(run_dir, "summary")
    assert "dyck" in _parse(section._repr_html_())


def test_probe_records_and_projected_trees_show_themselves():
    import numpy as np

    from hierlens.analysis import tree_projection
    from hierlens.probes import probe_sweep

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    x[:, 2] += 3 * y  # one informative unit
    records = probe_sweep({"h": x}, {"lab": y}, ks=[1, 2], progress=False)
    assert isinstance(records, list) and records == list(records)  # still a plain list
    best = records.best()
    assert len(best) == 1 and best[0]["f1"] == max(r["f1"] for r in records)
    text = _parse(records._repr_html_())
    assert f"{best[0]['f1']:.4g}" in text and "lab" in text

    scores = np.array([[0, 1, 0.2, 0.1], [0, 0, 0.9, 0.3], [0, 0, 0, 0.1], [0, 0, 0, 0]], float)
    tree = tree_projection(scores)
    assert tree == tuple(tree) and ((0, 4) in tree)
    markup = tree._repr_html_()
    assert "<svg" in markup and _parse(markup).count("3") >= 1
