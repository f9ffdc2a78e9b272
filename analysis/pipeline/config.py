"""The pipeline's config: one frozen section per stage and :class:`PipelineConfig`,
built and checked from TOML, JSON or a dict (:func:`load_config`); :data:`DEMO_CONFIG`."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hierlens.analysis.causal.alignment import DASConfig
from hierlens.analysis.causal.sweep import PatchConfig
from hierlens.analysis.layer_numbering import check_projected_layer
from hierlens.analysis.structural import POOLS
from hierlens.core.config import Config, unknown_keys_error
from hierlens.core.validate import check_int
from hierlens.models import TrainConfig, get_task
from hierlens.models.corpus import Corpus
from hierlens.models.run_load import pretrained_run_config
from hierlens.models.transformer import ModelConfig
from hierlens.sae import SAEGridConfig, SAETrainConfig

log = logging.getLogger(__name__)


def _tuple(value: Any, name: str, kind: type = int) -> tuple:
    """``value`` as a tuple of ``kind`` (a list or tuple of them; a string is not a list of
    strings: ``"16"`` is an error naming the field, not ``('1', '6')``)."""
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, kind) and not isinstance(v, bool) for v in value
    ):
        return tuple(value)
    raise ValueError(f"{name} must be a list of {kind.__name__}s, got {value!r}")


@dataclasses.dataclass(frozen=True)
class CaptureStage(Config):
    """Which activations to capture: ``hooks`` on ``n`` sequences of ``split``, at the final
    checkpoint (or every checkpoint with ``all_checkpoints``).

    Parameters:
        hooks: hook names or globs, e.g. blocks.*.hook_resid_post.
        split: a task split (None: test_id) or a corpus split all/train/dev/test (None: all).
        n: sequences (None: 1000 task sequences, or every corpus sentence).
        pool: one row per word (its first, last or mean sub-token) instead of one per token.
        batch_size: sequences per forward pass.
        all_checkpoints: capture every checkpoint, not only the final one.
    """

    #: sequences of a task captured when ``n`` is None
    TASK_N = 1000
    FIELD_CHOICES = {"pool": ("first", "last", "mean")}

    hooks: tuple[str, ...] = ("blocks.*.hook_resid_post",)
    split: str | None = None
    n: int | None = None
    pool: str | None = None
    batch_size: int = 64
    all_checkpoints: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "hooks", _tuple(self.hooks, "capture.hooks", str))
        if not self.hooks:
            raise ValueError("capture.hooks must name at least one hook")
        check_int("capture.n", self.n, none=True)
        check_int("capture.batch_size", self.batch_size)
        if self.split is not None and not isinstance(self.split, str):
            raise ValueError(f"capture.split must be a split name, got {self.split!r}")
        self.check_choices("capture")
        if not isinstance(self.all_checkpoints, bool):
            raise ValueError(
                f"capture.all_checkpoints must be true or false, got {self.all_checkpoints!r}"
            )

    def data(self, pretrained: bool) -> dict[str, Any]:
        """``split``, ``n`` (and ``pool``) of the capture with the defaults filled in: a
        task's ``test_id`` split and :attr:`TASK_N` sequences; a corpus's ``all``, every
        sentence."""
        split, n = ("all", None) if pretrained else ("test_id", self.TASK_N)
        out: dict[str, Any] = {"split": self.split or split, "n": self.n or n}
        if self.pool is not None:
            out["pool"] = self.pool
        return out


# The pipeline's SAE training settings where they differ from SAETrainConfig's: short runs on
# the small grids of a pipeline.
_SAE_STAGE_TRAINING = {"steps": 300, "batch_size": 1024, "lr": 1e-3}


@dataclasses.dataclass(frozen=True)
class SAEStage(SAEGridConfig):
    """The SAE grid (:class:`hierlens.sae.SAEGridConfig`: every architecture at every width,
    k-sparse ones at every ``ks``, penalised ones at every ``coefficients``) trained on
    ``hook`` of the final checkpoint.

    ``train`` holds the training settings (:class:`hierlens.sae.SAETrainConfig`); in a config
    file they sit in the ``[sae]`` table itself (``steps``, ``batch_size``, ``lr``, ...). Its
    ``device`` defaults to the pipeline's ``[train] device``.

    Parameters:
        widths: dictionary sizes ``d_sae``.
        architectures: registered SAE names.
        enabled: run the stage.
        hook: the hook whose activations the grid is trained on.
        train: the training settings (short runs on the small grids of a pipeline).
    """

    widths: tuple[int, ...] = (64, 128, 256)
    architectures: tuple[str, ...] = ("topk", "mp", "relu")
    enabled: bool = True
    hook: str = "blocks.0.hook_resid_post"
    train: SAETrainConfig = SAETrainConfig(**_SAE_STAGE_TRAINING)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.hook, str) or not self.hook:
            raise ValueError(f"hook must be a hook name, got {self.hook!r}")
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
    """k-sparse probes [Gurnee2023] on every captured hook for the task's per-token labels.

    Parameters:
        enabled: run the stage.
        labels: per-token task labels, e.g. depth,nesting (empty: all of them).
        ks: sparsity levels.
        selection: neuron-selection methods: mean_diff, anova, mutual_info, l1, telescope,
            random, exhaustive.
    """

    enabled: bool = True
    labels: tuple[str, ...] = ()
    ks: tuple[int, ...] = (1, 2, 4, 8)
    selection: tuple[str, ...] = ("mean_diff",)

    def __post_init__(self) -> None:
        from hierlens.probes.select import SELECTIONS

        if isinstance(self.selection, str):  # one method, by name
            object.__setattr__(self, "selection", (self.selection,))
        object.__setattr__(self, "selection", _tuple(self.selection, "probes.selection", str))
        object.__setattr__(self, "labels", _tuple(self.labels, "probes.labels", str))
        object.__setattr__(self, "ks", _tuple(self.ks, "probes.ks"))
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError(f"probes.ks must be positive integers, got {list(self.ks)}")
        bad = [m for m in self.selection if m not in SELECTIONS]
        if not self.selection or bad:
            raise ValueError(
                f"probes.selection must be methods among {', '.join(SELECTIONS)}, "
                f"got {list(self.selection)}"
            )


@dataclasses.dataclass(frozen=True)
class TreeStage(Config):
    """Tracking over checkpoints (accuracy, tree score, parse F1, norms, attention entropy)
    of a trained run; for a pretrained run, tree projections of every layer scored against
    the corpus's gold trees. The pipeline's short settings; ``hierlens track`` takes
    :class:`~hierlens.analysis.grokking.TrackConfig`.

    Parameters:
        enabled: run the stage.
        n: examples per split for accuracy.
        n_trees: sentences for tree score and parse F1 (None: all of a corpus).
        layer: layer whose tree projection is tracked, numbered as ``tree-score`` and
            ``track`` number it (1..n_blocks, layer ``l`` the output of block ``l - 1``; -1:
            the last).
    """

    enabled: bool = True
    n: int = 300
    n_trees: int | None = 40
    layer: int = -1

    def __post_init__(self) -> None:
        check_int("tree.n", self.n)
        check_int("tree.n_trees", self.n_trees, none=True)
        check_projected_layer("tree.layer", self.layer)


@dataclasses.dataclass(frozen=True)
class StructuralStage(Config):
    """Structural probes [Hewitt2019] on every layer of a pretrained model, with
    the random-weights control; needs a treebank.

    Parameters:
        enabled: run the stage.
        rank: rank of the probe's linear map.
        max_epochs: training epochs at most (early stopping on the dev split).
        pool: a word's vector from its sub-word tokens: mean or first.
        controls: also probe the random-weights control.
        control_seed: seed of the control's initialisation; a control whose weights equal
            the model's (a model that is itself that seed's initialisation) is refused.
    """

    FIELD_CHOICES = {"pool": POOLS}

    enabled: bool = True
    rank: int = 64
    max_epochs: int = 40
    pool: str = "mean"
    controls: bool = True
    control_seed: int = 0

    def __post_init__(self) -> None:
        check_int("structural.rank", self.rank)
        check_int("structural.max_epochs", self.max_epochs)
        self.check_choices("structural")
        if not isinstance(self.controls, bool):
            raise ValueError(f"structural.controls must be true or false, got {self.controls!r}")


@dataclasses.dataclass(frozen=True)
class CausalStage(Config):
    """Causal evidence (``hierlens patch`` and ``hierlens das``) on the final checkpoint, for
    tasks with a causal model (:mod:`hierlens.models.tasks.variables`): activation and
    attribution patching of the residual stream at every layer x position before the query,
    and DAS with its controls at every hook. ``variables`` (default: all the task's) and
    ``hooks`` (default: the residual stream before the first block and after each block);
    ``patch`` and ``das`` hold the settings of
    :class:`~hierlens.analysis.causal.sweep.PatchConfig` and
    :class:`~hierlens.analysis.causal.alignment.DASConfig` (``[causal.patch]``, ``[causal.das]``
    tables in a config file). Off by default.

    Parameters:
        enabled: run the stage
        variables: the task's variables to test; none: all of them
        hooks: hook names or globs; none: the residual stream before the first block and
            after each block
        patch: the patching settings (``[causal.patch]``)
        das: the DAS settings (``[causal.das]``)
    """

    enabled: bool = False
    variables: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()
    patch: PatchConfig = PatchConfig()
    das: DASConfig = DASConfig()

    def __post_init__(self) -> None:
        object.__setattr__(self, "variables", _tuple(self.variables, "causal.variables", str))
        object.__setattr__(self, "hooks", _tuple(self.hooks, "causal.hooks", str))
        for name, kind in (("patch", PatchConfig), ("das", DASConfig)):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, kind.from_dict(dict(value)))
            elif not isinstance(value, kind):
                raise TypeError(f"causal.{name} must be a {kind.__name__} or a table")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["patch"], out["das"] = self.patch.to_dict(), self.das.to_dict()
        return out


@dataclasses.dataclass(frozen=True)
class PipelineConfig(Config):
    """A whole pipeline: ``task`` ({"name", "params"}), ``model`` (ModelConfig fields but the
    vocabulary and context, which come from the task), ``train`` (TrainConfig fields) and the
    stages. ``seeds``: train one model per seed (each its model and data seed) into
    ``out_dir/name/seed{s}``, all seeds as one fused stack
    (:func:`~hierlens.models.train_many`), then run the other stages on each."""

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
    causal: CausalStage = CausalStage()
    report: bool = True
    seeds: tuple[int, ...] = ()

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
        "causal": CausalStage,
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
        if "seeds" in kwargs:
            kwargs["seeds"] = tuple(kwargs["seeds"])
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
        """Check every section before any stage runs: the task and model by building their
        configs (cheap), each stage's fields (at their construction) and the capture split
        against the task's or corpus's splits; for a pretrained pipeline, the model folder
        and the corpus file too. (Hook names, and that the SAE hook is among the captured
        ones, are checked against the model once it is built, before stage 1.)"""
        from hierlens.models.corpus import SPLITS as CORPUS_SPLITS
        from hierlens.models.tasks.base import SPLITS as TASK_SPLITS

        if not isinstance(self.report, bool):
            raise ValueError(f"report must be true or false, got {self.report!r}")
        splits = CORPUS_SPLITS if self.is_pretrained else TASK_SPLITS
        if self.capture.split is not None and self.capture.split not in splits:
            raise ValueError(
                f"[capture] split {self.capture.split!r} is not one of {', '.join(splits)}"
            )
        seeds = list(self.seeds)
        bad = [x for x in seeds if not isinstance(x, int) or isinstance(x, bool) or x < 0]
        if bad or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct non-negative integers, got {seeds}")
        if seeds and self.is_pretrained:
            raise ValueError("seeds train one model per seed; a pretrained model takes none")
        if seeds and "seed" in self.model:
            raise ValueError("[model] seed comes from seeds; remove one of them")
        if self.is_pretrained:
            extra = [k for k in self.model if k not in ("pretrained", "special_tokens")]
            if extra:
                raise ValueError(
                    "[model] a pretrained model takes only 'pretrained' and 'special_tokens', "
                    f"not {extra}"
                )
            try:
                pretrained_run_config(
                    self.model["pretrained"], self.corpus(), self.model.get("special_tokens")
                )
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
