"""Notebook display: plotly.js comes once per notebook kernel (with the first section that
has charts), sections outside a notebook stay self-contained, and runs and SAEs show
themselves as HTML tables."""

from __future__ import annotations

import sys
import types
from html.parser import HTMLParser

import pytest

from hierlens.analysis.report import show
from hierlens.models import ModelConfig, Run, TrainConfig, build_transformer, get_task, train
from hierlens.sae import TopKSAE

#: a line of the plotly.js bundle's licence header: present once per copy of the library
MARK = "plotly.js v"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    task = get_task("dyck", max_depth=4, max_length=12)
    mc = ModelConfig.for_task(task, d_model=16, n_layers=1, n_heads=2, d_mlp=32, seed=1)
    cfg = TrainConfig(
        steps=10, batch_size=8, log_every=5, eval_every=5, eval_n=8,
        eval_splits=("test_id",), checkpoint_every=10, train_pool=50, device="cpu",
    )  # fmt: skip
    out = tmp_path_factory.mktemp("nb") / "run"
    train(build_transformer(mc, device="cpu"), task, cfg, out, progress=False)
    return out


@pytest.fixture
def kernel(monkeypatch):
    """A stand-in IPython module whose ``get_ipython()`` is one kernel's shell."""
    shell = types.SimpleNamespace()
    module = types.ModuleType("IPython")
    module.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", module)
    return module


def test_two_sections_in_a_notebook_bring_the_library_once(run_dir, kernel):
    first, second = show(run_dir, "training"), show(run_dir, "training")
    assert first.plotly and second.plotly  # both draw charts
    html1, html2 = first._repr_html_(), second._repr_html_()
    assert (html1 + html2).count(MARK) == 1 and MARK in html1
    # the second cell draws with the copy on the page, waiting for it if need be
    assert "window.Plotly" in html2 and "Plotly.newPlot" in html2
    assert len(html2) < 0.05 * len(html1)
    # chart ids differ between cells
    ids = [s.split('"', 1)[0] for s in html1.split('id="chart-')[1:]]
    assert ids and not any(f'id="chart-{i}"' in html2 for i in ids)
    # displayed again, even the first brings no second copy
    assert MARK not in first._repr_html_()
    # a restarted kernel (a new shell) gets the library again; library=True always does
    shell = types.SimpleNamespace()
    kernel.get_ipython = lambda: shell
    assert MARK in show(run_dir, "training")._repr_html_()
    assert MARK in show(run_dir, "training", library=True)._repr_html_()
    assert MARK not in show(run_dir, "training", library=False)._repr_html_()


def test_sections_outside_a_notebook_are_self_contained(run_dir, monkeypatch):
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    a, b = show(run_dir, "training"), show(run_dir, "training")
    assert MARK in a._repr_html_() and MARK in b._repr_html_()
    # an AMD loader on the page is hidden while the library runs
    assert "window.define=undefined" in a._repr_html_()
    # a section without charts carries no library
    summary = show(run_dir, "summary")
    assert not summary.plotly and MARK not in summary._repr_html_()


class _Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        if data.strip():
            self.cells.append(data.strip())


def _cells(markup: str) -> tuple[list[str], list[str]]:
    p = _Cells()
    p.feed(markup)
    return p.cells, p.tags


def test_run_and_sae_show_as_tables(run_dir, tmp_path):
    cells, tags = _cells(Run(run_dir)._repr_html_())
    assert "table" in tags
    row = dict(zip(cells[1::2], cells[2::2]))  # caption, then name/value pairs
    assert row["path"] == str(run_dir) and "dyck" in row["data"]
    assert row["checkpoints (steps)"] == "10" and "metrics.jsonl" in row["results"]
    assert "n_layers=1" in row["model"] and row["SAEs"] == "none"
    empty, _ = _cells(Run(tmp_path / "nothing")._repr_html_())
    assert any("no config.json" in c for c in empty)

    sae = TopKSAE(d_in=8, d_sae=16, k=2, hook_name="blocks.0.hook_resid_post", device="cpu")
    cells, tags = _cells(sae._repr_html_())
    assert "table" in tags and cells[0] == "TopKSAE (8 -> 16)"
    row = dict(zip(cells[1::2], cells[2::2]))
    assert row["architecture"] == "topk" and row["k"] == "2" and row["d_sae"] == "16"
    assert row["parameters"] == str(sum(p.numel() for p in sae.parameters()))
    assert row["hook_name"] == "blocks.0.hook_resid_post" and row["device"] == "cpu"
    assert "&lt;" in TopKSAE(d_in=4, d_sae=4, k=1, hook_name="<b>")._repr_html_()
