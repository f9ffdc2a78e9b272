"""The whole hierlens pipeline from one config: task -> train -> capture -> SAEs -> probes ->
tree projections and tracking -> report.

Every stage writes into the run directory ``<out_dir>/<name>/`` and skips work whose outputs
already exist and are valid, so an interrupted pipeline resumes where it stopped:

- training resumes from the newest valid checkpoint (bitwise like an uninterrupted run);
- activation capture resumes per shard (``activations/step_NNNNNNN/``);
- SAEs that are already saved (``saes/<name>/``) are not retrained; ``saes/table.jsonl`` is
  recomputed from the saved SAEs;
- the probe sweep is skipped when ``probes/results.jsonl`` exists;
- tracking (``tracking.jsonl``) skips checkpoints already evaluated;
- the report is rewritten at the end.

Configs are TOML, JSON or dicts with the sections below; every field is checked before any
training starts, and errors name the section and field.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hierlens.models.atomic_io import write_checked_jsonl
from hierlens.models.checkpoint_capture import capture_checkpoints
from hierlens.models.config import Config, unknown_keys_error
from hierlens.models.corpus import Corpus
from hierlens.models.run import Run, open_run, pretrained_run_config
from hierlens.models.tasks import get_task
from hierlens.models.train import TrainConfig, train
from hierlens.models.transformer import ModelConfig, build_transformer
from hierlens.sae import SAE, SAETrainConfig

log = logging.getLogger(__name__)


def _tuple(value: Any, name: str, kind: type = int) -> tuple:
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, kind) and not isinstance(v, bool) for v in value
    ):
        return tuple(value)
    raise ValueError(f"{name} must be a list of {kind.__name__}s, got {value!r}")


@dataclasses.dataclass(frozen=True)
class CaptureStage(Config):
    """Which activations to capture: ``hooks`` (names or globs) on ``n`` sequences of
    ``split``, at the final checkpoint (or every checkpoint with ``all_checkpoints``).
    ``split`` defaults to a task's ``test_id`` or a corpus's ``all``; ``n`` to 500 task
    sequences or every corpus sentence; ``pool`` ("first", "last", "mean") stores one row
    per word instead of one per token."""

    hooks: tuple[str, ...] = ("blocks.*.hook_resid_post",)
    split: str | None = None
    n: int | None = None
    pool: str | None = None
    batch_size: int = 64
    all_checkpoints: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "hooks", _tuple(list(self.hooks), "capture.hooks", str))
        if self.n is not None and (not isinstance(self.n, int) or self.n < 1):
            raise ValueError(f"capture.n must be a positive integer, got {self.n!r}")
        if self.pool not in (None, "first", "last", "mean"):
            raise ValueError(f"capture.pool must be first, last or mean, got {self.pool!r}")


# The pipeline's SAE training settings where they differ from SAETrainConfig's: short runs on
# the small grids of a pipeline.
_SAE_STAGE_TRAINING = {"steps": 300, "batch_size": 1024, "lr": 1e-3}


@dataclasses.dataclass(frozen=True)
class SAEStage(Config):
    """The SAE grid trained on ``hook`` of the final checkpoint: every architecture in
    ``architectures`` (registered SAE names: "topk", "batch_topk", "mp", "relu", "jumprelu")
    at every width; k-sparse ones at every ``ks``, penalised ones at every ``coefficients``.

    ``train`` holds the training settings (:class:`hierlens.sae.SAETrainConfig`); in a config
    file they sit in the ``[sae]`` table itself (``steps``, ``batch_size``, ``lr``, ...). Its
    ``device`` defaults to the pipeline's ``[train] device``.
    """

    enabled: bool = True
    hook: str = "blocks.0.hook_resid_post"
    architectures: tuple[str, ...] = ("topk", "mp", "relu")
    widths: tuple[int, ...] = (64, 128, 256)
    ks: tuple[int, ...] = (4, 8)
    coefficients: tuple[float, ...] = (1e-2,)
    train: SAETrainConfig = SAETrainConfig(**_SAE_STAGE_TRAINING)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "architectures", _tuple(list(self.architectures), "sae.architectures", str)
        )
        bad = [a for a in self.architectures if a not in SAE.registry]
        if bad:
            raise ValueError(
                f"sae.architectures: unknown {bad}; choose from {tuple(sorted(SAE.registry))}"
            )
        object.__setattr__(self, "widths", _tuple(list(self.widths), "sae.widths"))
        object.__setattr__(self, "ks", _tuple(list(self.ks), "sae.ks"))
        object.__setattr__(self, "coefficients", tuple(float(c) for c in self.coefficients))
        if any(w < 1 for w in self.widths) or any(k < 1 for k in self.ks):
            raise ValueError("sae.widths and sae.ks must be positive")
        if any(k > min(self.widths) for k in self.ks):
            raise ValueError(
                f"sae.ks {self.ks} must not exceed the smallest width {min(self.widths)}"
            )
        if not isinstance(self.train, SAETrainConfig):
            raise TypeError(f"sae.train must be an SAETrainConfig, got {self.train!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SAEStage:
        """Build from a flat table: the stage's own fields plus SAETrainConfig fields."""
        if not isinstance(data, dict):
            raise TypeError(f"SAEStage.from_dict expects a dict, got {type(data).__name__}")
        own = {f.name for f in dataclasses.fields(cls)} - {"train"}
        training = {f.name for f in dataclasses.fields(SAETrainConfig)}
        unknown = [k for k in data if k not in own | training]
        if unknown:
            raise unknown_keys_error("SAEStage", unknown, sorted(own | training))
        settings = {k: v for k, v in data.items() if k in training}
        stage = super().from_dict({k: v for k, v in data.items() if k in own})
        if "steps" in settings or "tokens" in settings:
            settings = {"steps": None, "tokens": None, **settings}
        return stage.replace(train=stage.train.replace(**settings))

    def to_dict(self) -> dict[str, Any]:
        """The flat table :meth:`from_dict` reads."""
        out = super().to_dict()
        out.update(out.pop("train").to_dict())
        return out


@dataclasses.dataclass(frozen=True)
class ProbeStage(Config):
    """k-sparse probes (Gurnee et al. 2023) on every captured hook for the task's per-token
    ``labels`` (default: all of them)."""

    enabled: bool = True
    labels: tuple[str, ...] = ()
    ks: tuple[int, ...] = (1, 2, 4, 8)
    selection: str = "mean_diff"

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _tuple(list(self.labels), "probes.labels", str))
        object.__setattr__(self, "ks", _tuple(list(self.ks), "probes.ks"))


@dataclasses.dataclass(frozen=True)
class TreeStage(Config):
    """Tracking over checkpoints (accuracy, tree score, parse F1, norms, attention entropy)
    of a trained run; for a pretrained run, tree projections of every layer scored against
    the corpus's gold trees (``n_trees`` sentences, None: all)."""

    enabled: bool = True
    n: int = 300
    n_trees: int | None = 40
    layer: int = -1


@dataclasses.dataclass(frozen=True)
class StructuralStage(Config):
    """Structural probes (Hewitt & Manning 2019) on every layer of a pretrained model, with
    the random-weights control (``controls``); needs a treebank."""

    enabled: bool = True
    rank: int = 64
    max_epochs: int = 40
    pool: str = "mean"
    controls: bool = True


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """A whole pipeline: ``task`` ({"name", "params"}), ``model`` (ModelConfig fields but the
    vocabulary and context, which come from the task), ``train`` (TrainConfig fields) and the
    stages."""

    name: str
    out_dir: str = "runs"
    task: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: {"name": "dyck", "params": {}}
    )
    model: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    train: TrainConfig = TrainConfig()
    capture: CaptureStage = CaptureStage()
    sae: SAEStage = SAEStage()
    probes: ProbeStage = ProbeStage()
    tree: TreeStage = TreeStage()
    structural: StructuralStage = StructuralStage()
    report: bool = True

    def __post_init__(self) -> None:
        name = self.name
        if (
            not isinstance(name, str)
            or not name
            or name in (".", "..")
            or "/" in name
            or "\\" in name
            or "\0" in name
        ):
            raise ValueError(
                f"pipeline config 'name' must be a folder name (no '/', not '.' or '..'), "
                f"got {name!r}"
            )

    _SECTIONS = {
        "train": TrainConfig,
        "capture": CaptureStage,
        "sae": SAEStage,
        "probes": ProbeStage,
        "tree": TreeStage,
        "structural": StructuralStage,
    }

    @property
    def is_pretrained(self) -> bool:
        """``model = {pretrained = "PATH"}``: analyse a local Hugging Face model on the
        corpus of ``data = {treebank = "FILE"}`` instead of training one."""
        return isinstance(self.model, Mapping) and "pretrained" in self.model

    def corpus(self) -> Corpus:
        """The ``[data]`` corpus of a pretrained pipeline."""
        data = dict(self.data)
        if "treebank" not in data:
            raise ValueError('[data] needs treebank = "FILE" (PTB, CoNLL-U or text)')
        unknown = [k for k in data if k not in ("treebank", "format", "drop_punct")]
        if unknown:
            raise unknown_keys_error("[data]", unknown, ["treebank", "format", "drop_punct"])
        return Corpus(
            str(data["treebank"]), data.get("format"), bool(data.get("drop_punct", False))
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PipelineConfig:
        """Build and validate; every error names the section and field."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in names]
        if unknown:
            raise unknown_keys_error("pipeline config", unknown, names)
        if "name" not in data or not isinstance(data["name"], str) or not data["name"]:
            raise ValueError("pipeline config needs a non-empty 'name'")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            section = cls._SECTIONS.get(key)
            if section is not None:
                if not isinstance(value, Mapping):
                    raise ValueError(f"[{key}] must be a table of fields, got {value!r}")
                try:
                    kwargs[key] = section.from_dict(dict(value))
                except (ValueError, TypeError) as exc:
                    raise ValueError(f"[{key}] {exc}") from exc
            else:
                kwargs[key] = value
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, Config) else value
        return out

    def validate(self) -> None:
        """Check the task and model sections by building their configs (cheap); for a
        pretrained pipeline, the model folder and the corpus file."""
        if self.is_pretrained:
            extra = [k for k in self.model if k != "pretrained"]
            if extra:
                raise ValueError(f"[model] a pretrained model takes only 'pretrained', not {extra}")
            try:
                pretrained_run_config(self.model["pretrained"], self.corpus())
            except (ValueError, TypeError, OSError) as exc:
                raise ValueError(f"[model]/[data] {exc}") from exc
            return
        if self.data:
            raise ValueError(
                '[data] goes with model = {pretrained = "PATH"}; a task brings its data'
            )
        if not isinstance(self.task, Mapping) or "name" not in self.task:
            raise ValueError("[task] needs a 'name' (see `hierlens tasks`)")
        try:
            task = get_task(self.task["name"], **dict(self.task.get("params", {})))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"[task] {exc}") from exc
        for key in ("d_vocab", "n_ctx"):
            if key in self.model:
                raise ValueError(f"[model] {key} comes from the task; remove it")
        try:
            ModelConfig.for_task(task, **dict(self.model))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"[model] {exc}") from exc


def load_config(config: PipelineConfig | Mapping[str, Any] | str | os.PathLike) -> PipelineConfig:
    """A validated :class:`PipelineConfig` from a config object, a dict, or a TOML/JSON file."""
    if isinstance(config, PipelineConfig):
        return config
    if isinstance(config, Mapping):
        return PipelineConfig.from_dict(config)
    path = Path(config)
    if not path.exists():
        raise FileNotFoundError(f"pipeline config {path} does not exist")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: cannot parse ({exc})") from exc
    return PipelineConfig.from_dict(data)


def build_sae_grid(
    stage: SAEStage, d_in: int, hook: str, device: str | None = None
) -> dict[str, Any]:
    """``{name: untrained SAE}`` for the grid described by ``stage`` (names from
    :func:`hierlens.sae.grid_name`: ``topk_w64_k8``, ``relu_w64_l1c0.01``)."""
    from hierlens.sae import build_sae_grid as sae_grid

    grid, _ = sae_grid(
        stage.architectures,
        d_in,
        stage.widths,
        ks=stage.ks,
        coefficients=stage.coefficients,
        device=device,
        hook_name=hook,
    )
    return grid


def sae_train_config(cfg: PipelineConfig) -> SAETrainConfig:
    """The SAE stage's training settings, on the pipeline's ``[train] device`` unless the
    ``[sae]`` table names its own."""
    train = cfg.sae.train
    return train if train.device is not None else train.replace(device=cfg.train.device)


def _sae_stage(cfg: PipelineConfig, run_dir: Path, store: Any, progress: bool) -> None:
    from hierlens import sae as S

    if cfg.sae.hook not in store.hooks:
        raise ValueError(f"[sae] hook {cfg.sae.hook!r} was not captured; captured: {store.hooks}")
    acts = store[cfg.sae.hook]
    train_config = sae_train_config(cfg)
    grid = build_sae_grid(cfg.sae, acts.shape[1], cfg.sae.hook, device="cpu")
    run = Run(run_dir)
    saved = run.sae_dirs()
    missing = {name: s for name, s in grid.items() if name not in saved}
    if missing:
        log.info("training %d SAEs on %s (%s)", len(missing), cfg.sae.hook, train_config.device)
        S.train_saes(
            list(missing.values()),
            acts,
            config=train_config,
            progress=progress,
            log_dir=run.trackers("saes").root,
        )
        for name, sae in missing.items():
            sae.save(run.sae_dir(name))
    rows = []
    for name in grid:
        sae = S.load(saved.get(name, run.sae_dir(name)))
        metrics = S.evaluate_sae(sae, acts)
        dl = S.description_length(sae, acts)  # codes at a 1% FVU-increase precision
        row = {
            "name": name,
            "architecture": type(sae).__name__,
            "d_sae": sae.d_sae,
            "k": getattr(sae.cfg, "k", None),
            **metrics,
            "dead": metrics["dead_fraction"],
            "description_length_bits": dl.bits,
            "bin_width": dl.bin_width,
        }
        rows.append(row)
    write_checked_jsonl(run.sae_table_path, rows)


def _probe_stage(cfg: PipelineConfig, run_dir: Path, store: Any, progress: bool) -> None:
    from hierlens.probes import probe_sweep

    out = Run(run_dir).probe_results_path
    if out.exists():
        return
    names = list(cfg.probes.labels) or sorted(store.labels)
    missing = [n for n in names if n not in store.labels]
    if missing:
        raise ValueError(
            f"[probes] unknown label(s) {missing}; the task provides {sorted(store.labels)}"
        )
    width = min(store[h].shape[1] for h in store.hooks)
    probe_sweep(
        {h: store[h] for h in store.hooks},
        {n: store.labels[n].numpy() for n in names},
        ks=[k for k in cfg.probes.ks if k <= width],
        selection=cfg.probes.selection,
        out_path=out,
        progress=progress,
    )


def _run_pretrained(cfg: PipelineConfig, progress: bool) -> Path:
    """The pipeline on a pretrained model: capture -> SAEs -> probes -> tree projections per
    layer -> structural probes -> report."""
    from hierlens.models.hooks import resolve_hook_names

    run_dir = Path(cfg.out_dir) / cfg.name
    config = json.loads(json.dumps(pretrained_run_config(cfg.model["pretrained"], cfg.corpus())))
    run = Run(run_dir)
    if run.config_path.exists() and open_run(run).config != config:
        raise ValueError(f"{run_dir} holds another run; choose another name or out_dir")
    if not run.config_path.exists():
        run.write_config(config)
    run = open_run(run_dir)
    device = cfg.train.device
    resolve_hook_names(run.load_model(device=device), list(cfg.capture.hooks))
    log.info("stage 1/6: capture %s", list(cfg.capture.hooks))
    extra = {"pool": cfg.capture.pool} if cfg.capture.pool else {}
    store = capture_checkpoints(
        run_dir,
        list(cfg.capture.hooks),
        split=cfg.capture.split or "all",
        n=cfg.capture.n,
        batch_size=cfg.capture.batch_size,
        device=device,
        progress=progress,
        **extra,
    )[run.steps[-1]]
    if cfg.sae.enabled:
        log.info("stage 2/6: SAE grid")
        _sae_stage(cfg, run_dir, store, progress)
    if cfg.probes.enabled:
        log.info("stage 3/6: sparse probes")
        _probe_stage(cfg, run_dir, store, progress)
    if cfg.tree.enabled and run.corpus.has_trees:
        from .tree_scores import tree_scores_by_layer

        log.info("stage 4/6: tree projections per layer")
        tree_scores_by_layer(run_dir, n=cfg.tree.n_trees, device=device, progress=progress)
    if cfg.structural.enabled and run.corpus.has_trees:
        from .structural import run_structural_probes

        log.info("stage 5/6: structural probes per layer")
        s = cfg.structural
        run_structural_probes(
            run_dir, pool=s.pool, controls=s.controls, device=device, rank=s.rank,
            max_epochs=s.max_epochs,
        )  # fmt: skip
    if cfg.report:
        from .report import write_report

        log.info("stage 6/6: report")
        write_report(run_dir)
    return run_dir


def run(
    config: PipelineConfig | Mapping[str, Any] | str | os.PathLike, *, progress: bool = True
) -> Path:
    """Run (or resume) the pipeline; returns the run directory. With
    ``model = {pretrained = "PATH"}`` and ``data = {treebank = "FILE"}`` the pipeline
    analyses that local Hugging Face model on the corpus instead of training one. The run's
    writer lock (:meth:`hierlens.models.Run.lock`) is held throughout."""
    cfg = load_config(config)
    with Run(Path(cfg.out_dir) / cfg.name).lock():
        if cfg.is_pretrained:
            return _run_pretrained(cfg, progress)
        return _run_stages(cfg, progress)


def _run_stages(cfg: PipelineConfig, progress: bool) -> Path:
    """The stages of :func:`run` for a trained model, under the run's lock."""
    task = get_task(cfg.task["name"], **dict(cfg.task.get("params", {})))
    model_config = ModelConfig.for_task(task, **dict(cfg.model))
    run_dir = Path(cfg.out_dir) / cfg.name
    model = build_transformer(model_config, device=cfg.train.device)
    from hierlens.models.hooks import resolve_hook_names

    resolve_hook_names(model, list(cfg.capture.hooks))  # unknown hooks fail before training
    if cfg.probes.labels:
        available = set(task.sample(1, "train", 0)[0].token_labels)
        bad = [n for n in cfg.probes.labels if n not in available]
        if bad:
            raise ValueError(
                f"[probes] unknown label(s) {bad}; the task provides {sorted(available)}"
            )

    log.info("stage 1/6: train -> %s", run_dir)
    train(model, task, cfg.train, run_dir, model_config=model_config, progress=progress)
    steps = open_run(run_dir).steps
    capture_steps = steps if cfg.capture.all_checkpoints else [steps[-1]]
    log.info("stage 2/6: capture %s at steps %s", list(cfg.capture.hooks), capture_steps)
    stores = capture_checkpoints(
        run_dir,
        list(cfg.capture.hooks),
        steps=capture_steps,
        split=cfg.capture.split or "test_id",
        n=cfg.capture.n or 500,
        batch_size=cfg.capture.batch_size,
        device=cfg.train.device,
        progress=progress,
        **({"pool": cfg.capture.pool} if cfg.capture.pool else {}),
    )
    store = stores[steps[-1]]
    if cfg.sae.enabled:
        log.info("stage 3/6: SAE grid")
        _sae_stage(cfg, run_dir, store, progress)
    if cfg.probes.enabled:
        log.info("stage 4/6: sparse probes")
        _probe_stage(cfg, run_dir, store, progress)
    if cfg.tree.enabled:
        from .grokking import track

        log.info("stage 5/6: tree projections and tracking over %d checkpoints", len(steps))
        track(
            run_dir,
            task,
            n=cfg.tree.n,
            n_trees=cfg.tree.n_trees,
            layer=cfg.tree.layer,
            device=cfg.train.device,
            progress=progress,
            log_to=cfg.train.log_to,
        )
    if cfg.report:
        from .report import write_report

        log.info("stage 6/6: report")
        write_report(run_dir)
        if cfg.train.log_to:  # the report and figures as the training run's artifacts
            from hierlens.models.loggers import log_run_artifacts

            log_run_artifacts(run_dir, cfg.train.log_to)
    return run_dir


DEMO_CONFIG: dict[str, Any] = {
    "name": "demo",
    "task": {
        "name": "dyck",
        "params": {"n_types": 2, "max_depth": 6, "min_length": 4, "max_length": 24},
    },
    "model": {"d_model": 64, "n_layers": 2, "n_heads": 4},
    "train": {
        "steps": 800,
        "batch_size": 64,
        "lr": 3e-3,
        "warmup_steps": 50,
        "eval_every": 100,
        "checkpoint_every": 200,
        "eval_n": 300,
        "train_pool": 8000,
    },
    "capture": {"hooks": ["blocks.*.hook_resid_post"], "n": 300},
    "sae": {
        "hook": "blocks.1.hook_resid_post",
        "architectures": ["topk", "mp", "relu"],
        "widths": [32, 64, 128, 256],
        "ks": [4],
        "coefficients": [3e-3],
        "steps": 400,
    },
    "probes": {"labels": ["nesting", "is_close", "bracket_type"], "ks": [1, 2, 4, 8]},
    "tree": {"n": 300, "n_trees": 30},
}
