"""The whole hierlens pipeline from one config: task -> train -> capture -> SAEs -> probes ->
tree projections and tracking -> report.

Every stage writes into the run directory ``<out_dir>/<name>/`` and skips work whose outputs
already exist and are valid, so an interrupted pipeline resumes where it stopped:

- training resumes from the newest valid checkpoint (bitwise like an uninterrupted run);
- activation capture resumes per shard (``activations/step_NNNNNNN/``);
- SAEs that are already saved (``saes/<name>/``) are not retrained; ``saes/table.jsonl`` is
  recomputed from the saved SAEs;
- the probe sweep is skipped when ``probes/results.jsonl`` exists;
- the settings that made the SAEs and the probes are stored (``pipeline_stages.json``), and
  a rerun whose ``[sae]`` or ``[probes]`` table differs from them is refused (those results
  would be reused, not recomputed with the new settings);
- tracking (``tracking.jsonl``) skips checkpoints already evaluated;
- the report is rewritten at the end.

Configs are TOML, JSON or dicts with the sections below; every field is checked before any
training starts, and errors name the section and field.
"""

from .config import (
    DEMO_CONFIG,
    CaptureStage,
    PipelineConfig,
    ProbeStage,
    SAEStage,
    StructuralStage,
    TreeStage,
    load_config,
)
from .run import run
from .stages import sae_train_config

__all__ = [
    "DEMO_CONFIG",
    "CaptureStage",
    "PipelineConfig",
    "ProbeStage",
    "SAEStage",
    "StructuralStage",
    "TreeStage",
    "load_config",
    "run",
    "sae_train_config",
]
