"""Paper figures: a registry of sixteen figures and :func:`reproduce`, which computes a figure's
data (at its full or ``quick`` setting, or another setting the figure names), writes it to
``NAME.json`` and draws ``NAME.png`` and ``NAME.pdf`` (``hierlens reproduce NAME [--quick |
--setting NAME]``).

Full settings and their run times. ``--quick`` runs each figure in about a minute or less on
one CPU core (measured 4-35 s of compute per figure on an idle core, up to 71 s on a shared
one; all seven in 4 minutes); the tests run each at an even smaller size.

- ``grokking-curves`` [Murty2023b]: in-domain vs OOD first-word accuracy over training
  on question formation, :data:`GROKKING_FULL` (a 4-layer causal transformer, d_model 64,
  30k steps at batch 64, sequence loss, constant learning rate 1e-3; every checkpoint
  tracked). Measured 76 min of training on one thread of a shared 2-core CPU, plus 37 s to
  track its 24 checkpoints (``examples/structural_grokking.py``).
- ``tree-score-over-training``: tree score and parse F1 of the tree projections beside OOD
  accuracy, from the same run (drawn into the same folder, the run is reused).
- ``depth-inverted-u``: final and best OOD accuracy and tree score vs number of layers,
  :data:`DEPTH_FULL` (depths 2, 4, 6, 8 x 3 seeds, 30k steps each). Estimated 15-20 h on one
  CPU core, from the measured 4-layer run above (deeper models take longer per step).
- ``mpsae-hierarchy`` [Costa2025]: MP-SAE vs TopK/ReLU concept recovery per tree
  level, :data:`CONCEPTS_FULL` (8 parents x 4 children, d=64). Measured 48 s on 2 CPU cores.
- ``mdl-digits`` [Ayonrinde2024]: description length vs width and atoms,
  :data:`MDL_FULL` (TopK widths 8-256 x k 2-32, 800 steps). Measured ~15 min on 2 busy cores.
- ``sparse-probing-f1-vs-k`` [Gurnee2023]: probe F1 vs k per layer of a Dyck
  transformer, :data:`PROBING_FULL`. Measured 28 s on one CPU core.
- ``causal-dyck`` (DAS, Geiger et al. 2024; patching, Meng et al. 2022): stack-top patching
  heatmap and DAS IIA per hook for depth and stack top beside probe accuracy and the
  random-weights control, on a Dyck transformer, :data:`CAUSAL_FULL`.
- ``causal-question`` (the same study on question formation, McCoy et al. 2020): main-
  auxiliary patching, interchange maps and rank-4 DAS for the main auxiliary and the
  subject's extent beside probe accuracy and the controls, :data:`CAUSAL_QUESTION_FULL`.
- ``filtering-vs-bp`` [GarnierBrun2025]: transformer vs exact belief propagation per
  filtering level 0-4, :data:`FILTERING_FULL` (1000 steps per level). Measured 29 min wall on
  one CPU core shared with other jobs (13 min of CPU time).
- ``structural-probe-layers`` [Hewitt2019]: distance and depth structural probes
  per layer of MiniLM-L6 vs the same architecture with random weights and a linear-chain
  baseline, on the 65 shipped treebank sentences (train/dev/test 39/13/13),
  :data:`STRUCTURAL_FULL`. Measured 11.6 min on a 2-core CPU shared with other jobs.

- ``cka-across-seeds`` [Kornblith2019]: layer x layer linear CKA between two seeds of
  a 4-layer Dyck transformer (600 steps each) and between its step-100 and final
  checkpoints, :data:`CKA_FULL`. Measured 3.5 min on a shared 2-core CPU.
- ``rank-collapse-depth`` [Dong2021]: rank-collapse residual vs depth of randomly
  initialised 24-block transformers along four paths, :data:`RANK_FULL`. Measured 3.7 min.
- ``sae-geometry-spectrum`` [Li2024]: decoder eigenvalue spectrum and power-law
  slope of a TopK SAE per layer, :data:`SAE_GEOMETRY_FULL`. Measured 4.1 min.
- ``sae-frontier`` [Costa2025] [Bussmann2025]: every SAE architecture at four
  sparsities, FVU, spliced CE, MCC, F1 and absorption against L0 on [Costa2025]'s toy
  (within-group cosines 0.0 and 0.8) and on a hierarchical-filtering transformer's residual
  stream, :data:`FRONTIER_FULL`. Measured 17.8 min on a 2-core CPU shared with other jobs.
- ``chomsky-table`` [Deletang2023]: length generalisation of 7 tasks x 5
  architectures beside the paper's Table 2, :data:`CHOMSKY_FULL` (estimated 10-20 h); its
  named setting ``modest`` (:data:`CHOMSKY_MODEST`, ``--setting modest``) trains the same 35
  cells at 900 steps: measured 10.1 min on a 2-core CPU shared with other jobs.

Each figure is one data function (in :mod:`.training`, the per-experiment modules such as
:mod:`.mdl_digits`, and :mod:`.representations`) and one pure plotting function (:mod:`.plot`,
:mod:`.plot_representations`); a
figure's ``NAME.json`` holds ``{"name", "quick", "setting", "settings", "seconds", "data"}``, and
:func:`redraw` draws the figure again from it. ``hierlens reproduce list`` prints the same run
times (:attr:`FigureSpec.full_runtime`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hierlens.core.atomic_io import read_json, write_checked_json

from ..sweep import plot_depth_inverted_u
from . import plot as fp
from . import plot_representations as fr
from .settings import (
    CAUSAL_FULL,
    CAUSAL_QUESTION_FULL,
    CAUSAL_QUESTION_QUICK,
    CAUSAL_QUICK,
    CHOMSKY_FULL,
    CHOMSKY_MODEST,
    CHOMSKY_QUICK,
    CKA_FULL,
    CKA_QUICK,
    CONCEPTS_FULL,
    CONCEPTS_QUICK,
    CORRELATION_FULL,
    CORRELATION_QUICK,
    DEPTH_FULL,
    DEPTH_QUICK,
    FILTERING_FULL,
    FILTERING_QUICK,
    FRONTIER_FULL,
    FRONTIER_QUICK,
    GROKKING_FULL,
    GROKKING_QUICK,
    MDL_FULL,
    MDL_QUICK,
    PROBING_FULL,
    PROBING_QUICK,
    RANK_FULL,
    RANK_QUICK,
    SAE_GEOMETRY_FULL,
    SAE_GEOMETRY_QUICK,
    STRUCTURAL_FULL,
    STRUCTURAL_QUICK,
)

log = logging.getLogger(__name__)


def _grokking(out_dir: Path, device: str | None, progress: bool, **settings: Any) -> dict:
    from .training import training_curves

    return training_curves(out_dir=out_dir, device=device, progress=progress, **settings)


def _depth(out_dir: Path, device: str | None, progress: bool, **settings: Any) -> dict:
    from .training import depth_sweep

    return depth_sweep(out_dir=out_dir, device=device, **settings)


def _concepts(out_dir: Path, device: str | None, progress: bool, **settings: Any) -> dict:
    from hierlens.models.tasks.concepts import HierarchicalConcepts

    from .concept_recovery import concept_recovery

    params = dict(settings.pop("concepts"))
    params["n_children"] = tuple(params.get("n_children", (3,)))
    return concept_recovery(
        HierarchicalConcepts(**params), device=device, progress=progress, **settings
    )


def _correlation(out_dir: Path, device: str | None, progress: bool, **settings: Any) -> dict:
    from .correlation import mpsae_correlation

    return mpsae_correlation(device=device or "cpu", progress=progress, **settings)


def _mdl(out_dir: Path, device: str | None, progress: bool, **settings: Any) -> dict:
    from .mdl_digits import mdl_digits

    return mdl_digits(device=device, progress=progress, **settings)


def _probing(out_dir: Path, device: str | None, progress: bool, **settings: Any) -> dict:
    from .sparse_probing import sparse_probing

    return sparse_probing(device=device, progress=progress, **settings)


def _structural(out_dir: Path, device: str | None, progress: bool, **settings: Any) -> dict:
    from .structural import structural_probe_layers

    return structural_probe_layers(device=device, **settings)


def _filtering(out_dir: Path, device: str | None, progress: bool, **settings: Any) -> dict:
    from .filtering_vs_bp import filtering_vs_bp

    return filtering_vs_bp(
        run_dir=out_dir / "filtering_runs", device=device, progress=progress, **settings
    )


def _cka(out_dir: Path, device: str | None, progress: bool, **settings: Any) -> dict:
    from .representations import cka_across_seeds

    return cka_across_seeds(out_dir=out_dir, device=device, progress=progress, **settings)


def _rank(out_dir: Path, device: str | None, progress: bool, **settings: Any) -> dict:
    from .representations import rank_collapse_depth

    return rank_collapse_depth(device=device, progress=progress, **settings)


def _sae_geometry(out_dir: Path, device: str | None, progress: bool, **settings: Any) -> dict:
    from .representations import sae_geometry_spectrum

    return sae_geometry_spectrum(out_dir=out_dir, device=device, progress=progress, **settings)


def _chomsky(out_dir: Path, device: str | None, progress: bool, **settings: Any) -> dict:
    from .chomsky import chomsky_table

    return chomsky_table(out_dir, device, progress, **settings)


def _causal(out_dir: Path, device: str | None, progress: bool, **settings: Any) -> dict:
    from .causal import causal_dyck

    return causal_dyck(device=device or "cpu", progress=progress, **settings)


def _plot_causal(data: dict[str, Any]) -> Any:
    from .causal import plot_causal_dyck

    return plot_causal_dyck(data)


def _causal_question(out_dir: Path, device: str | None, progress: bool, **settings: Any) -> dict:
    from .causal_question import causal_question

    return causal_question(device=device or "cpu", progress=progress, **settings)


def _plot_causal_question(data: dict[str, Any]) -> Any:
    from .causal_question import plot_causal_question

    return plot_causal_question(data)


def _frontier(out_dir: Path, device: str | None, progress: bool, **settings: Any) -> dict:
    from .frontier import sae_frontier

    return sae_frontier(device=device or "cpu", progress=progress, **settings)


def _plot_frontier(data: dict[str, Any]) -> Any:
    from .frontier import plot_sae_frontier

    return plot_sae_frontier(data)


def _plot_chomsky(data: dict[str, Any]) -> Any:
    from .chomsky import plot_chomsky_table

    return plot_chomsky_table(data)


@dataclasses.dataclass(frozen=True)
class FigureSpec:
    """One paper figure.

    Attributes:
        name: registry name (``hierlens reproduce NAME``).
        description: one line.
        compute: ``compute(out_dir, device, progress, **settings) -> data`` (JSON-able).
        plot: ``plot(data) -> matplotlib Figure`` (pure).
        quick, full: the settings of ``--quick`` and of the full figure.
        options: extra keyword options ``compute`` accepts beyond the settings' keys.
        full_runtime: the full setting's run time, saying whether measured or estimated.
        named: further settings by name (``--setting NAME``), e.g. one between quick and full.
    """

    name: str
    description: str
    compute: Callable[..., dict[str, Any]]
    plot: Callable[[dict[str, Any]], Any]
    quick: dict[str, Any]
    full: dict[str, Any]
    full_runtime: str
    options: tuple[str, ...] = ()
    named: Mapping[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def setting_names(self) -> list[str]:
        """``quick``, ``full`` and the figure's named settings."""
        return ["quick", "full", *self.named]

    def settings(
        self, quick: bool, setting_name: str | None = None, **options: Any
    ) -> dict[str, Any]:
        """The setting to compute with: ``quick`` or ``full`` (or the one named
        ``setting_name``), updated by ``options`` (ValueError for a setting or option the
        figure does not take). Named ``setting_name`` because ``setting`` is an option key of
        several figures."""
        base = self._base(quick, setting_name)
        allowed = set(self.quick) | set(self.full) | set(self.options)
        for named in self.named.values():
            allowed |= set(named)
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ValueError(
                f"figure {self.name!r} takes no option(s) {unknown}; options: {sorted(allowed)}"
            )
        return {**base, **options}

    def _base(self, quick: bool, setting: str | None) -> dict[str, Any]:
        if setting is None:
            return self.quick if quick else self.full
        if setting not in self.setting_names:
            raise ValueError(
                f"figure {self.name!r} has no setting {setting!r}; settings: "
                f"{', '.join(self.setting_names)}"
            )
        if quick and setting != "quick":
            raise ValueError(f"quick=True contradicts setting_name={setting!r}; pass one of them")
        return {"quick": self.quick, "full": self.full, **self.named}[setting]


_GROK_OPTIONS = ("steps", "run_dir")
FIGURES: dict[str, FigureSpec] = {
    spec.name: spec
    for spec in (
        FigureSpec(
            "grokking-curves",
            "in-domain vs OOD accuracy over training steps on question formation (Murty et al.)",
            _grokking,
            fp.plot_grokking_curves,
            {"setting": GROKKING_QUICK},
            {"setting": GROKKING_FULL},
            "measured 76 min of training on one thread of a shared 2-core CPU plus 37 s of "
            "tracking (24 checkpoints); the run is shared with tree-score-over-training",
            _GROK_OPTIONS,
        ),
        FigureSpec(
            "tree-score-over-training",
            "tree score and parse F1 of tree projections beside OOD accuracy over training",
            _grokking,
            fp.plot_tree_score_over_training,
            {"setting": GROKKING_QUICK},
            {"setting": GROKKING_FULL},
            "the same run as grokking-curves (reused when both are drawn into one folder)",
            _GROK_OPTIONS,
        ),
        FigureSpec(
            "depth-inverted-u",
            "final/best OOD accuracy and tree score vs number of layers, over seeds",
            _depth,
            plot_depth_inverted_u,
            {"setting": DEPTH_QUICK},
            {"setting": DEPTH_FULL},
            "estimated 15-20 h on one CPU core (12 runs of 30k steps, from the measured "
            "76 min of the 4-layer grokking run)",
            ("steps",),
        ),
        FigureSpec(
            "mpsae-hierarchy",
            "MP-SAE vs TopK vs ReLU recovery of synthetic hierarchical concepts per tree level",
            _concepts,
            fp.plot_mpsae_hierarchy,
            CONCEPTS_QUICK,
            CONCEPTS_FULL,
            "measured 48 s on a 2-core CPU",
            ("lr", "d_sae", "seed"),
        ),
        FigureSpec(
            "mpsae-correlation",
            "MP-SAE vs TopK/BatchTopK/ReLU/Matryoshka child and parent recovery, absorption "
            "and FVU vs within-group cosine on Costa et al.'s toy",
            _correlation,
            fp.plot_mpsae_correlation,
            CORRELATION_QUICK,
            CORRELATION_FULL,
            "measured 21 min on a busy 2-core CPU (niced; 9 cosines x 3 seeds)",
            ("batch_size", "lr", "matryoshka_widths", "data_seed"),
        ),
        FigureSpec(
            "mdl-digits",
            "description length vs dictionary width on 8x8 digits, with SAE atoms",
            _mdl,
            fp.plot_mdl_digits,
            MDL_QUICK,
            MDL_FULL,
            "measured ~15 min on 2 busy CPU cores (examples/mdl_digits.py)",
            ("batch_size", "lr", "seed", "mnist_images", "n_atoms"),
        ),
        FigureSpec(
            "sparse-probing-f1-vs-k",
            "k-sparse probe F1 vs k per layer for Dyck hierarchy labels (Gurnee et al.)",
            _probing,
            fp.plot_sparse_probing,
            PROBING_QUICK,
            PROBING_FULL,
            "measured 28 s on one CPU core",
            ("selection", "seed"),
        ),
        FigureSpec(
            "causal-dyck",
            "where a Dyck transformer uses depth and the stack top: patching and DAS vs probes",
            _causal,
            _plot_causal,
            CAUSAL_QUICK,
            CAUSAL_FULL,
            "measured 20 min on a 2-core CPU shared with other jobs (training 1500 steps, "
            "then patching and rank-1 DAS with controls at 5 hooks x 2 variables)",
            ("seed", "run_dir"),
        ),
        FigureSpec(
            "causal-question",
            "where a question-formation transformer uses the main auxiliary and the subject's "
            "extent: patching, interchange maps and DAS vs probes",
            _causal_question,
            _plot_causal_question,
            CAUSAL_QUESTION_QUICK,
            CAUSAL_QUESTION_FULL,
            "measured 50 min (3010 s) on a 2-core CPU shared with other jobs (load 5-10, niced; "
            "about 2.5 min of training on an idle core), then patching, interchange maps and "
            "rank-4 DAS with controls at 5 hooks x 2 variables",
            ("seed", "run_dir", "n_heads", "lr", "span"),
        ),
        FigureSpec(
            "filtering-vs-bp",
            "transformer vs exact belief propagation root accuracy per filtering level",
            _filtering,
            fp.plot_filtering_vs_bp,
            FILTERING_QUICK,
            FILTERING_FULL,
            "measured 29 min on one busy CPU core (13 min of CPU time)",
            ("q", "depth", "d_model", "n_layers", "batch_size", "train_pool"),
        ),
        FigureSpec(
            "structural-probe-layers",
            "structural probe UUAS/Spearman per layer of MiniLM vs random weights and a "
            "linear-chain baseline (Hewitt & Manning)",
            _structural,
            fp.plot_structural_probe_layers,
            STRUCTURAL_QUICK,
            STRUCTURAL_FULL,
            "measured 11.6 min on a 2-core CPU shared with other jobs (load ~10; 3 min of CPU time)",
            ("model", "lr", "batch_size", "fractions", "seed", "random_seed"),
        ),
        FigureSpec(
            "cka-across-seeds",
            "layer x layer linear CKA between two seeds, and between an early and the final "
            "checkpoint (Kornblith et al.)",
            _cka,
            fr.plot_cka_across_seeds,
            CKA_QUICK,
            CKA_FULL,
            "measured 3.5 min on a shared 2-core CPU (two 600-step runs, niced)",
            ("seeds",),
        ),
        FigureSpec(
            "rank-collapse-depth",
            "rank-collapse residual vs depth at initialisation: pure attention, with skips, "
            "with MLPs (Dong et al.)",
            _rank,
            fr.plot_rank_collapse_depth,
            RANK_QUICK,
            RANK_FULL,
            "measured 3.7 min on a shared 2-core CPU (3 seeds x 4 paths, niced)",
            ("d_vocab",),
        ),
        FigureSpec(
            "sae-geometry-spectrum",
            "eigenvalue power law of TopK SAE decoders trained on each layer (Li et al.)",
            _sae_geometry,
            fr.plot_sae_geometry_spectrum,
            SAE_GEOMETRY_QUICK,
            SAE_GEOMETRY_FULL,
            "measured 4.1 min on a shared 2-core CPU (600-step model, 5 SAEs, niced)",
        ),
        FigureSpec(
            "chomsky-table",
            "length generalisation per Chomsky task x architecture (best over seeds, >= 90% "
            "generalises) beside Deletang et al. 2023 Table 2, with accuracy-vs-length curves",
            _chomsky,
            _plot_chomsky,
            CHOMSKY_QUICK,
            CHOMSKY_FULL,
            "estimated 10-20 h on one CPU core (7 tasks x 5 architectures x 3 seeds x 2 rates "
            "x 10k steps); runs already in OUT/chomsky_runs are reused",
            ("steps", "arch_options"),
            {"modest": CHOMSKY_MODEST},
        ),
        FigureSpec(
            "sae-frontier",
            "every SAE architecture across L0: FVU, spliced CE, MCC, F1 and absorption vs L0 "
            "on Costa et al.'s toy and on a hierarchical-filtering transformer",
            _frontier,
            _plot_frontier,
            FRONTIER_QUICK,
            FRONTIER_FULL,
            "measured 17.8 min (1066 s) on a 2-core CPU shared with other jobs (load 12-19): "
            "two toy frontiers, the filtering model and its frontier, 24 SAEs each",
            ("seed",),
        ),
    )
}


def _spec(name: str) -> FigureSpec:
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; figures: {', '.join(FIGURES)} (or 'all')")
    return FIGURES[name]


def _jsonable(data: Any) -> Any:
    """``data`` as it reads back from JSON (tuples become lists, keys and paths strings)."""
    return json.loads(json.dumps(data, default=str))


def reproduce(
    name: str,
    out_dir: str | os.PathLike = "figures",
    *,
    quick: bool = False,
    setting_name: str | None = None,
    device: str | None = None,
    progress: bool = True,
    **options: Any,
) -> list[Path]:
    """Compute figure ``name``'s data and write ``NAME.json``, ``NAME.png`` and ``NAME.pdf``
    into ``out_dir``; ``name="all"`` draws every figure. Returns the written paths.

    Args:
        quick: the small setting (minutes on a CPU) instead of the full one.
        setting_name: a setting by name instead (``"quick"``, ``"full"`` or one of the
            figure's :attr:`FigureSpec.named`, e.g. ``"modest"`` for ``chomsky-table``).
        device: where to train (None: CUDA when available, else CPU).
        options: overrides of the setting's entries (see ``FIGURES[name].quick``), e.g.
            ``steps=50``; for the grokking figures ``run_dir=RUN`` draws an existing run
            (tracking it first when needed) instead of training one.

    Raises:
        ValueError: an unknown figure or option, before any work.
    """
    if name == "results-page":
        from .results_page import write_results_page

        return [write_results_page(out_dir)]
    if name == "all" and (options or setting_name not in (None, "quick", "full")):
        raise ValueError(
            "options apply to one figure, and so do named settings; pass a figure name, not 'all'"
        )
    specs = list(FIGURES.values()) if name == "all" else [_spec(name)]
    settings = [spec.settings(quick, setting_name, **options) for spec in specs]
    label = setting_name or ("quick" if quick else "full")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for i, spec in enumerate(specs):
        chosen = settings[i]
        log.info("figure %s (%s setting)", spec.name, label)
        start = time.perf_counter()
        data = _jsonable(spec.compute(out, device, progress, **dict(chosen)))
        seconds = time.perf_counter() - start
        record = {
            "name": spec.name,
            "quick": label == "quick",
            "setting": label,
            "settings": _jsonable(chosen),
            "seconds": round(seconds, 2),
            "data": data,
        }
        json_path = out / f"{spec.name}.json"
        write_checked_json(json_path, record)
        paths.append(json_path)
        paths.extend(fp.save_figure(spec.plot(data), out, spec.name))
        log.info("figure %s: %.1f s, wrote %s", spec.name, seconds, out / f"{spec.name}.png")
    return paths


def redraw(json_path: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Draw a figure again from its ``NAME.json`` (into ``out_dir``, default its folder)."""
    record = read_json(json_path, verify=False)  # checked when its folder records it
    spec = _spec(record["name"])
    out = Path(out_dir) if out_dir is not None else Path(json_path).parent
    return fp.save_figure(spec.plot(record["data"]), out, spec.name)


def describe() -> list[str]:
    """One line per figure: name, description, the full setting's run time and the names of
    any further settings."""
    width = max(len(n) for n in FIGURES)
    lines = []
    for spec in FIGURES.values():
        line = f"{spec.name:{width}s}  {spec.description}\n{'':{width}s}  full setting: "
        line += spec.full_runtime
        if spec.named:
            line += f"\n{'':{width}s}  also --setting {', '.join(spec.named)}"
        lines.append(line)
    return lines


__all__ = ["FIGURES", "FigureSpec", "describe", "redraw", "reproduce"]
