"""The ``causal-question`` figure: where a question-formation transformer uses its variables.

Trains a small causal transformer on question formation (McCoy et al. 2020; the language-
model format and sequence loss of Murty et al. 2023) with ``hierlens.models.train``, or loads
the newest checkpoint of ``run_dir``, then runs :func:`~.causal.causal_study` for the task's
variables (:class:`~hierlens.models.tasks.variables.QuestionFormationVariables`):

- ``main_aux``: which auxiliary the question fronts (the main clause's);
- ``subject_extent``: the number of words in the subject (the main auxiliary follows it).

The query is the ``quest`` marker, whose output is the fronted auxiliary. Besides the
positions counted back from the query, the interchange map is read at two positions of each
base sentence: its main auxiliary and the subject's last word.
"""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from hierlens.core.validate import check_int

from .causal import causal_study, plot_causal, residual_hooks, train_or_load, variable_statement

__all__ = ["causal_question", "plot_causal_question", "results_rows"]

VARIABLES = ("main_aux", "subject_extent")


def _anchors() -> dict[str, Any]:
    # token 0 is <bos>: word i sits at position i + 1, the main auxiliary is word
    # ``subject_extent`` and the subject's last word is word ``subject_extent - 1``
    return {
        "main auxiliary": lambda p: p.base_values["subject_extent"] + 1,
        "subject's last word": lambda p: p.base_values["subject_extent"],
    }


def causal_question(
    steps: int = 2000,
    d_model: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    lr: float = 1e-3,
    n_pairs: int = 64,
    das_pairs: int = 500,
    das_steps: int = 200,
    rank: int = 1,
    span: int = 8,
    n_eval: int = 1000,
    *,
    seed: int = 0,
    run_dir: str | None = None,
    device: str | None = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Train (or load) a question-formation transformer and run :func:`~.causal.causal_study`
    for ``main_aux`` and ``subject_extent`` at every residual hook.

    Returns the study's records plus ``model`` and ``train`` (the settings used),
    ``test_id`` and ``test_ood`` (the task's metrics on ``n_eval`` examples of each split:
    ``first_word_acc`` is the fronted auxiliary's accuracy, ``error_move_first`` the
    fraction of errors that follow the linear rule). JSON-ready."""
    from hierlens.models import get_task

    for name, v in (("steps", steps), ("d_model", d_model), ("n_layers", n_layers),
                    ("n_eval", n_eval)):  # fmt: skip
        check_int(f"causal_question: {name}", v)
    task = get_task("question_formation")
    model_kw = {"d_model": d_model, "n_layers": n_layers, "n_heads": n_heads, "seed": seed}
    training = {"steps": steps, "batch_size": 64, "lr": lr, "warmup_steps": min(100, steps),
                "schedule": "constant", "loss_on": "sequence", "eval_every": 0,
                "checkpoint_every": steps, "train_pool": 20_000, "seed": seed}  # fmt: skip
    model, task = train_or_load(task, model_kw, training, run_dir=run_dir, device=device,
                                progress=progress)  # fmt: skip
    metrics = {
        split: task.evaluate(model, split, n_eval, device=device)
        for split in ("test_id", "test_ood")
    }
    result = causal_study(
        model, task, list(VARIABLES), residual_hooks(int(model.cfg.n_layers)), n_pairs=n_pairs,
        das_pairs=das_pairs, das_steps=das_steps, rank=rank, span=span, anchors=_anchors(),
        seed=seed, progress=progress,
    )  # fmt: skip
    return {
        "model": {k: int(getattr(model.cfg, k)) for k in ("d_model", "n_layers", "n_heads")},
        "train": training if run_dir is None else {"run_dir": str(run_dir)},
        "n_eval": n_eval,
        **metrics,
        **result,
    }


def plot_causal_question(data: dict[str, Any]) -> Figure:
    """:func:`~.causal.plot_causal` of the question-formation study: ``main_aux`` patching,
    DAS per hook for both variables."""
    acc = data["test_id"]["first_word_acc"]
    title = f"rank-{data['rank']} DAS per hook (fronted-aux. acc. {acc:.3f})"
    return plot_causal(data, "main_aux", title)


def results_rows(rec: dict[str, Any] | None) -> list[dict[str, str]]:
    """The results-page row of a ``causal-question`` record (``NAME.json`` as
    :func:`~.reproduce.reproduce` writes it, or its ``data``): where each variable is used
    (DAS at the query, the interchange map's best hook and position) against where a probe
    decodes it, and where the two disagree; every number read from the record."""
    paper = "Geiger et al. 2024 (DAS); Arora et al. 2024 (CausalGym); McCoy et al. 2020"
    claim = (
        "interventions locate the variables a question-formation model uses, which need not "
        "be where probes decode them"
    )
    if rec is None:
        return [{"paper": paper, "claim": claim, "setting": "-", "ours": "-", "theirs": "-",
                 "verdict": "not run (no causal-question record)"}]  # fmt: skip
    data = rec.get("data", rec)
    m, tr = data["model"], data["train"]
    n_pairs = data["das"][0]["n_pairs"]
    trained = f"{tr['steps']} steps at lr {tr['lr']:g}" if "steps" in tr else "loaded run"
    setting = (
        f"question formation, {m['n_layers']}-layer transformer, d_model {m['d_model']}, "
        f"{trained} (fronted-auxiliary accuracy {data['test_id']['first_word_acc']:.3f} "
        f"in distribution, {data['test_ood']['first_word_acc']:.3f} out of distribution); "
        f"rank-{data['rank']} DAS at the query, {len(data['hooks'])} residual hooks, "
        f"{n_pairs} pairs per variable (30% held out)"
    )
    controls = {c["variable"]: c for c in data["controls"]}
    parts, verdicts = [], []
    # the statements are recomputed from the measured records, never read back
    statements = [variable_statement(data, v) for v in VARIABLES]
    for s in statements:
        c = controls[s["variable"]]
        parts.append(
            f"{s['text']}; random weights up to {s['random_model_max']:.3f}, no intervention "
            f"{c['baseline']:.3f}, chance {s['chance']:.3f}"
        )
        hooks = ", ".join(h.replace("blocks.", "").replace("hook_", "") for h in s["used"])
        full = "n/a" if s["best_full"] is None else f"{s['best_full']:.3f}"
        if s["agree"]:
            verdicts.append(
                f"{s['variable']}: used where decodable ({hooks}; IIA of the whole activation "
                f"{full}, of a rank-{data['rank']} subspace {s['best_das']:.3f})"
            )
        elif s["used"]:
            verdicts.append(f"{s['variable']}: used at {hooks} but decodable at "
                            f"{len(s['decodable'])} hook(s)")  # fmt: skip
        else:
            verdicts.append(
                f"{s['variable']}: decodable (probe up to {s['best_probe']:.3f}) but not used at "
                f"the query (DAS IIA at most {s['best_das']:.3f})"
            )
    agree = all(s["agree"] for s in statements)
    verdict = ("reproduced: " if agree else "partly: ") + "; ".join(verdicts)
    return [{"paper": paper, "claim": claim, "setting": setting, "ours": " / ".join(parts),
             "theirs": "CausalGym: DAS finds the features that drive agreement better than "
             "probes do", "verdict": verdict}]  # fmt: skip
