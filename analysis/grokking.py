"""Structural grokking: evaluate every checkpoint of a run and summarise when it generalises.

After [Murty2023b]:
in-domain accuracy saturates early, out-of-domain accuracy rises much later, and the rise
goes with the model's computation becoming tree-structured (tree score, parse F1 of the tree
projection against the gold trees).

``track`` writes one record per checkpoint to ``run_dir/tracking.jsonl``; an interrupted
``track`` resumes (steps already recorded with the same settings are skipped). With
``compare=True`` (``hierlens track --compare true``) each record also says how far every
layer is from where it ends up (linear CKA to the final checkpoint) and how collapsed its
token representations are (rank-collapse residual), so one sees when representations settle.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from hierlens.core.atomic_io import append_jsonl, json_safe, read_jsonl, write_checked_jsonl
from hierlens.core.config import Config
from hierlens.core.device import model_device, resolve_device
from hierlens.core.loggers import scalars
from hierlens.core.trackers import MultiLogger, make_logger
from hierlens.core.validate import check_int
from hierlens.models.run import Run, open_run
from hierlens.models.run_layout import RECORD_SCHEMAS, TRACKING
from hierlens.models.run_lock import locks_run
from hierlens.models.tasks.base import Task, iter_batches

from .layer_numbering import LAYER_NUMBERING, block_of_layer, check_projected_layer
from .ray_backend import check_backend
from .trees.decode import tree_projection
from .trees.metrics import parse_f1, tree_score
from .trees.spans import span_scores

log = logging.getLogger(__name__)

__all__ = [
    "METRICS",
    "REPRESENTATION_METRICS",
    "TRACKING",
    "GrokkingSummary",
    "TrackConfig",
    "TrackFailed",
    "TrackSettings",
    "attention_entropy",
    "grokking_summary",
    "main_metric",
    "parameter_norm",
    "track",
    "track_record",
]

METRICS = ("accuracy", "tree_score", "parse_f1", "param_norm", "attention_entropy")
#: optional metrics of representations (``track(..., compare=True)`` adds both)
REPRESENTATION_METRICS = ("cka_to_final", "rank_collapse")


def main_metric(task: Task) -> str:
    """The name of the task's headline accuracy in :meth:`Task.evaluate` results."""
    return getattr(task, "main_metric", "") or "accuracy"


def parameter_norm(model: torch.nn.Module) -> float:
    """Euclidean norm of all parameters, concatenated."""
    return math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in model.parameters()))


def attention_entropy(
    model: torch.nn.Module, task: Task, examples: Sequence[Any], batch_size: int = 128
) -> float:
    """Mean entropy (nats) of the attention distributions of all heads, layers and real query
    positions, read from ``blocks.*.attn.hook_pattern``."""
    device = model_device(model)
    total = torch.zeros((), dtype=torch.float64)
    count = 0
    with torch.inference_mode():
        for batch in iter_batches(examples, batch_size, task.pad_id):
            batch = batch.to(device)
            kwargs = {}
            if getattr(model.cfg, "attention_dir", "causal") != "causal":
                kwargs["attention_mask"] = batch.attention_mask.long()
            _, cache = model.run_with_cache(
                batch.tokens, names_filter=lambda name: name.endswith("attn.hook_pattern"), **kwargs
            )
            rows = batch.attention_mask[:, None, :]  # (B, 1, T) real query positions
            for name in cache:
                p = cache[name].double()  # (B, H, T, T)
                h = -(torch.where(p > 0, p * p.log(), torch.zeros_like(p))).sum(-1)  # (B, H, T)
                total += (h * rows).sum().cpu()
                count += int(rows.sum()) * p.shape[1]
    return float(total) / max(count, 1)


@dataclass(frozen=True)
class TrackConfig(Config):
    """How :func:`track` evaluates the checkpoints of a run (the defaults of ``track`` and
    of ``hierlens track`` / ``hierlens sweep``).

    Parameters:
        n: examples per split for accuracy.
        n_trees: sentences for tree score and parse F1.
        tree_split: the split the tree sentences come from.
        layer: layer whose tree projection is scored, in the one layer numbering
            (:mod:`~hierlens.analysis.layer_numbering`: 1..n_blocks, layer ``l`` the output of
            block ``l - 1``; -1: the last), as ``hierlens tree-score --layer`` numbers it.
        seed: seed of the examples (the same at every checkpoint).
        compare: also record each layer's linear CKA to the final checkpoint and its
            rank-collapse residual.
        n_compare: sentences for the representation metrics (with compare).
    """

    n: int = 500
    n_trees: int = 100
    tree_split: str = "test_id"
    layer: int = -1
    seed: int = 4242
    compare: bool = False
    n_compare: int = 64

    def __post_init__(self) -> None:
        for name in ("n", "n_trees", "n_compare"):
            check_int(name, getattr(self, name))
        check_projected_layer("layer", self.layer)


@dataclass(frozen=True)
class TrackSettings(Config):
    """What a tracking record was computed with (a record is reused only if these match)."""

    n: int
    n_trees: int
    tree_split: str
    layer: int
    seed: int
    metrics: tuple[str, ...]
    n_compare: int | None = None
    reference_step: int | None = None

    def key(self) -> dict[str, Any]:
        out = {
            "n": self.n,
            "n_trees": self.n_trees,
            "tree_split": self.tree_split,
            "layer": self.layer,
            "layer_numbering": LAYER_NUMBERING,
            "seed": self.seed,
            "metrics": list(self.metrics),
        }
        if self.n_compare is not None:  # only with representation metrics (older keys stay)
            out["n_compare"] = self.n_compare
            out["reference_step"] = self.reference_step
        return out


@locks_run("run_dir")
def track(
    run_dir: str | os.PathLike,
    task: Task | None = None,
    *,
    steps: Sequence[int] | None = None,
    metrics: Sequence[str] = METRICS,
    n: int | None = None,
    n_trees: int | None = None,
    tree_split: str | None = None,
    layer: int | None = None,
    seed: int | None = None,
    compare: bool | None = None,
    n_compare: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    log_to: Sequence[str] = (),
    backend: str = "process",
    address: str | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
) -> list[dict[str, Any]]:
    """Evaluate checkpoints of a run; returns the records (also in ``run_dir/tracking.jsonl``).
    ``n``, ``n_trees``, ``tree_split``, ``layer``, ``seed``, ``compare`` and ``n_compare``
    left None take the defaults of :class:`TrackConfig`.

    Each record holds ``step`` and, per requested metric:

    - ``accuracy``: the task's metrics on ``test_id`` and ``test_ood`` (keys
      ``test_id/<metric>``, ``test_ood/<metric>``), ``n`` examples each;
    - ``tree_score`` / ``parse_f1``: span scores at ``layer`` for ``n_trees`` sentences
      of ``tree_split``, greedy tree projection, mean tree score and corpus parse F1 against
      the gold trees [Murty2023a];
    - ``param_norm``: parameter norm; ``attention_entropy``: mean attention entropy;
    - ``cka_to_final`` (:data:`REPRESENTATION_METRICS`; ``compare=True`` adds both): linear
      CKA [Kornblith2019] of every layer (the embedding ``blocks.0.hook_resid_pre``
      and each ``blocks.{i}.hook_resid_post``, listed in ``representation_hooks``) with the
      same layer of the run's final checkpoint, over every token of ``n_compare``
      ``test_id`` sentences: ``cka_to_final`` (one value per layer, 1 at the final step)
      and ``cka_to_final_matrix`` (layer of this step x layer of the final step);
    - ``rank_collapse``: ``rank_residual``, the mean relative residual of each layer from
      its best token-uniform rank-1 approximation over the same sentences [Dong2021].

    The same examples (drawn with ``seed``) are used at every step. Records with
    representation metrics name their reference (final) step in their settings, so a run
    that gained checkpoints is tracked again against its new final checkpoint.
    ``log_to``: experiment
    trackers (see :mod:`hierlens.core.loggers`) that get each new record's values as
    ``track/<metric>`` at its step.

    ``backend="ray"``: every checkpoint still to evaluate is one Ray task (``num_cpus`` /
    ``num_gpus`` each) on the cluster at ``address`` (``"auto"``, ``"HOST:PORT"``; None: a
    local Ray started in this process); the tasks return their records and this process,
    which holds the run's lock, writes them in the order of ``steps``, so ``tracking.jsonl``
    ends up as the sequential ``track`` writes it. A checkpoint whose task fails is reported;
    the others are written, then :class:`TrackFailed` names the failures.
    """
    given = dict(n=n, n_trees=n_trees, tree_split=tree_split, layer=layer, seed=seed,
                 compare=compare, n_compare=n_compare)  # fmt: skip
    cfg = TrackConfig(**{k: v for k, v in given.items() if v is not None})
    n, n_trees, tree_split, layer, seed = cfg.n, cfg.n_trees, cfg.tree_split, cfg.layer, cfg.seed
    compare, n_compare = cfg.compare, cfg.n_compare
    metrics = _check_track_options(backend, metrics, compare)
    run = open_run(run_dir)
    task = task or run.task
    available = run.steps
    steps = _checked_steps(run_dir, available, steps)
    if any(m in metrics for m in ("tree_score", "parse_f1")):
        block_of_layer(layer, run.model_config.n_layers)  # ValueError before any work
    dev = resolve_device(device)
    representations = [m for m in metrics if m in REPRESENTATION_METRICS]
    settings = TrackSettings(
        n=n,
        n_trees=n_trees,
        tree_split=tree_split,
        layer=layer,
        seed=seed,
        metrics=tuple(metrics),
        n_compare=n_compare if representations else None,
        reference_step=available[-1] if representations else None,
    )

    path = run.tracking_path
    done = _reusable_records(run, path, settings)
    todo = [s for s in steps if s not in done]
    tracker = MultiLogger()
    if log_to:
        tracker = make_logger(
            log_to, run.trackers("track"), name=run.path.name, params=settings.key()
        )
    new: dict[int, dict[str, Any]] = {}
    failed: dict[int, str] = {}
    try:
        if backend == "ray":
            where = {"address": address, "num_cpus": num_cpus, "num_gpus": num_gpus}
            new, failed = _track_on_ray(run, task, todo, settings, device, path, tracker, **where)
        else:
            inputs = _TrackInputs.draw(task, settings)
            final = _FinalReference(run, available[-1], inputs, dev)
            for step in tqdm(todo, disable=not progress, desc="track", leave=False):
                record = _record(run, task, step, settings, inputs, final, dev)
                new[step] = _write_record(path, tracker, record)
    finally:
        tracker.close()
    records = [done[s] if s in done else new[s] for s in steps if s in done or s in new]
    if failed:
        raise TrackFailed(records, failed)
    return records


def _check_track_options(backend: str, metrics: Sequence[str], compare: bool) -> tuple[str, ...]:
    """Reject an unknown backend (or ``"ray"`` without Ray) and unknown metrics; returns the
    metrics to record (with ``compare``, the representation metrics added)."""
    check_backend(backend)
    metrics = tuple(metrics)
    if compare:
        metrics += tuple(m for m in REPRESENTATION_METRICS if m not in metrics)
    allowed = METRICS + REPRESENTATION_METRICS
    unknown = [m for m in metrics if m not in allowed]
    if unknown:
        raise ValueError(f"unknown tracking metric(s) {unknown}; choose from {allowed}")
    return metrics


def _checked_steps(
    run_dir: str | os.PathLike, available: list[int], steps: Sequence[int] | None
) -> list[int]:
    """The steps to track (all ``available`` checkpoints when ``steps`` is None); an error
    when the run has no checkpoint or a step has none."""
    if not available:
        raise ValueError(f"{run_dir}: no checkpoints to track")
    steps = list(available if steps is None else steps)
    missing = [s for s in steps if s not in available]
    if missing:
        raise ValueError(f"{run_dir}: no checkpoint at step(s) {missing}; available: {available}")
    return steps


def _reusable_records(run: Run, path: Path, settings: TrackSettings) -> dict[int, dict[str, Any]]:
    """``{step: record}`` of the records in ``path`` made with ``settings``; when some were
    made with other settings, the file is rewritten without them (they are recomputed).
    Records written before the settings named their layer numbering counted ``layer`` in
    blocks; they are renumbered (block ``b`` is layer ``b + 1``) and kept."""
    read = run.read_records(path, writer=True)
    records = [{**r, "settings": _renumbered(r["settings"])} for r in read]
    existing = [r for r in records if r["settings"] == settings.key()]
    if records != read or len(existing) != len(records):
        write_checked_jsonl(path, existing)
    return {r["step"]: r for r in existing}


def _renumbered(settings: dict[str, Any]) -> dict[str, Any]:
    """Tracking settings in the one layer numbering (older records named a block)."""
    if "layer_numbering" in settings or "layer" not in settings:
        return settings
    block = settings["layer"]
    return {**settings, "layer": block + 1 if block >= 0 else block,
            "layer_numbering": LAYER_NUMBERING}  # fmt: skip


def _track_on_ray(
    run: Run,
    task: Task,
    todo: list[int],
    settings: TrackSettings,
    device: str | torch.device | None,
    path: Path,
    tracker: MultiLogger,
    *,
    address: str | None,
    num_cpus: float,
    num_gpus: float,
) -> tuple[dict[int, dict[str, Any]], dict[int, str]]:
    """Evaluate the checkpoints ``todo`` as one Ray task each (``num_cpus`` / ``num_gpus``
    each, on the cluster at ``address``) and write their records to ``path`` and
    ``tracker`` here, in the order of ``todo`` as the sequential loop writes them; returns
    the records written and the failed steps' errors."""
    from .ray_backend import map_tasks

    new: dict[int, dict[str, Any]] = {}
    failed: dict[int, str] = {}
    jobs = [(s, (str(run.path), task, s, settings, device)) for s in todo]
    log.info("track: %d checkpoint(s) to evaluate on Ray", len(jobs))
    outcomes = map_tasks(track_record, jobs, address=address, num_cpus=num_cpus, num_gpus=num_gpus)
    results = {o.key: o for o in outcomes}
    for step in todo:
        outcome = results[step]
        if outcome.ok:
            new[step] = _write_record(path, tracker, outcome.result)
        else:
            failed[step] = outcome.error
    return new, failed


class TrackFailed(RuntimeError):
    """Some checkpoints could not be evaluated; ``records`` holds those that were (they are
    in ``tracking.jsonl``), ``failed`` maps each failed step to its error."""

    def __init__(self, records: list[dict[str, Any]], failed: dict[int, str]) -> None:
        self.records = records
        self.failed = failed
        text = "; ".join(f"step {s}: {e}" for s, e in failed.items())
        super().__init__(f"{len(failed)} checkpoint(s) failed: {text}")


def _write_record(path: Path, tracker: MultiLogger, record: dict[str, Any]) -> dict[str, Any]:
    append_jsonl(path, [record])
    tracker.log_scalars(scalars(record, "track"), record["step"])
    return record


@dataclass
class _TrackInputs:
    """The examples every checkpoint is evaluated on (the same at every step)."""

    eval_sets: dict[str, list[Any]]
    tree_examples: list[Any]
    compare_examples: list[Any]

    @classmethod
    def draw(cls, task: Task, settings: TrackSettings) -> _TrackInputs:
        metrics, seed = set(settings.metrics), settings.seed
        return cls(
            {s: task.sample(settings.n, s, seed) for s in ("test_id", "test_ood")}
            if "accuracy" in metrics
            else {},
            task.sample(settings.n_trees, settings.tree_split, seed + 1)
            if {"tree_score", "parse_f1"} & metrics
            else [],
            task.sample(settings.n_compare, "test_id", seed + 2)
            if settings.n_compare is not None
            else [],
        )


class _FinalReference:
    """The final checkpoint's layer activations, computed when first needed."""

    def __init__(self, run: Run, step: int, inputs: _TrackInputs, device: torch.device) -> None:
        self.run, self.step, self.inputs, self.device = run, step, inputs, device
        self._store = None

    def get(self, model: torch.nn.Module, step: int) -> Any:
        if self._store is None:
            final = (
                model if step == self.step else self.run.load_model(self.step, device=self.device)
            )
            self._store = _layer_store(final, self.inputs.compare_examples, self.device)
        return self._store


def _record(
    run: Run,
    task: Task,
    step: int,
    settings: TrackSettings,
    inputs: _TrackInputs,
    final: _FinalReference,
    dev: torch.device,
) -> dict[str, Any]:
    """The tracking record of checkpoint ``step``."""
    metrics = settings.metrics
    model = run.load_model(step, device=dev)
    reference = final.get(model, step) if "cka_to_final" in metrics else None
    record: dict[str, Any] = {"step": step, "main_metric": main_metric(task)}
    for split, examples in inputs.eval_sets.items():
        for key, value in task.evaluate(model, split, examples=examples, device=dev).items():
            record[f"{split}/{key}"] = value
    tree_examples = inputs.tree_examples
    if tree_examples:
        block = block_of_layer(settings.layer, model.cfg.n_layers)
        scores = span_scores(model, tree_examples, layer=block, device=dev, progress=False)
        trees = [tree_projection(s, "greedy") for s in scores]
        if "tree_score" in metrics:
            record["tree_score"] = tree_score(scores, trees)
        if "parse_f1" in metrics:
            record["parse_f1"] = parse_f1(trees, [ex.tree for ex in tree_examples])
    if "param_norm" in metrics:
        record["param_norm"] = parameter_norm(model)
    if "attention_entropy" in metrics:
        record["attention_entropy"] = attention_entropy(
            model, task, tree_examples or task.sample(64, "test_id", settings.seed)
        )
    if settings.n_compare is not None:
        record.update(
            _representation_metrics(model, inputs.compare_examples, reference, metrics, dev)
        )
    record["settings"] = settings.key()
    return record


def track_record(
    run_dir: str | os.PathLike,
    task: Task,
    step: int,
    settings: TrackSettings,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """The tracking record of one checkpoint, computed without writing anything (what each
    Ray task of ``track(..., backend="ray")`` runs; the driver writes the records)."""
    run = open_run(run_dir)
    dev = resolve_device(device)
    inputs = _TrackInputs.draw(task, settings)
    reference_step = settings.reference_step
    final = _FinalReference(run, reference_step or run.steps[-1], inputs, dev)
    return _record(run, task, step, settings, inputs, final, dev)


def _layer_store(model: torch.nn.Module, examples: Sequence[Any], device) -> Any:
    from .compare.runs import layer_activations, layer_hooks

    return layer_activations(model, examples, layer_hooks(model), device=device)


def _representation_metrics(
    model: torch.nn.Module,
    examples: Sequence[Any],
    reference: Any,
    metrics: Sequence[str],
    device: torch.device,
) -> dict[str, Any]:
    from .compare.runs import layer_hooks, rank_collapse_by_layer
    from .compare.similarity import similarity_matrix

    hooks = layer_hooks(model)
    out: dict[str, Any] = {"representation_hooks": hooks}
    if "cka_to_final" in metrics:
        if set(reference.hooks) != set(hooks):
            raise ValueError(
                f"layers differ from the final checkpoint's ({hooks} vs {reference.hooks})"
            )
        store = _layer_store(model, examples, device)
        cka = similarity_matrix(
            [(store, h) for h in hooks], [(reference, h) for h in hooks], device=device
        )["linear_cka"]
        out["cka_to_final"] = json_safe(torch.diagonal(cka).tolist())
        out["cka_to_final_matrix"] = json_safe(cka.tolist())
    if "rank_collapse" in metrics:
        out["rank_residual"] = json_safe(rank_collapse_by_layer(model, examples))
    return out


@dataclass(frozen=True)
class GrokkingSummary:
    """When a run learned in-domain and when it generalised out of domain."""

    id_saturation_step: int | None
    ood_threshold_step: int | None
    gap: int | None
    final_id: float
    final_ood: float
    final_tree_score: float | None
    final_parse_f1: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def _repr_html_(self) -> str:
        from hierlens.core.html_table import key_value_table

        return key_value_table(self.to_dict(), caption="Grokking summary")


def grokking_summary(
    records: Sequence[dict[str, Any]] | str | os.PathLike,
    *,
    metric: str | None = None,
    saturation: float = 0.98,
    ood_threshold: float = 0.8,
) -> GrokkingSummary:
    """Summarise tracking records (or a run directory's ``tracking.jsonl``).

    ``id_saturation_step``: first step whose in-domain value reaches ``saturation`` (an
    absolute accuracy); ``ood_threshold_step``: first step whose OOD value reaches
    ``ood_threshold``; ``gap``: their difference (None when either never happens).
    ``metric`` defaults to the task metric found in the records (``test_id/<metric>``).
    """
    if not isinstance(records, Sequence) or isinstance(records, (str, bytes)):
        path = Path(records)
        if path.is_dir():
            records = Run(path).read_records(Run(path).tracking_path)
        else:
            records = read_jsonl(path, schema=RECORD_SCHEMAS[TRACKING])
    records = sorted(records, key=lambda r: r["step"])
    if not records:
        raise ValueError("no tracking records to summarise")
    if metric is None:
        metric = records[0].get("main_metric")
        if metric is None or f"test_id/{metric}" not in records[0]:
            raise ValueError(
                "records hold no in-domain accuracy; track with metrics including 'accuracy'"
            )

    def first(split: str, level: float) -> int | None:
        for r in records:
            value = r.get(f"{split}/{metric}")
            if isinstance(value, (int, float)) and value >= level:
                return int(r["step"])
        return None

    sat, ood = first("test_id", saturation), first("test_ood", ood_threshold)
    last = records[-1]
    return GrokkingSummary(
        id_saturation_step=sat,
        ood_threshold_step=ood,
        gap=None if sat is None or ood is None else ood - sat,
        final_id=_number(last.get(f"test_id/{metric}")),
        final_ood=_number(last.get(f"test_ood/{metric}")),
        final_tree_score=last.get("tree_score"),
        final_parse_f1=last.get("parse_f1"),
    )


def _number(value: Any) -> float:
    """A record's value as a float (NaN for a missing or null one)."""
    return float(value) if isinstance(value, (int, float)) else float("nan")
