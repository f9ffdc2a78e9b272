"""A run directory and its layout: :class:`Run` names every path in it.

```
runs/<name>/
  config.json                       # {"task": {"name", "params"}, "model": ..., "train": ...}
  label_names.json                  # pretrained runs: names of the string labels' ids
  metrics.jsonl                     # one JSON object per log/eval: step, split, metric values
  checkpoints/step_0000500/         # model.safetensors, state.safetensors, state.json
  activations/step_0000500/<hook>/  # an ActivationStore: shards per hook, manifest.json
  saes/<name>/                      # cfg.json + sae_weights.safetensors (SAELens layout)
  saes/table.jsonl                  # metrics and description length of the SAE grid
  saes/mdl_table.jsonl              # the MDL selection's table ...
  saes/mdl_selection.json           # ... and its choice
  probes/results.jsonl              # one record per (hook, feature, k, selection) probe
  probes/structural.jsonl           # structural probes per layer (and their controls)
  tree_scores.jsonl                 # tree projections per layer: tree score, parse F1
  pipeline_stages.json              # settings of the pipeline stages a rerun reuses
  tracking.jsonl                    # grokking metrics per checkpoint
  trackers/<stage>/                 # TensorBoard/W&B/MLflow files and run ids (train, saes, track, export)
  report.html
  figures/
```

A run is *trained* (``config.json`` names a task, a model config and a training config;
``checkpoints/`` holds the steps) or *pretrained*: ``config.json`` names a local Hugging Face
folder, a corpus and the special tokens that frame its sentences (``{"pretrained": {"path"},
"data": {...}, "special_tokens": {"policy", "prefix", "suffix"}}``, see
:func:`pretrained_run_config`), the model is that folder as loaded (its one state is step 0,
so ``activations/step_0000000/``), and the data are the corpus's sentences
(:meth:`Run.examples`). Every later stage (SAEs, probes, tree scores, structural probes, the
report) reads both kinds the same way.

No other module builds these paths: writers and readers alike ask a :class:`Run`.

One process at a time writes a run: :meth:`Run.lock` takes an exclusive OS lock
(``fcntl.flock``) on ``.hierlens.lock`` in the directory for as long as the writer runs.
The OS drops it when the process ends, however it ends (a killed writer leaves no stale lock);
a second writer gets :class:`RunLockedError` naming the holder's pid and host. The lock is
re-entrant within a process (the pipeline holds it while train, capture, ... take it again).
Training, checkpoint capture, SAE fitting, probes, tracking and the pipeline hold it; ``eval``
reads only, and ``report`` writes one file (``report.html``) atomically, so neither takes
it. Under ``torchrun`` rank 0 holds it (``Run.lock()`` reads ``RANK``; other ranks skip it).
``Run(path)`` works for a directory that does not exist yet (writers create what they
write); :func:`open_run` opens an existing run and checks its ``config.json``.
Runs written before SAEs had one location (``saes/grid/<name>/``, ``saes/mdl/<name>/``) are
still read: :meth:`Run.sae_dirs` lists those SAEs too.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import inspect
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from hierlens.core.atomic_io import (
    CorruptFileError,
    read_json,
    read_jsonl,
    sha256_file,
    write_checked_json,
)

from .architectures import ArchConfig, build_model
from .checkpoint import STATE_FILE, Checkpoint, load_checkpoint
from .corpus import Corpus
from .special_tokens import SpecialTokens
from .tasks.base import Task
from .tasks.registry import get_task
from .train_config import TrainConfig
from .transformer import ModelConfig, build_transformer

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens.model_bridge import TransformerBridge

    from .pretrained import Pretrained
    from .tasks.base import Example

CONFIG = "config.json"
METRICS = "metrics.jsonl"
log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
ACTIVATIONS = "activations"
SAES = "saes"
PROBES = "probes"
TRACKING = "tracking.jsonl"
REPORT = "report.html"
FIGURES = "figures"
TRACKERS = "trackers"
#: folders that held SAEs before ``saes/<name>/`` was their one location
PRETRAINED = "pretrained"  # config.json key of a pretrained run
PRETRAINED_STEP = 0  # the one state of a pretrained model
SPECIAL_TOKENS = "special_tokens"  # config.json key: a pretrained run's resolved frame
LABEL_NAMES = "label_names.json"  # names of the string labels' ids (POS tags, phrases)
LEGACY_SAE_GROUPS = ("grid", "mdl")
SAE_CONFIG_FILE = "cfg.json"
#: the file a writer locks (its content: the holder's pid and host, for the error message)
LOCK_FILE = ".hierlens.lock"

_STEP_DIR = re.compile(r"^step_(\d{7,})$")


def step_dir_name(step: int) -> str:
    """``step_NNNNNNN``: the folder name of a step (checkpoints, activation stores)."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"a step must be a non-negative integer, got {step!r}")
    return f"step_{step:07d}"


def _step_dirs(root: Path) -> dict[int, Path]:
    """``{step: folder}`` of the ``step_NNNNNNN`` folders directly under ``root``."""
    if not root.is_dir():
        return {}
    out = {}
    for entry in root.iterdir():
        m = _STEP_DIR.match(entry.name)
        if m and entry.is_dir():
            out[int(m.group(1))] = entry
    return dict(sorted(out.items()))


def run_config_dict(
    task: Task, model_config: ModelConfig | ArchConfig | None, train_config: TrainConfig | None
) -> dict[str, Any]:
    """The JSON object saved as a run's ``config.json`` (``model`` and ``train`` only when
    given). A TL-native transformer's ``model`` is a :class:`ModelConfig`; a model of the
    architecture families (:class:`~hierlens.models.architectures.ArchConfig`) is told apart
    by its ``"arch"`` key."""
    out: dict[str, Any] = {"task": {"name": task.name, "params": task.to_dict()}}
    if model_config is not None:
        out["model"] = model_config.to_dict()
    if train_config is not None:
        out["train"] = train_config.to_dict()
    return out


def model_config_from_dict(d: dict[str, Any]) -> ModelConfig | ArchConfig:
    """A run's model config from its ``config.json`` entry: ``"arch"`` selects
    :class:`~hierlens.models.architectures.ArchConfig`, otherwise :class:`ModelConfig`."""
    if not isinstance(d, dict):
        raise ValueError(f"config.json 'model' must be an object, got {type(d).__name__}")
    return ArchConfig.from_dict(d) if "arch" in d else ModelConfig.from_dict(d)


def pretrained_run_config(
    model_path: str | os.PathLike,
    corpus: Corpus,
    special_tokens: SpecialTokens | str | None = None,
) -> dict[str, Any]:
    """The ``config.json`` of a run that analyses the pretrained model in the local folder
    ``model_path`` on ``corpus``, its sentences framed by ``special_tokens`` (a policy or a
    :class:`~hierlens.models.special_tokens.SpecialTokens`; None: the default policy),
    resolved to token ids with the folder's tokenizer and stored under
    ``"special_tokens"``."""
    from .pretrained import load_tokenizer

    folder = Path(model_path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no folder at {str(model_path)!r}: only local Hugging Face folders load"
        )
    if not isinstance(special_tokens, SpecialTokens):
        special_tokens = (
            SpecialTokens() if special_tokens is None else SpecialTokens(special_tokens)
        )
    frame = special_tokens.resolve(load_tokenizer(folder))
    return {
        PRETRAINED: {"path": str(folder.resolve())},
        "data": corpus.to_dict(),
        SPECIAL_TOKENS: frame.to_dict(),
    }


def write_run_config(run_dir: str | os.PathLike, config: dict[str, Any]) -> None:
    """Write ``config`` as the ``config.json`` of ``run_dir`` (atomically)."""
    Run(run_dir).write_config(config)


class Run:
    """A run directory: the paths of its layout and readers for what is in it.

    ``Run(path)`` does not touch the disk, so a writer can name the paths of a run it is
    about to create; ``config`` (and what derives from it: ``task``, ``model_config``,
    ``train_config``) is read from ``config.json`` when first asked for, unless given.
    """

    def __init__(self, path: str | os.PathLike | Run, config: dict[str, Any] | None = None) -> None:
        if isinstance(path, Run):
            config = path._config if config is None else config
            path = path.path
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"a run directory must be a path, got {type(path).__name__}")
        if config is not None and not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        self.path = Path(path)
        self._config = config

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def _repr_html_(self) -> str:
        """A table of what the run holds (see :func:`hierlens.models.run_display.run_summary`)."""
        from hierlens.core.html_table import key_value_table

        from .run_display import run_summary

        return key_value_table(run_summary(self), caption=f"Run {self.path.name}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    # ------------------------------------------------------------------ the writer's lock
    @property
    def lock_path(self) -> Path:
        """``.hierlens.lock``: the file :meth:`lock` locks."""
        return self.path / LOCK_FILE

    @contextmanager
    def lock(self, enabled: bool | None = None) -> Iterator[Run]:
        """Hold the run's exclusive writer lock for the ``with`` block (creating the
        directory if needed).

        Re-entrant within a process. Raises :class:`RunLockedError` (naming the holder's
        pid and host) at once when another process holds it. ``enabled=None``: lock unless
        this is a non-zero rank of a distributed launch (``RANK`` set and not ``0``), so
        under ``torchrun`` rank 0 holds the lock for the job; ``False``: a no-op.
        """
        if enabled is None:
            enabled = os.environ.get("RANK", "0") in ("", "0")
        if not enabled:
            yield self
            return
        created = not self.path.exists()
        try:
            key = _acquire(self)
        except BaseException:
            if created:
                _remove_if_only_lock(self)
            raise
        try:
            yield self
        finally:
            _release(key)
            if created:  # a writer that failed before writing leaves no folder behind
                _remove_if_only_lock(self)

    # ------------------------------------------------------------------ config and metrics
    @property
    def config_path(self) -> Path:
        """``config.json``: the config that produced the run."""
        return self.path / CONFIG

    @property
    def exists(self) -> bool:
        """Whether the directory holds a run (a config or any checkpoint)."""
        return self.config_path.exists() or self.checkpoints_dir.exists()

    @property
    def config(self) -> dict[str, Any]:
        """The contents of ``config.json`` (read once)."""
        if self._config is None:
            if not self.config_path.exists():
                raise _not_a_run(self)
            self._config = read_json(self.config_path)
        return self._config

    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config.json`` atomically (creating the directory)."""
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_error(exc, self.path) from exc
        write_checked_json(self.config_path, config)
        self._config = config

    @property
    def is_pretrained(self) -> bool:
        """Whether the run analyses a pretrained model (see the module docstring); False for
        a run whose ``config.json`` is not written yet."""
        if self._config is None and not self.config_path.exists():
            return False
        return PRETRAINED in self.config

    @property
    def corpus(self) -> Corpus:
        """The sentences of a pretrained run."""
        if not self.is_pretrained:
            raise ValueError(f"{self.path} is a trained run; its data come from its task")
        return Corpus.from_dict(self.config["data"])

    def pretrained(self, device: str | torch.device | None = None) -> Pretrained:
        """The pretrained model of the run (loaded once per device)."""
        from hierlens.core.device import resolve_device

        from .pretrained import load_pretrained

        if not self.is_pretrained:
            raise ValueError(f"{self.path} is a trained run, not a pretrained model")
        cache = self.__dict__.setdefault("_pretrained", {})
        key = str(resolve_device(device))
        if key not in cache:
            cache[key] = load_pretrained(self.config[PRETRAINED]["path"], device=device)
        return cache[key]

    @property
    def special_tokens(self) -> SpecialTokens:
        """The special tokens that frame a pretrained run's sentences: resolved once, when
        the run was created, and stored in ``config.json`` (``"special_tokens"``). A run
        whose ``config.json`` predates that key framed them as its tokenizer did by default
        (policy ``template``), and keeps doing so."""
        if not self.is_pretrained:
            raise ValueError(f"{self.path} is a trained run; its tokens come from its task")
        stored = self.config.get(SPECIAL_TOKENS)
        if stored is not None:
            return SpecialTokens.from_dict(stored)
        if "_legacy_frame" not in self.__dict__:
            from .pretrained import load_tokenizer

            tokenizer = load_tokenizer(self.config[PRETRAINED]["path"])
            self.__dict__["_legacy_frame"] = SpecialTokens("template").resolve(tokenizer)
        return self.__dict__["_legacy_frame"]

    def examples(
        self, split: str, n: int | None = None, seed: int = 0, drop_punct: bool | None = None
    ) -> list[Example]:
        """The run's data: ``n`` examples of the task's ``split`` drawn with ``seed`` (trained
        runs), or the corpus's sentences of ``split`` tokenised for the model and framed by
        :attr:`special_tokens` (pretrained runs: ``all``, ``train``, ``dev``, ``test``; all
        of them when ``n`` is None). ``drop_punct=True`` reads a corpus that keeps its
        punctuation without it (the same sentences, punctuation words removed); None: the
        corpus as the run reads it. A task marks no punctuation, so a trained run takes
        only None."""
        if self.is_pretrained:
            from .pretrained import load_tokenizer

            corpus = self.corpus
            if drop_punct is not None and drop_punct != corpus.drop_punct:
                if not drop_punct:
                    raise ValueError(
                        f"{self.path} reads its corpus without punctuation (drop_punct); it "
                        "cannot be put back: create a run without drop_punct to keep it"
                    )
                corpus = Corpus(corpus.path, corpus.format, True)
            tokenizer = load_tokenizer(self.config[PRETRAINED]["path"])
            return corpus.examples(tokenizer, split, n, seed, special_tokens=self.special_tokens)
        if drop_punct is not None:
            raise ValueError(
                f"{self.path} is a trained run: its task's sequences mark no punctuation"
            )
        if n is None:
            raise ValueError("a task's examples need a count n")
        return self.task.sample(n, split, seed)

    @property
    def label_names_path(self) -> Path:
        """``label_names.json``: the names behind the ids of a pretrained run's string labels
        (``{"pos": [tag, ...], "constituent": [...]}``; a label's id is its index), written
        when the run is created."""
        return self.path / LABEL_NAMES

    def label_names(self) -> dict[str, list[str]]:
        """The stored label names (:attr:`label_names_path`); ``{}`` when the run has none
        (a trained run, a text corpus, or a run written before they were stored)."""
        if not self.label_names_path.exists():
            return {}
        return read_json(self.label_names_path)

    def model_id(self, step: int) -> dict[str, Any]:
        """What identifies the model at ``step`` in the stores captured from it: the run's
        config and the checksum of the checkpoint's weights (trained runs), or the folder
        and the checksums of its weight files (pretrained runs)."""
        if self.is_pretrained:
            folder = Path(self.config[PRETRAINED]["path"])
            weights = sorted(
                p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt")
            )
            return {
                PRETRAINED: str(folder),
                "step": step,
                "weights_sha256": {p.name: sha256_file(p) for p in weights},
            }
        state = read_json(self.checkpoint_dir(step) / STATE_FILE)
        return {
            "run": self.config,
            "step": step,
            "weights_sha256": state["sha256"]["model.safetensors"],
        }

    @property
    def task(self) -> Task:
        if self.is_pretrained:
            raise ValueError(
                f"{self.path} analyses a pretrained model on a corpus and has no task; "
                "its data are run.examples(split)"
            )
        t = self.config["task"]
        return get_task(t["name"], **t.get("params", {}))

    @property
    def model_config(self) -> ModelConfig | ArchConfig:
        """The model's config: an :class:`~hierlens.models.architectures.ArchConfig` when
        ``config.json``'s ``model`` has an ``"arch"`` key, else a :class:`ModelConfig`."""
        return model_config_from_dict(self.config["model"])

    @property
    def train_config(self) -> TrainConfig | None:
        return TrainConfig.from_dict(self.config["train"]) if "train" in self.config else None

    @property
    def metrics_path(self) -> Path:
        """``metrics.jsonl``: training-loss and evaluation records."""
        return self.path / METRICS

    def metrics(self, split: str | None = None) -> list[dict[str, Any]]:
        """Records of ``metrics.jsonl`` (only those of ``split`` when given)."""
        records = read_jsonl(self.metrics_path)
        return [r for r in records if split is None or r.get("split") == split]

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoints_dir(self) -> Path:
        """``checkpoints/``."""
        return self.path / CHECKPOINTS

    def checkpoint_dir(self, step: int) -> Path:
        """``checkpoints/step_NNNNNNN/``: the checkpoint of ``step``."""
        return self.checkpoints_dir / step_dir_name(step)

    def checkpoint_dirs(self) -> dict[int, Path]:
        """``{step: folder}`` of every checkpoint folder (complete or not), by step."""
        return _step_dirs(self.checkpoints_dir)

    @property
    def steps(self) -> list[int]:
        """Steps that have a complete checkpoint (``[0]`` for a pretrained run)."""
        if self.is_pretrained:
            return [PRETRAINED_STEP]
        return [s for s, path in self.checkpoint_dirs().items() if (path / STATE_FILE).exists()]

    def load_model(
        self, step: int | None = None, device: str | torch.device | None = None
    ) -> TransformerBridge | torch.nn.Module:
        """The model at checkpoint ``step`` (default: the newest valid checkpoint)."""
        from hierlens.core.device import resolve_device

        dev = resolve_device(device)
        if self.is_pretrained:
            if step not in (None, PRETRAINED_STEP):
                raise ValueError(f"{self.path}: a pretrained model has only step {PRETRAINED_STEP}")
            return self.pretrained(dev).model
        if step is None:
            ckpt = latest_valid_checkpoint(self.path)
            if ckpt is None:
                raise FileNotFoundError(f"{self.path}: no valid checkpoint")
        else:
            if step not in self.steps:
                raise ValueError(
                    f"{self.path}: no checkpoint at step {step}; available steps: {self.steps}"
                )
            ckpt = load_checkpoint(self.checkpoint_dir(step))
        config = self.model_config
        if isinstance(config, ArchConfig):
            model = build_model(config).to(dev)
        else:
            model = build_transformer(config, device=dev)
        model.load_state_dict(ckpt.model_state)
        model.eval()
        return model

    # ------------------------------------------------------------------ activations
    @property
    def activations_root(self) -> Path:
        """``activations/``."""
        return self.path / ACTIVATIONS

    def activations_dir(self, step: int) -> Path:
        """``activations/step_NNNNNNN/``: the activation store of checkpoint ``step``
        (one ``<hook>/`` folder of shards per hook, written by the store)."""
        return self.activations_root / step_dir_name(step)

    def activation_dirs(self) -> dict[int, Path]:
        """``{step: store folder}`` of the captured checkpoints, by step."""
        return _step_dirs(self.activations_root)

    # ------------------------------------------------------------------ SAEs
    @property
    def saes_dir(self) -> Path:
        """``saes/``: one folder per SAE, plus the grid and MDL tables."""
        return self.path / SAES

    def sae_dir(self, name: str) -> Path:
        """``saes/<name>/``: where the SAE called ``name`` is saved (SAELens layout)."""
        if not isinstance(name, str) or not name or name in (".", "..") or "/" in name:
            raise ValueError(f"an SAE name must be a non-empty folder name, got {name!r}")
        if name in LEGACY_SAE_GROUPS:
            raise ValueError(f"{name!r} is reserved (older runs keep SAEs in saes/{name}/)")
        return self.saes_dir / name

    def sae_dirs(self) -> dict[str, Path]:
        """``{name: folder}`` of every saved SAE (a folder with ``cfg.json``), by name.

        Reads ``saes/<name>/`` and, for runs written before that was the one location,
        ``saes/grid/<name>/`` and ``saes/mdl/<name>/`` (a name in ``saes/`` wins).
        """
        found: dict[str, Path] = {}
        roots = [self.saes_dir] + [self.saes_dir / g for g in LEGACY_SAE_GROUPS]
        for root in roots:
            if not root.is_dir():
                continue
            for entry in sorted(root.iterdir()):
                if (entry / SAE_CONFIG_FILE).is_file():
                    found.setdefault(entry.name, entry)
        return dict(sorted(found.items()))

    @property
    def sae_table_path(self) -> Path:
        """``saes/table.jsonl``: one row of metrics and description length per SAE."""
        return self.saes_dir / "table.jsonl"

    @property
    def sae_frontier_path(self) -> Path:
        """``saes/frontier.json``: the L0 frontier of the run's SAEs (one record per SAE:
        sparsity, FVU, spliced CE and the scores against the task's known features)."""
        return self.saes_dir / "frontier.json"

    @property
    def saebench_dir(self) -> Path:
        """``saes/saebench/``: SAE evaluations in SAEBench's result layout
        (``<eval_type>/<release>_<sae_id>_eval_results.json``)."""
        return self.saes_dir / "saebench"

    @property
    def mdl_table_path(self) -> Path:
        """``saes/mdl_table.jsonl``: the MDL selection's table (``saes/mdl/mdl_table.jsonl``
        in older runs, returned when only that one exists)."""
        return self._with_legacy("mdl_table.jsonl")

    @property
    def mdl_selection_path(self) -> Path:
        """``saes/mdl_selection.json``: the SAE the MDL selection chose and its ranking
        (``saes/mdl/mdl_selection.json`` in older runs, returned when only that exists)."""
        return self._with_legacy("mdl_selection.json")

    def _with_legacy(self, name: str) -> Path:
        current = self.saes_dir / name
        legacy = self.saes_dir / "mdl" / name
        return legacy if legacy.exists() and not current.exists() else current

    # ------------------------------------------------------------------ probes, tracking, output
    @property
    def probes_dir(self) -> Path:
        """``probes/``."""
        return self.path / PROBES

    @property
    def probe_results_path(self) -> Path:
        """``probes/results.jsonl``: one record per probe of the sweep."""
        return self.probes_dir / "results.jsonl"

    @property
    def structural_probe_path(self) -> Path:
        """``probes/structural.jsonl``: structural-probe metrics per layer (and control)."""
        return self.probes_dir / "structural.jsonl"

    @property
    def causal_dir(self) -> Path:
        """``causal/``: activation patching and DAS results."""
        return self.path / "causal"

    @property
    def patching_path(self) -> Path:
        """``causal/patching.json``: patching effects (hook x position before the query) per
        variable, with attribution patching's agreement."""
        return self.causal_dir / "patching.json"

    @property
    def das_path(self) -> Path:
        """``causal/das.jsonl``: DAS interchange-intervention accuracy per variable and hook,
        with its controls and the probe accuracy at the same hook."""
        return self.causal_dir / "das.jsonl"

    @property
    def tree_scores_path(self) -> Path:
        """``tree_scores.jsonl``: tree score and parse F1 of tree projections per layer."""
        return self.path / "tree_scores.jsonl"

    @property
    def stage_settings_path(self) -> Path:
        """``pipeline_stages.json``: the settings of the pipeline stages whose results a
        rerun reuses (``{"sae": {...}, "probes": {...}}``), so that other settings are refused
        instead of silently ignored."""
        return self.path / "pipeline_stages.json"

    @property
    def tracking_path(self) -> Path:
        """``tracking.jsonl``: grokking metrics, one record per tracked checkpoint."""
        return self.path / TRACKING

    @property
    def report_path(self) -> Path:
        """``report.html``."""
        return self.path / REPORT

    @property
    def figures_dir(self) -> Path:
        """``figures/``."""
        return self.path / FIGURES

    def trackers(self, stage: str) -> TrackerPaths:
        """Where the experiment trackers of ``stage`` (``train``, ``saes``, ``track``,
        ``export``) keep their files and run ids: ``trackers/<stage>/``."""
        if not stage or "/" in stage or stage.startswith("."):
            raise ValueError(f"a tracker stage must be a plain name, got {stage!r}")
        return TrackerPaths(self.path / TRACKERS / stage)


class TrackerPaths:
    """The files of the experiment trackers of one stage, under ``root``: TensorBoard event
    files, the W&B run folder and run id, the local MLflow file store and run id."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"TrackerPaths({str(self.root)!r})"

    @property
    def tensorboard_dir(self) -> Path:
        """``tensorboard/``: the event files."""
        return self.root / "tensorboard"

    @property
    def wandb_dir(self) -> Path:
        """The folder W&B writes its ``wandb/`` run folders under."""
        return self.root

    @property
    def wandb_id_path(self) -> Path:
        """``wandb_run_id``: the W&B run id, so a resumed run continues the same W&B run."""
        return self.root / "wandb_run_id"

    @property
    def mlflow_store(self) -> Path:
        """``mlruns/``: the default (local file) MLflow tracking store."""
        return self.root / "mlruns"

    @property
    def mlflow_id_path(self) -> Path:
        """``mlflow_run_id``: the MLflow run id (and its tracking URI), for resuming."""
        return self.root / "mlflow_run_id.json"


class RunLockedError(OSError):
    """Another process holds the run directory's writer lock."""

    def __str__(self) -> str:
        return str(self.strerror)


_locks: dict[str, list[int]] = {}  # real path of the lock file -> [fd, depth]
_locks_guard = threading.Lock()


def _os_error(exc: OSError, path: Path) -> OSError:
    if exc.filename is not None:
        return exc
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def _acquire(run: Run) -> str:
    try:
        run.path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _os_error(exc, run.path) from exc
    key = os.path.realpath(run.lock_path)
    with _locks_guard:
        held = _locks.get(key)
        if held is not None:
            held[1] += 1
            return key
        try:
            fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _os_error(exc, run.lock_path) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
            os.close(fd)
            who = f"pid {holder[0]} on host {holder[1]}" if len(holder) >= 2 else "another process"
            raise RunLockedError(
                errno.EAGAIN,
                f"{run.path} is being written by {who} (lock {run.lock_path}); wait for it to "
                "finish or use another run directory",
                str(run.lock_path),
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        except OSError:
            pass  # a full disk: the lock holds without the holder's name
        _locks[key] = [fd, 1]
        return key


def _release(key: str) -> None:
    with _locks_guard:
        held = _locks[key]
        held[1] -= 1
        if held[1] == 0:
            del _locks[key]
            fcntl.flock(held[0], fcntl.LOCK_UN)
            os.close(held[0])


def _remove_if_only_lock(run: Run) -> None:
    """Remove a directory that :meth:`Run.lock` created and nothing else wrote into."""
    try:
        if {p.name for p in run.path.iterdir()} <= {LOCK_FILE}:
            run.lock_path.unlink(missing_ok=True)
            run.path.rmdir()
    except OSError:
        pass


F = TypeVar("F", bound=Callable[..., Any])


def locks_run(argument: str = "run_dir") -> Callable[[F], F]:
    """Decorator: the function holds the writer lock (:meth:`Run.lock`) of the run
    directory passed as its ``argument`` while it runs."""

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            run_dir = signature.bind(*args, **kwargs).arguments[argument]
            with Run(run_dir).lock():
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def _not_a_run(run: Run) -> FileNotFoundError:
    """The error for a folder without ``config.json`` (naming the missing file)."""
    return FileNotFoundError(
        errno.ENOENT,
        f"{run.path} is not a hierlens run directory (no {CONFIG})",
        str(run.config_path),
    )


def open_run(run_dir: str | os.PathLike | Run) -> Run:
    """Open an existing run directory (written by :func:`hierlens.models.train`), checking
    that its ``config.json`` names a task and a model."""
    run = run_dir if isinstance(run_dir, Run) else Run(run_dir)
    if not run.config_path.exists():
        raise _not_a_run(run)
    config = read_json(run.config_path)
    trained = isinstance(config, dict) and "task" in config and "model" in config
    pretrained = isinstance(config, dict) and PRETRAINED in config and "data" in config
    if not (trained or pretrained):
        raise ValueError(
            f"{run.config_path}: expected keys 'task' and 'model' (a trained run) or "
            f"'{PRETRAINED}' and 'data' (a pretrained model on a corpus)"
        )
    return Run(run.path, config)


# ---------------------------------------------------------------- checkpoints by run
def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    """``run_dir/checkpoints/step_NNNNNNN`` (:meth:`Run.checkpoint_dir`)."""
    return Run(run_dir).checkpoint_dir(step)


def list_checkpoints(run_dir: str | os.PathLike) -> list[int]:
    """Steps of the checkpoint folders in ``run_dir`` (complete by construction), sorted."""
    return Run(run_dir).steps


def latest_valid_checkpoint(
    run_dir: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> Checkpoint | None:
    """The newest checkpoint that loads and verifies; corrupt ones are reported (by path, at
    WARNING level) and skipped for the previous good one. ``None`` when there is none."""
    for step in reversed(list_checkpoints(run_dir)):
        path = checkpoint_path(run_dir, step)
        try:
            return load_checkpoint(path, map_location=map_location)
        except CorruptFileError as exc:
            log.warning("skipping corrupt checkpoint %s: %s", path, exc)
    return None
