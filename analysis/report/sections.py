"""The sections of the run report, each read from the files of a run directory.

A section function takes a :class:`ReportContext` and returns the section's HTML body, or
``None`` when the stage that produces its inputs did not run (the section is then omitted).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hierlens.models.run import Run
from hierlens.models.tasks.base import Task

from ..grokking import grokking_summary, main_metric
from ..trees.draw import bracketing, tree_svg
from .html import Charts, esc, fmt, key_values, settings_note, table

SPLIT_NAMES = {"test_id": "in-domain (test_id)", "test_ood": "out-of-domain (test_ood)"}


@dataclass
class ReportContext:
    """What every section reads: the run, the chart collector and the report options."""

    run: Run
    charts: Charts
    max_sentences: int = 4
    max_saes: int = 4
    max_features: int = 3
    n_contexts: int = 5
    n_eval: int = 256
    seed: int = 0
    device: str | torch.device | None = None
    progress: bool = False
    _model: Any = field(default=None, repr=False)
    _vocab: list[str] | None = field(default=None, repr=False)

    @property
    def path(self) -> Path:
        return self.run.path

    @property
    def task(self) -> Task:
        return self.run.task

    def token_string(self, token: int) -> str:
        """The text of token id ``token``: the task's vocabulary, or a pretrained model's
        tokenizer."""
        if self._vocab is None:
            if self.run.is_pretrained:
                from hierlens.models.pretrained import load_tokenizer

                tok = load_tokenizer(self.run.config["pretrained"]["path"])
                self._vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
            else:
                self._vocab = list(self.task.vocab)
        vocab = self._vocab
        return str(vocab[token]) if 0 <= token < len(vocab) else str(token)

    def words(self, example: Any) -> list[str]:
        """The words of an example (a task's word tokens, or a corpus sentence's words)."""
        if "words" in example.labels:  # a corpus sentence's words (one may hold a space)
            return [str(w) for w in example.labels["words"]]
        if "sentence" in example.labels:  # a grammar task's words (vocabulary tokens)
            return str(example.labels["sentence"]).split(" ")
        return [self.token_string(example.tokens[p]) for p in example.word_positions]

    def examples(self, n: int) -> list[Any]:
        """``n`` example sentences of two words or more (a task's ``test_id`` split or a
        corpus's sentences without punctuation, as ``tree-score`` scores them by default),
        drawn with the report's seed."""
        if self.run.is_pretrained:
            pool = self.run.examples("all", None, self.seed, drop_punct=True)
            pool = [e for e in pool if len(e.word_positions) >= 2]
            return pool[:n]
        drawn = self.task.sample(4 * n, "test_id", self.seed)
        return [e for e in drawn if len(e.word_positions) >= 2][:n]

    def model(self) -> Any:
        """The model at the newest valid checkpoint (loaded once), or None without one."""
        if self._model is None and self.run.steps:
            self._model = self.run.load_model(device=self.device)
        return self._model


def _go():
    import plotly.graph_objects as go

    return go


# ----------------------------------------------------------------------------- summary
def summary_section(ctx: ReportContext) -> str:
    """Task, model and training configuration, checkpoints, final metrics."""
    run = ctx.run
    cfg = run.config
    if run.is_pretrained:
        from hierlens.models.pretrained import load_tokenizer

        from ..layer_numbering import LAYER_NUMBERING

        corpus = run.corpus
        tokenizer = load_tokenizer(cfg["pretrained"]["path"])
        names = run.label_names()
        facts = {
            "directory": str(run.path),
            "pretrained model": cfg["pretrained"]["path"],
            "corpus": corpus.path,
            "format": corpus.format,
            "sentences": len(corpus.read()),
            "punctuation": "dropped from the corpus for every stage"
            if corpus.drop_punct
            else "kept in the corpus (tree scores drop it unless told to keep it)",
            "special tokens": run.special_tokens.describe(tokenizer),
            "layer numbering": LAYER_NUMBERING,
            "label names": ", ".join(f"{k} ({len(v)})" for k, v in names.items()) or "not stored",
        }
        return "<h3>Run</h3>" + key_values(facts)
    task = cfg.get("task", {})
    parts = [
        "<h3>Run</h3>",
        key_values(
            {
                "directory": str(run.path),
                "task": task.get("name"),
                "checkpoints": ", ".join(str(s) for s in run.steps) or "none",
            }
        ),
    ]
    evals = [r for r in run.metrics() if r.get("split") in SPLIT_NAMES]
    if evals:
        last_step = max(r["step"] for r in evals)
        rows = [{**r} for r in evals if r["step"] == last_step]
        cols = ["split", "step"] + sorted({k for r in rows for k in r} - {"split", "step"})
        parts += [f"<h3>Final evaluation (step {fmt(last_step)})</h3>", table(cols, rows)]
    tracking = ctx.run.read_records(ctx.run.tracking_path)
    if tracking and any(str(k).startswith("test_id/") for k in tracking[0]):
        try:
            summary = grokking_summary(tracking)
            parts += ["<h3>Grokking summary</h3>", key_values(summary.to_dict())]
        except ValueError as err:  # records without accuracies
            parts.append(f'<p class="note">{esc(err)}</p>')
    parts += ["<h3>Task parameters</h3>", key_values(task.get("params", {}))]
    parts += ["<h3>Model</h3>", key_values(cfg.get("model", {}))]
    if "train" in cfg:
        parts += ["<h3>Training</h3>", key_values(cfg["train"])]
    return "".join(parts)


# ----------------------------------------------------------------------------- training
def training_section(ctx: ReportContext) -> str | None:
    """Training loss and evaluation loss/accuracy curves from ``metrics.jsonl``."""
    records = [] if ctx.run.is_pretrained else ctx.run.metrics()
    if not records:
        return None
    go = _go()
    metric = main_metric(ctx.task)
    parts = []
    train = sorted((r for r in records if r.get("split") == "train"), key=lambda r: r["step"])
    loss = go.Figure()
    if train:
        loss.add_trace(
            go.Scatter(
                x=[r["step"] for r in train],
                y=[r.get("loss") for r in train],
                mode="lines",
                name="train loss",
            )
        )
    accuracy = go.Figure()
    for split, label in SPLIT_NAMES.items():
        ev = sorted((r for r in records if r.get("split") == split), key=lambda r: r["step"])
        if not ev:
            continue
        steps = [r["step"] for r in ev]
        loss.add_trace(
            go.Scatter(x=steps, y=[r.get("loss") for r in ev], mode="lines+markers", name=label)
        )
        accuracy.add_trace(
            go.Scatter(x=steps, y=[r.get(metric) for r in ev], mode="lines+markers", name=label)
        )
    if loss.data:
        loss.update_layout(title="Loss", xaxis_title="step", yaxis_title="cross-entropy")
        parts.append(f"<div>{ctx.charts.add(loss)}</div>")
    if accuracy.data:
        accuracy.update_layout(
            title=f"Accuracy ({esc(metric)})", xaxis_title="step", yaxis_range=[-0.02, 1.02]
        )
        parts.append(f"<div>{ctx.charts.add(accuracy)}</div>")
    if not parts:
        return None
    return f'<div class="grid">{"".join(parts)}</div>'


# ----------------------------------------------------------------------------- grokking
def grokking_section(ctx: ReportContext) -> str | None:
    """Accuracies, tree score and parse F1 over checkpoints (``tracking.jsonl``)."""
    records = sorted(ctx.run.read_records(ctx.run.tracking_path), key=lambda r: r["step"])
    if not records:
        return None
    go = _go()
    from plotly.subplots import make_subplots

    steps = [r["step"] for r in records]
    metric = records[0].get("main_metric") or main_metric(ctx.task)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for split, label in SPLIT_NAMES.items():
        key = f"{split}/{metric}"
        if any(key in r for r in records):
            fig.add_trace(
                go.Scatter(
                    x=steps, y=[r.get(key) for r in records], name=label, mode="lines+markers"
                ),
                secondary_y=False,
            )
    for key, name, dash, right in (
        ("parse_f1", "parse F1", "dot", False),
        ("tree_score", "tree score (right axis)", "dash", True),
    ):
        if any(key in r for r in records):
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=[r.get(key) for r in records],
                    name=name,
                    mode="lines+markers",
                    line=dict(dash=dash),
                ),
                secondary_y=right,
            )
    parts = []
    if fig.data:
        fig.update_layout(title=f"Over checkpoints ({esc(metric)})", xaxis_title="checkpoint step")
        fig.update_yaxes(title_text="accuracy / F1", range=[-0.02, 1.02], secondary_y=False)
        fig.update_yaxes(title_text="tree score", secondary_y=True)
        parts.append(f"<div>{ctx.charts.add(fig, height=380)}</div>")
    other = go.Figure()
    for key, name in (("param_norm", "parameter norm"), ("attention_entropy", "attention entropy")):
        if any(key in r for r in records):
            other.add_trace(
                go.Scatter(
                    x=steps, y=[r.get(key) for r in records], name=name, mode="lines+markers"
                )
            )
    if other.data:
        other.update_layout(title="Parameter norm and attention entropy", xaxis_title="step")
        parts.append(f"<div>{ctx.charts.add(other, height=380)}</div>")
    if not parts:
        return None
    return f'<div class="grid">{"".join(parts)}</div>'


# ----------------------------------------------------------------------------- span scores
def span_section(ctx: ReportContext) -> str | None:
    """Span-score heatmaps of example sentences with the projected and the gold tree."""
    if ctx.max_sentences < 1 or not ctx.run.steps:
        return None
    from ..trees.decode import tree_projection
    from ..trees.metrics import parse_f1
    from ..trees.spans import span_scores

    go = _go()
    model = ctx.model()
    examples = ctx.examples(ctx.max_sentences)
    if not examples or not all(e.tree for e in examples):
        return None
    scores = span_scores(model, examples, layer=-1, progress=ctx.progress)
    step = ctx.run.steps[-1]
    punct = " Punctuation is dropped, as tree-score scores sentences." * ctx.run.is_pretrained
    parts = [
        f'<p class="note">Checkpoint step {fmt(step)}, last layer; cell (i, j) is the score of '
        "the span of words i..j (Murty et al., 2023). Red nodes of the projected tree are "
        f"constituents of the gold tree.{punct}</p>"
    ]
    for k, (example, s) in enumerate(zip(examples, scores)):
        words = ctx.words(example)
        n = len(words)
        labels = [f"{i}:{w}" for i, w in enumerate(words)]
        z = [[float(s[i, j]) if j >= i else None for j in range(n)] for i in range(n)]
        fig = go.Figure(
            go.Heatmap(
                z=z,
                x=[esc(t) for t in labels],
                y=[esc(t) for t in labels],
                colorscale="Viridis",
                colorbar=dict(title="score"),
                hovertemplate="span %{y} .. %{x}<br>score %{z:.3f}<extra></extra>",
            )
        )
        fig.update_layout(
            title=f"Sentence {k + 1}",
            xaxis=dict(title="last word j", type="category"),
            yaxis=dict(title="first word i", type="category", autorange="reversed"),
        )
        projected = tree_projection(s, "greedy")
        gold = tuple(tuple(sp) for sp in example.tree)
        f1 = parse_f1([projected], [gold])
        shared = set(projected) & set(gold)
        trees = (
            f"<p>parse F1 against gold: <b>{fmt(f1)}</b></p>"
            f'<p>projected: <code class="br">{esc(bracketing(projected, words))}</code><br>'
            f'gold: <code class="br">{esc(bracketing(gold, words))}</code></p>'
            + tree_svg(projected, words, "projected tree", highlight=shared)
            + "<br>"
            + tree_svg(gold, words, "gold tree")
        )
        parts.append(
            f'<div class="grid"><div>{ctx.charts.add(fig, height=340 + 8 * n)}</div>'
            f"<div>{trees}</div></div>"
        )
    return "".join(parts)


# ----------------------------------------------------------------------------- probes
def probe_section(ctx: ReportContext) -> str | None:
    """Sparse-probe F1 against k, per hook (``probes/results.jsonl``)."""
    records = [r for r in ctx.run.read_records(ctx.run.probe_results_path) if "f1" in r]
    if not records:
        return None
    go = _go()
    names = ctx.run.label_names()
    # best selection method per (hook, feature, k)
    best: dict[tuple[str, str, int], float] = {}
    for r in records:
        key = (str(r["hook"]), feature_name(r, names), int(r["k"]))
        f1 = r["f1"] if r["f1"] is not None else float("nan")
        if key not in best or (math.isfinite(f1) and not f1 <= best[key]):
            best[key] = f1
    hooks = sorted({h for h, _, _ in best}, key=_hook_order)
    summary = go.Figure()
    per_hook = []
    for hook in hooks:
        by_feature: dict[str, dict[int, float]] = defaultdict(dict)
        for (h, feature, k), f1 in best.items():
            if h == hook:
                by_feature[feature][k] = f1
        ks = sorted({k for f in by_feature.values() for k in f})
        mean = [_nanmean([by_feature[f].get(k, float("nan")) for f in by_feature]) for k in ks]
        summary.add_trace(go.Scatter(x=ks, y=mean, name=esc(hook), mode="lines+markers"))
        fig = go.Figure()
        ranked = sorted(by_feature, key=lambda f: -_nan0(by_feature[f].get(ks[-1])))[:12]
        for feature in ranked:
            fks = sorted(by_feature[feature])
            fig.add_trace(
                go.Scatter(
                    x=fks,
                    y=[by_feature[feature][k] for k in fks],
                    name=esc(feature),
                    mode="lines+markers",
                )
            )
        fig.update_layout(
            title=f"{esc(hook)}: F1 vs k per feature",
            showlegend=True,
            xaxis=dict(title="k (neurons)", type="log", tickvals=ks),
            yaxis=dict(title="test F1", range=[-0.02, 1.02]),
        )
        note = "" if len(by_feature) <= 12 else f" (12 best of {len(by_feature)} features)"
        per_hook.append(f'<div>{ctx.charts.add(fig)}<p class="note">{esc(note)}</p></div>')
    note = _activation_settings(ctx)
    summary.update_layout(
        title="Mean F1 over features (best selection) vs k, per hook",
        showlegend=True,
        xaxis=dict(title="k (neurons)", type="log", tickvals=sorted({k for _, _, k in best})),
        yaxis=dict(title="test F1", range=[-0.02, 1.02]),
    )
    return f'{note}{ctx.charts.add(summary)}<div class="grid">{"".join(per_hook)}</div>'


def _activation_settings(ctx: ReportContext) -> str:
    """The settings of the activations the probes were fitted on (a pretrained run's frame
    of special tokens, and rows per word or per token from the newest store's manifest)."""
    from hierlens.models.pretrained import load_tokenizer
    from hierlens.models.store import read_manifest

    settings: dict[str, Any] = {}
    if ctx.run.is_pretrained:
        tokenizer = load_tokenizer(ctx.run.config["pretrained"]["path"])
        settings["special_tokens"] = ctx.run.special_tokens.describe(tokenizer)
        settings["punct"] = "dropped" if ctx.run.corpus.drop_punct else "kept"
    stores = ctx.run.activation_dirs()
    if stores:
        store = stores[max(stores)]
        pool = None
        if ctx.run.has(store / "manifest.json"):
            with ctx.run.confined():
                pool = (read_manifest(store).get("data") or {}).get("pool")
        settings["rows"] = f"one per word ({pool} of its tokens)" if pool else "one per token"
    return settings_note(settings)


def feature_name(record: dict[str, Any], names: dict[str, list[str]]) -> str:
    """A probe record's feature as the report and ``hierlens probe`` show it: ``pos=NN`` for the one-vs-rest problem of
    class 20 of ``pos`` when the run stores the names of ``pos``'s ids, else as recorded."""
    feature = str(record.get("feature", record.get("label", "?")))
    label, positive = record.get("label"), record.get("positive")
    vocab = names.get(label) if isinstance(label, str) else None
    named = vocab and isinstance(positive, int) and 0 <= positive < len(vocab)
    if named and feature == f"{label}={positive}":
        return f"{label}={vocab[positive]}"
    return feature


def _hook_order(hook: str) -> tuple:
    parts = hook.split(".")
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def _nan0(x: float | None) -> float:
    return 0.0 if x is None or not math.isfinite(x) else x


def _nanmean(values: list[float]) -> float:
    ok = [v for v in values if v is not None and math.isfinite(v)]
    return sum(ok) / len(ok) if ok else float("nan")


# ----------------------------------------------------------------------------- BP
def bp_section(ctx: ReportContext) -> str | None:
    """Model accuracy against exact belief propagation (tasks with a ``bp_accuracy``)."""
    if ctx.run.is_pretrained:
        return None
    task = ctx.task
    if not hasattr(task, "bp_accuracy") or not ctx.run.steps:
        return None
    go = _go()
    model = ctx.model()
    metric = main_metric(task)
    rows = []
    for split, label in SPLIT_NAMES.items():
        examples = task.sample(ctx.n_eval, split, ctx.seed + 7)
        acc = task.evaluate(model, split, examples=examples)[metric]
        bp = task.bp_accuracy(split, examples=examples)
        rows.append({"split": label, "model": acc, "belief propagation": bp, "n": len(examples)})
    fig = go.Figure(
        [
            go.Bar(x=[r["split"] for r in rows], y=[r["model"] for r in rows], name="model"),
            go.Bar(
                x=[r["split"] for r in rows],
                y=[r["belief propagation"] for r in rows],
                name="belief propagation (optimum)",
            ),
        ]
    )
    fig.update_layout(
        title=f"{esc(metric)}: model vs Bayes-optimal", barmode="group", yaxis_range=[0, 1.02]
    )
    return (
        f'<div class="grid"><div>{ctx.charts.add(fig)}</div><div>'
        f"{table(['split', 'model', 'belief propagation', 'n'], rows)}"
        f'<p class="note">Checkpoint step {fmt(ctx.run.steps[-1])}; the same {ctx.n_eval} '
        "examples per split for both.</p></div></div>"
    )
