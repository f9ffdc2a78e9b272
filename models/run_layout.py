"""The layout of a run directory: :class:`RunLayout` names every path in it and lists what it
holds (:class:`~hierlens.models.run.Run` adds loading what it holds).

```
runs/<name>/
  config.json                       # {"task": {"name", "params"}, "model": ..., "train": ...}
  label_names.json                  # pretrained runs: names of the string labels' ids
  metrics.jsonl                     # one JSON object per log/eval: step, split, metric values
  checkpoints/step_0000500/         # model.safetensors, state.safetensors, state.json
  activations/step_0000500/<hook>/  # an ActivationStore: shards per hook, manifest.json
  saes/<name>/                      # cfg.json + sae_weights.safetensors (SAELens layout)
  saes/table.jsonl                  # metrics and description length of the SAE grid
  saes/training/<key>/              # checkpoints of an SAE grid being trained (fit-sae)
  saes/mdl_table.jsonl              # the MDL selection's table ...
  saes/mdl_selection.json           # ... and its choice
  probes/results.jsonl              # one record per (hook, feature, k, selection) probe
  probes/structural.jsonl           # structural probes per layer (and their controls)
  tree_scores.jsonl                 # tree projections per layer: tree score, parse F1
  pipeline_stages.json              # settings of the pipeline stages a rerun reuses
  causal/patching.json              # activation patching per variable (and attribution)
  causal/das.jsonl                  # DAS accuracy per variable and hook, with controls
  tracking.jsonl                    # grokking metrics per checkpoint
  trackers/<stage>/                 # TensorBoard/W&B/MLflow files and run ids (train, saes, track, export)
  report.html
  figures/
```

A run is *trained* (``config.json`` names a task, a model config and a training config;
``checkpoints/`` holds the steps) or *pretrained*: ``config.json`` names a local Hugging Face
folder, a corpus and the special tokens that frame its sentences (``{"pretrained": {"path"},
"data": {...}, "special_tokens": {"policy", "prefix", "suffix"}}``, see
:func:`~hierlens.models.run_load.pretrained_run_config`), the model is that folder as loaded (its one state is step 0,
so ``activations/step_0000000/``), and the data are the corpus's sentences
(:meth:`Run.examples`). Every later stage (SAEs, probes, tree scores, structural probes, the
report) reads both kinds the same way.

No other module builds these paths: writers and readers alike ask a :class:`Run`.

One process at a time writes a run: :meth:`Run.lock` (:mod:`~hierlens.models.run_lock`)
holds the run's writer lock. Training, checkpoint capture, SAE fitting, probes, tracking and
the pipeline hold it; ``eval`` reads only, and ``report`` writes one file (``report.html``)
atomically, so neither takes it. Under ``torchrun`` rank 0 holds it.

Every file of the run is opened through the confined file layer
(:mod:`~hierlens.core.confined_io`): while a writer holds the lock, and while a reader is
inside :meth:`Run.confined`, nothing under the run directory is reached through a symbolic
link or outside the directory, and listing a folder that holds a link is an error naming
it. ``Run(path)`` works for a directory that does not exist yet (writers create what they
write); :func:`~hierlens.models.run.open_run` opens an existing run and checks its
``config.json``; loading (checkpoints, models) is :mod:`~hierlens.models.run_load`'s.
Runs written before SAEs had one location (``saes/grid/<name>/``, ``saes/mdl/<name>/``) are
still read: :meth:`Run.sae_dirs` lists those SAEs too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hierlens.core import confined_io as fs
from hierlens.core.atomic_io import (
    OptionalField,
    read_json,
    read_jsonl,
    salvage_jsonl,
    write_checked_json,
)
from hierlens.core.validate import check_int

from .checkpoint import STATE_FILE
from .corpus import Corpus
from .run_lock import LOCK_FILE, hold_lock
from .tracker_paths import TrackerPaths

if TYPE_CHECKING:  # pragma: no cover
    pass

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
ACTIVATIONS = "activations"
SAES = "saes"
PROBES = "probes"
TRACKING = "tracking.jsonl"
REPORT = "report.html"
FIGURES = "figures"
TRACKERS = "trackers"
PRETRAINED = "pretrained"  # config.json key of a pretrained run
PRETRAINED_STEP = 0  # the one state of a pretrained model
SPECIAL_TOKENS = "special_tokens"  # config.json key: a pretrained run's resolved frame
LABEL_NAMES = "label_names.json"  # names of the string labels' ids (POS tags, phrases)
STAGE_SETTINGS = "pipeline_stages.json"  # settings of the pipeline stages a rerun reuses
#: folders that held SAEs before ``saes/<name>/`` was their one location
LEGACY_SAE_GROUPS = ("grid", "mdl")
SAE_CONFIG_FILE = "cfg.json"
SAE_TRAINING = "training"  # saes/training/<key>/: checkpoints of SAE grids being trained
#: fields every ``metrics.jsonl`` record has (checked when it is read)
METRICS_SCHEMA: dict[str, Any] = {"step": int, "split": str}
#: the fields every record of a run's JSONL files has, by path inside the run
#: (:meth:`Run.read_records` checks them)
RECORD_SCHEMAS: dict[str, dict[str, Any]] = {
    METRICS: METRICS_SCHEMA,
    "tracking.jsonl": {"step": int, "settings": dict},
    # ``settings`` (how a record was computed) is absent only from records written before
    # records held it, which their readers recognise by its absence
    "tree_scores.jsonl": {
        "step": int,
        "split": str,
        "layer": int,
        "method": str,
        "settings": OptionalField(dict),
    },
    "probes/results.jsonl": {"hook": str, "feature": str, "k": int, "selection": str},
    "probes/structural.jsonl": {"model": str, "settings": OptionalField(dict)},
    "saes/table.jsonl": {"name": str},
    "saes/mdl_table.jsonl": {"name": str},
    "causal/das.jsonl": {"variable": str, "hook": str},
}

_STEP_DIR = re.compile(r"^step_(\d{7,})$")

__all__ = [
    "LABEL_NAMES",
    "LOCK_FILE",
    "METRICS_SCHEMA",
    "RECORD_SCHEMAS",
    "SPECIAL_TOKENS",
    "STAGE_SETTINGS",
    "RunLayout",
    "step_dir_name",
]


def step_dir_name(step: int) -> str:
    """``step_NNNNNNN``: the folder name of a step (checkpoints, activation stores)."""
    check_int("a step", step, minimum=0)
    return f"step_{step:07d}"


def _links_refused(folder: Path, found: dict[str, str], names: Iterator[str]) -> None:
    for name in names:
        if found.get(name) in ("link", "other"):
            raise fs.UnsafePathError(
                errno.ELOOP,
                "a symbolic link or special file inside the run directory; hierlens never "
                "follows links there (remove it)",
                str(folder / name),
            )


def _step_dirs(root: Path) -> dict[int, Path]:
    """``{step: folder}`` of the ``step_NNNNNNN`` folders directly under ``root`` (a link
    with such a name is an :class:`~hierlens.core.confined_io.UnsafePathError`)."""
    found = fs.entries(root)
    _links_refused(root, found, (n for n in found if _STEP_DIR.match(n)))
    out = {
        int(_STEP_DIR.match(n).group(1)): root / n
        for n, k in found.items()
        if k == "dir" and _STEP_DIR.match(n)
    }
    return dict(sorted(out.items()))


class RunLayout:
    """A run directory: the paths of its layout and readers for the files in it.

    ``RunLayout(path)`` does not touch the disk, so a writer can name the paths of a run it
    is about to create; ``config`` is read from ``config.json`` when first asked for, unless
    given.
    """

    def __init__(
        self, path: str | os.PathLike | RunLayout, config: dict[str, Any] | None = None
    ) -> None:
        if isinstance(path, RunLayout):
            config = path._config if config is None else config
            path = path.path
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"a run directory must be a path, got {type(path).__name__}")
        if config is not None and not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        self.path = Path(path)
        self._config = config

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunLayout) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    # ------------------------------------------------------------------ access and the lock
    def confined(self) -> contextlib.AbstractContextManager[None]:
        """A context in which every file under the run directory is reached without
        following a link (:func:`~hierlens.core.confined_io.confine`); writers get it
        with :meth:`lock`."""
        return fs.confine(self.path)

    def has(self, path: str | os.PathLike) -> bool:
        """Whether the file or folder ``path`` of the run exists (a link on the way is an
        :class:`~hierlens.core.confined_io.UnsafePathError`)."""
        return fs.file_kind(path, root=self.path) is not None

    @property
    def lock_path(self) -> Path:
        """``.hierlens.lock``: the file :meth:`lock` locks."""
        return self.path / LOCK_FILE

    @contextlib.contextmanager
    def lock(self, enabled: bool | None = None) -> Iterator[RunLayout]:
        """Hold the run's exclusive writer lock for the ``with`` block, file access confined
        to the run (see :func:`~hierlens.models.run_lock.hold_lock`)."""
        with hold_lock(self.path, enabled):
            yield self

    # ------------------------------------------------------------------ config and metrics
    @property
    def config_path(self) -> Path:
        """``config.json``: the config that produced the run."""
        return self.path / CONFIG

    @property
    def exists(self) -> bool:
        """Whether the directory holds a run (a config or any checkpoint)."""
        return self.has(self.config_path) or self.has(self.checkpoints_dir)

    @property
    def config(self) -> dict[str, Any]:
        """The contents of ``config.json`` (read once, checked against its checksum)."""
        if self._config is None:
            if not self.has(self.config_path):
                raise FileNotFoundError(
                    errno.ENOENT,
                    f"{self.path} is not a hierlens run directory (no {CONFIG})",
                    str(self.config_path),
                )
            with self.confined():
                config = read_json(self.config_path)
            if not isinstance(config, dict):
                raise ValueError(f"{self.config_path}: expected a JSON object")
            self._config = config
        return self._config

    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config.json`` atomically, checksummed (creating the directory)."""
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        with self.confined():
            write_checked_json(self.config_path, config)
        self._config = config

    @property
    def is_pretrained(self) -> bool:
        """Whether the run analyses a pretrained model (see the module docstring); False for
        a run whose ``config.json`` is not written yet."""
        if self._config is None and not self.has(self.config_path):
            return False
        return PRETRAINED in self.config

    @property
    def corpus(self) -> Corpus:
        """The sentences of a pretrained run."""
        if not self.is_pretrained:
            raise ValueError(f"{self.path} is a trained run; its data come from its task")
        return Corpus.from_dict(self.config["data"])

    @property
    def metrics_path(self) -> Path:
        """``metrics.jsonl``: training-loss and evaluation records."""
        return self.path / METRICS

    def metrics(self, split: str | None = None) -> list[dict[str, Any]]:
        """Records of ``metrics.jsonl`` (only those of ``split`` when given)."""
        records = self.read_records(self.metrics_path)
        return [r for r in records if split is None or r.get("split") == split]

    def read_records(self, path: str | os.PathLike, writer: bool = False) -> list[dict[str, Any]]:
        """The records of the run's JSONL file ``path`` (``[]`` when it does not exist),
        read confined to the run, checked against their checksum and the file's schema
        (:data:`RECORD_SCHEMAS`). ``writer``: the caller writes the file (and holds the
        lock): a file that fails its checks is cut to its valid leading records with a
        warning (:func:`~hierlens.core.atomic_io.salvage_jsonl`) instead of refused."""
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(self.path))
        schema = RECORD_SCHEMAS.get(rel.replace(os.sep, "/"))
        with self.confined():
            if writer:
                return salvage_jsonl(path, schema=schema) if self.has(path) else []
            return read_jsonl(path, schema=schema)

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
        with self.confined():
            return _step_dirs(self.checkpoints_dir)

    @property
    def steps(self) -> list[int]:
        """Steps that have a complete checkpoint (``[0]`` for a pretrained run)."""
        if self.is_pretrained:
            return [PRETRAINED_STEP]
        return [s for s, path in self.checkpoint_dirs().items() if self.has(path / STATE_FILE)]

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
        with self.confined():
            return _step_dirs(self.activations_root)

    # ------------------------------------------------------------------ SAEs
    @property
    def saes_dir(self) -> Path:
        """``saes/``: one folder per SAE, plus the grid and MDL tables."""
        return self.path / SAES

    def sae_dir(self, name: str) -> Path:
        """``saes/<name>/``: where the SAE called ``name`` is saved (SAELens layout)."""
        if (
            not isinstance(name, str)
            or not name
            or name in (".", "..")
            or "/" in name
            or "\0" in name
        ):
            raise ValueError(f"an SAE name must be a non-empty folder name, got {name!r}")
        if name in LEGACY_SAE_GROUPS:
            raise ValueError(f"{name!r} is reserved (older runs keep SAEs in saes/{name}/)")
        if name == SAE_TRAINING:
            raise ValueError(f"{name!r} is reserved (saes/{name}/ holds training checkpoints)")
        return self.saes_dir / name

    def sae_training_dir(self, key: str) -> Path:
        """``saes/training/<key>/``: the checkpoints of an SAE grid being trained (``key``
        names the grid and its settings), removed when its SAEs are saved."""
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", key or "") or key in (".", ".."):
            raise ValueError(f"a training key must be a plain folder name, got {key!r}")
        return self.saes_dir / SAE_TRAINING / key

    def sae_dirs(self) -> dict[str, Path]:
        """``{name: folder}`` of every saved SAE (a folder with ``cfg.json``), by name.

        Reads ``saes/<name>/`` and, for runs written before that was the one location,
        ``saes/grid/<name>/`` and ``saes/mdl/<name>/`` (a name in ``saes/`` wins). A link
        among them is an :class:`~hierlens.core.confined_io.UnsafePathError`.
        """
        found: dict[str, Path] = {}
        roots = [self.saes_dir] + [self.saes_dir / g for g in LEGACY_SAE_GROUPS]
        with self.confined():
            for root in roots:
                entries = fs.entries(root)
                _links_refused(root, entries, iter(entries))
                for name, kind in entries.items():
                    if kind == "dir" and fs.file_kind(root / name / SAE_CONFIG_FILE) == "file":
                        found.setdefault(name, root / name)
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
        return legacy if self.has(legacy) and not self.has(current) else current

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
        return self.path / STAGE_SETTINGS

    @property
    def label_names_path(self) -> Path:
        """``label_names.json``: the names behind the ids of a pretrained run's string labels
        (``{"pos": [tag, ...], "constituent": [...]}``; a label's id is its index), written
        when the run is created."""
        return self.path / LABEL_NAMES

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
