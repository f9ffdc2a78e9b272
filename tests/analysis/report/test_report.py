"""The self-contained HTML report: sections from whatever a run directory holds, chart data
checked against the run's files by independent recomputation, no network references, escaping
of every data string, omitted sections and broken inputs."""

from __future__ import annotations

import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from hierlens import sae as S
from hierlens.analysis import write_report
from hierlens.analysis.grokking import track
from hierlens.analysis.trees.draw import bracketing, children
from hierlens.core.atomic_io import read_jsonl, write_checked_jsonl
from hierlens.models import (
    ActivationStore,
    ModelConfig,
    TrainConfig,
    build_transformer,
    capture_checkpoints,
    get_task,
    train,
)
from hierlens.models.run import Run
from hierlens.probes import probe_sweep
from hierlens.sae.mdl import description_length

HOOK = "blocks.0.hook_resid_post"
WIDTHS = (16, 32, 64)


def build_run(run: Path) -> Path:
    """A tiny but complete run directory: training, tracking, one activation store, three
    SAEs with a table of metrics and description lengths, and a probe sweep."""
    task = get_task("dyck", max_length=12)
    model = build_transformer(ModelConfig.for_task(task, d_model=16, n_layers=1, n_heads=2), "cpu")
    cfg = TrainConfig(
        steps=20, batch_size=8, warmup_steps=2, eval_every=10, eval_n=32, checkpoint_every=10,
        log_every=5, train_pool=100, device="cpu",
    )  # fmt: skip
    train(model, task, cfg, run, progress=False)
    track(run, n=8, n_trees=4, device="cpu", progress=False)
    store = capture_checkpoints(
        run, HOOK, steps=[20], n=40, batch_size=16, device="cpu", progress=False
    )[20]
    acts = store[HOOK]
    saes = [S.TopKSAE(16, w, k=4, hook_name=HOOK, seed=i) for i, w in enumerate(WIDTHS)]
    S.train_saes(saes, acts, steps=20, batch_size=64, device="cpu", progress=False)
    rows = []
    for sae in saes:
        name = f"topk_{sae.d_sae}"
        sae.save(Run(run).sae_dir(name))
        metrics = S.evaluate_sae(sae, acts)
        dl = description_length(sae, acts, bin_width=0.05)
        rows.append(
            {"name": name, "architecture": "topk", "d_sae": sae.d_sae, "k": 4,
             "fvu": metrics["fvu"], "l0": metrics["l0"], "dead": metrics["dead_fraction"],
             "description_length_bits": dl.bits}
        )  # fmt: skip
    write_checked_jsonl(Run(run).sae_table_path, rows)
    labels = {k: store.labels[k].numpy() for k in ("depth", "is_close")}
    probe_sweep(
        {HOOK: acts}, labels, ks=(1, 2, 4), device="cpu",
        out_path=Run(run).probe_results_path, progress=False,
    )  # fmt: skip
    return run


class _Parsed(HTMLParser):
    """Collects tags with their attributes and the text of every script element."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def parse(path: Path) -> _Parsed:
    p = _Parsed()
    p.feed(path.read_text())
    return p


def charts(parsed: _Parsed) -> list[dict]:
    """The plotly specifications embedded in the page, in page order."""
    out = []
    for text in parsed.scripts:
        m = re.match(
            r'document\.addEventListener\("DOMContentLoaded",function\(\)\{var s=(.*);Plotly\.newPlot\(',
            text,
            re.S,
        )
        if m:
            out.append(json.loads(m.group(1)))
    return out


def titles(specs: list[dict]) -> list[str]:
    return [str(s["layout"].get("title", {}).get("text", "")) for s in specs]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("report_run"))


@pytest.fixture(scope="module")
def report(run_dir):
    return write_report(run_dir, max_sentences=2)


def test_all_sections_and_no_network(report, run_dir):
    assert report == Run(run_dir).report_path == run_dir / "report.html"
    html = report.read_text()
    for anchor in ("summary", "training", "grokking", "trees", "saes", "probes"):
        assert f'<section id="{anchor}">' in html
    assert '<section id="bp">' not in html  # dyck has no belief propagation
    assert 'class="error"' not in html
    parsed = parse(report)
    # plotly.js inlined exactly once, no external script, stylesheet, image or frame
    assert sum(1 for s in parsed.scripts if "newPlot" in s and len(s) > 1_000_000) == 1
    for tag, attrs in parsed.tags:
        if tag == "a":  # only in-page links
            assert (attrs.get("href") or "").startswith("#"), attrs
            continue
        for name in ("src", "href", "data", "srcset", "poster", "action", "xlink:href"):
            assert name not in attrs, (tag, attrs)  # every resource is inline
    assert not re.search(
        r"<(script|img|iframe|link)[^>]+(src|href)\s*=\s*[\"']?https?:", html, re.I
    )
    assert "@import" not in html and "url(http" not in html
    specs = charts(parsed)
    assert len(specs) == html.count('<div class="chart"') and len(specs) >= 10


def test_training_and_grokking_charts_match_files(report, run_dir):
    specs = charts(parse(report))
    by_title = dict(zip(titles(specs), specs))
    metrics = read_jsonl(Run(run_dir).metrics_path)
    train_recs = sorted((r for r in metrics if r["split"] == "train"), key=lambda r: r["step"])
    loss = by_title["Loss"]["data"]
    trace = next(t for t in loss if t["name"] == "train loss")
    assert trace["x"] == [r["step"] for r in train_recs]
    np.testing.assert_allclose(trace["y"], [r["loss"] for r in train_recs])
    acc = next(s for t, s in by_title.items() if t.startswith("Accuracy"))
    ood = [r for r in metrics if r["split"] == "test_ood"]
    ood_trace = next(t for t in acc["data"] if "test_ood" in t["name"])
    assert ood_trace["y"] == [r["closing_acc"] for r in sorted(ood, key=lambda r: r["step"])]
    tracking = read_jsonl(Run(run_dir).tracking_path)
    grok = next(s for t, s in by_title.items() if t.startswith("Over checkpoints"))
    names = {t["name"]: t for t in grok["data"]}
    assert names["parse F1"]["y"] == [r["parse_f1"] for r in tracking]
    assert names["tree score (right axis)"]["y"] == [r["tree_score"] for r in tracking]
    assert names["tree score (right axis)"]["yaxis"] == "y2"


def test_span_heatmaps_and_trees(report, run_dir):
    from hierlens.analysis import span_scores
    from hierlens.models.run import open_run

    run = open_run(run_dir)
    task = run.task
    examples = [e for e in task.sample(8, "test_id", 0) if len(e.word_positions) >= 2][:2]
    model = run.load_model(device="cpu")
    # the heatmaps show span_scores of the newest checkpoint (whose numerics are tested in
    # test_tree_projection.py); here computed without batching across sentences
    parsed = parse(report)
    heat = [s for s in charts(parsed) if s["data"][0]["type"] == "heatmap"]
    assert len(heat) == 2
    expected = span_scores(model, examples, progress=False, batch_size=1)
    for spec, example, ref in zip(heat, examples, expected):
        z = spec["data"][0]["z"]
        n = len(example.word_positions)
        assert len(z) == n and all(len(row) == n for row in z)
        for i in range(n):
            for j in range(n):
                if j < i:
                    assert z[i][j] is None
                else:
                    assert z[i][j] == pytest.approx(float(ref[i, j]), abs=1e-5)
        words = [task.vocab[example.tokens[p]] for p in example.word_positions]
        assert spec["data"][0]["x"] == [f"{i}:{w}" for i, w in enumerate(words)]
        gold = bracketing(example.tree, words)
        assert f'gold: <code class="br">{gold}</code>' in report.read_text()
    assert report.read_text().count('<svg class="tree"') == 4


def test_tree_helpers_by_hand():
    tree = ((0, 4), (0, 2), (2, 4))
    assert children(tree, 4) == {
        (0, 4): [(0, 2), (2, 4)],
        (0, 2): [(0, 1), (1, 2)],
        (2, 4): [(2, 3), (3, 4)],
    }
    assert bracketing(tree, list("abcd")) == "[[a b] [c d]]"
    assert bracketing(((0, 3), (1, 3)), ["(", "(", ")"]) == "[( [( )]]"
    assert bracketing(((0, 3),), ["x", "y", "z"]) == "[x y z]"  # flat, non-binary
    assert bracketing(((0, 1),), ["w"]) == "w"


def test_sae_table_dl_curve_and_feature_cards(report, run_dir):
    html = report.read_text()
    specs = charts(parse(report))
    table_rows = read_jsonl(Run(run_dir).sae_table_path)
    dl = next(s for s in specs if s["layout"]["title"]["text"].startswith("Description length"))
    assert dl["data"][0]["x"] == list(WIDTHS)
    assert dl["data"][0]["y"] == [r["description_length_bits"] for r in table_rows]
    for row in table_rows:
        assert f"<td>{row['name']}</td>" in html
    # feature cards: the top latent of topk_16 and its top token, by a slow row-by-row loop
    store = ActivationStore.open(Run(run_dir).activations_dir(20))
    sae = S.load_sae(Run(run_dir).sae_dir("topk_16"), device="cpu")
    acts = store[HOOK].float()
    best = (-math.inf, -1, -1)
    for row in range(acts.shape[0]):
        pre = (acts[row] - sae.b_dec) @ sae.W_enc + sae.b_enc
        top = torch.topk(pre, 4)
        for value, latent in zip(top.values.tolist(), top.indices.tolist()):
            value = max(value, 0.0)
            if value > best[0]:
                best = (value, latent, row)
    value, latent, row = best
    card = html.split("<b>topk_16</b>", 1)[1]
    first = re.search(r"latent <b>(\d+)</b>.*?<div class=\"ctx\">([^:]+): (.*?)</div>", card, re.S)
    assert int(first.group(1)) == latent
    assert float(first.group(2)) == pytest.approx(value, rel=1e-2)
    vocab = get_task("dyck", max_length=12).vocab
    token = vocab[int(store.index["token"][row])]
    assert f"<mark>{token}</mark>" in first.group(3)
    hist = next(
        s for s in specs if s["layout"]["title"]["text"] == f"latent {latent}: non-zero activations"
    )
    with torch.no_grad():
        codes = sae.encode(acts)[:, latent]
    assert sorted(hist["data"][0]["x"]) == pytest.approx(
        sorted(codes[codes > 0].tolist()), rel=1e-5
    )


def test_sae_metrics_computed_when_there_is_no_table(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("table.jsonl", "report.html"))
    html = write_report(run, max_sentences=0, max_saes=0).read_text()
    header = re.search(r'<section id="saes">.*?<thead><tr>(.*?)</tr>', html, re.S).group(1)
    columns = re.findall(r"<th>(.*?)</th>", header)
    assert columns == ["name", "architecture", "hook_name", "d_sae", "k", "fvu", "l0", "dead"]
    assert "Description length" not in html and "Feature cards" not in html
    assert "no feature cards" not in html  # the stores exist; max_saes=0 asked for none
    store = ActivationStore.open(Run(run).activations_dir(20))
    x = store[HOOK].double().numpy()
    for width in WIDTHS:
        sae = S.load_sae(Run(run).sae_dir(f"topk_{width}"), device="cpu")
        row = re.search(rf"<tr><td>topk_{width}</td>(.*?)</tr>", html).group(1)
        cells = dict(zip(columns[1:], re.findall(r"<td>(.*?)</td>", row)))
        # reference: numpy, one row at a time
        W_enc, b_enc = (sae.W_enc.detach().double().numpy(), sae.b_enc.detach().double().numpy())
        W_dec, b_dec = (sae.W_dec.detach().double().numpy(), sae.b_dec.detach().double().numpy())
        sse, fired, active = 0.0, np.zeros(width, bool), 0
        for v in x:
            pre = (v - b_dec) @ W_enc + b_enc
            code = np.zeros(width)
            top = np.argsort(-pre)[:4]
            code[top] = np.maximum(pre[top], 0)
            sse += float(((code @ W_dec + b_dec - v) ** 2).sum())
            fired |= code > 0
            active += int((code > 0).sum())
        fvu = sse / float(((x - x.mean(0)) ** 2).sum())
        assert float(cells["fvu"]) == pytest.approx(fvu, rel=1e-3)
        assert float(cells["l0"]) == pytest.approx(active / len(x), rel=1e-3)
        assert float(cells["dead"]) == pytest.approx(1 - fired.mean(), abs=1e-3)
        assert cells["hook_name"] == HOOK and cells["d_sae"] == str(width)


def test_probe_chart_is_mean_of_best_selection(report, run_dir):
    records = read_jsonl(Run(run_dir).probe_results_path)
    spec = next(
        s for s in charts(parse(report)) if s["layout"]["title"]["text"].startswith("Mean F1")
    )
    trace = spec["data"][0]
    assert trace["name"] == HOOK
    for k, y in zip(trace["x"], trace["y"]):
        feats = {r["feature"] for r in records if r["k"] == k}
        best = [max(r["f1"] for r in records if r["k"] == k and r["feature"] == f) for f in feats]
        assert y == pytest.approx(sum(best) / len(best))


def test_data_strings_are_escaped(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("report.html"))
    evil = "</script><img src=http://evil.test/x.png onerror=alert(1)>&\"'"
    records = read_jsonl(Run(run).probe_results_path)
    for r in records:
        r["hook"], r["feature"] = evil + r["hook"], evil + r["feature"]
    write_checked_jsonl(Run(run).probe_results_path, records)
    rows = read_jsonl(Run(run).sae_table_path)
    rows[0]["architecture"] = evil
    rows.append({"name": evil, "d_sae": 8, "fvu": 0.5, "description_length_bits": 3.0})
    write_checked_jsonl(Run(run).sae_table_path, rows)
    (Run(run).sae_dir("topk_16")).rename(Run(run).saes_dir / "a<b>&'c\"")
    out = write_report(run, tmp_path / "out" / "r.html", max_sentences=0)
    html = out.read_text()
    assert out.parent.name == "out" and not Run(run).report_path.exists()
    assert "<img" not in html
    assert "alert(1)>" not in html  # escaped wherever it appears
    assert "a&lt;b&gt;&amp;&#x27;c&quot;" in html
    assert "&lt;/script&gt;&lt;img src=http://evil.test/x.png" in html  # table cell
    parsed = parse(out)
    assert not any(tag == "img" for tag, _ in parsed.tags)
    specs = charts(parsed)
    assert html.count("<script") == html.count("</script>") == len(specs) + 1  # + plotly.js
    names = [t.get("name", "") for s in specs for t in s["data"]]
    assert any(n.startswith("&lt;/script&gt;") for n in names)  # plotly shows the entity text
    assert '<section id="trees">' not in html


def test_sections_omitted_when_stages_did_not_run(run_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    Run(bare).write_config(Run(run_dir).config)
    html = write_report(bare).read_text()
    assert '<section id="summary">' in html
    assert html.count("<section") == 1 and "Plotly" not in html and "<script" not in html
    assert "dyck" in html
    # metrics only: summary and training curves, no model-dependent sections
    write_checked_jsonl(Run(bare).metrics_path, Run(run_dir).metrics())
    html = write_report(bare).read_text()
    assert re.findall(r'<section id="(\w+)">', html) == ["summary", "training"]
    # SAEs without activation stores: table without feature cards
    shutil.copytree(Run(run_dir).saes_dir, Run(bare).saes_dir)
    html = write_report(bare).read_text()
    assert '<section id="saes">' in html and "no feature cards" in html


def test_saes_in_the_older_grid_and_mdl_folders_are_reported(run_dir, tmp_path):
    """Runs written when ``fit-sae`` saved to ``saes/grid/`` and ``saes/mdl/`` still show
    those SAEs, with feature cards, next to ``saes/<name>/`` ones."""
    run = tmp_path / "old"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("report.html", "table.jsonl"))
    saes = Run(run).saes_dir
    (saes / "grid").mkdir()
    (saes / "mdl").mkdir()
    (saes / "topk_16").rename(saes / "grid" / "topk_16")
    (saes / "topk_32").rename(saes / "mdl" / "topk_32")
    assert set(Run(run).sae_dirs()) == {"topk_16", "topk_32", "topk_64"}
    html = write_report(run, max_sentences=0, max_saes=3).read_text()
    section = html.split('<section id="saes">', 1)[1].split("</section>", 1)[0]
    for name in ("topk_16", "topk_32", "topk_64"):
        assert f"<td>{name}</td>" in section
        assert f"<b>{name}</b> on <code>{HOOK}</code>" in section  # its feature cards


def test_broken_input_is_an_error_box_not_a_broken_report(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(
        run_dir, run, ignore=shutil.ignore_patterns("activations", "saes", "checkpoints")
    )
    path = Run(run).probe_results_path
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    html = write_report(run).read_text()
    assert html.count('class="error"') == 1
    probes = html.split('<section id="probes">', 1)[1]
    assert probes.split("</section>", 1)[0].count('class="error"') == 1
    assert '<section id="grokking">' in html and '<section id="training">' in html


def test_bad_arguments(run_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        write_report(tmp_path)
    with pytest.raises(ValueError, match="max_sentences"):
        write_report(run_dir, max_sentences=-1)
    with pytest.raises(ValueError, match="max_features"):
        write_report(run_dir, max_features=1.5)


def test_bp_comparison_for_hierarchical_filtering(tmp_path):
    task = get_task("hierarchical_filtering", q=3, depth=2)
    model = build_transformer(ModelConfig.for_task(task, d_model=16, n_layers=1, n_heads=2), "cpu")
    cfg = TrainConfig(steps=4, batch_size=8, warmup_steps=1, eval_every=2, eval_n=16,
                      checkpoint_every=4, log_every=2, train_pool=50, device="cpu")  # fmt: skip
    train(model, task, cfg, tmp_path, progress=False)
    html = write_report(tmp_path, max_sentences=1, seed=3).read_text()
    assert '<section id="bp">' in html and 'class="error"' not in html
    spec = next(s for s in charts(parse(tmp_path / "report.html")) if s["data"][0]["type"] == "bar")
    model = build_transformer(ModelConfig.for_task(task, d_model=16, n_layers=1, n_heads=2), "cpu")
    from hierlens.models.run import open_run

    model = open_run(tmp_path).load_model(device="cpu")
    for split, model_y, bp_y in zip(
        ("test_id", "test_ood"), spec["data"][0]["y"], spec["data"][1]["y"]
    ):
        examples = task.sample(256, split, 3 + 7)
        # reference: the BP argmax and the model's argmax over symbols, counted one by one
        post = task.posteriors(torch.tensor([e.tokens for e in examples]), split)
        correct_bp = sum(
            int(post.root[i].argmax()) + task.symbol_offset == e.targets[0]
            for i, e in enumerate(examples)
        )
        assert bp_y == pytest.approx(correct_bp / len(examples))
        with torch.no_grad():
            logits = model(torch.tensor([e.tokens for e in examples]))
        off = task.symbol_offset
        pred = logits[:, 0, off : off + task.q].argmax(-1) + off
        correct = sum(int(pred[i]) == e.targets[0] for i, e in enumerate(examples))
        assert model_y == pytest.approx(correct / len(examples))
