"""Structural grokking on question formation at CPU scale (after Murty et al., "Grokking of
Hierarchical Structure in Vanilla Transformers", ACL 2023).

A causal transformer is trained as a language model on the whole sequence (declarative,
marker, output), the way the paper trains it, for far longer than in-domain accuracy needs;
every checkpoint is then tracked: in-domain and out-of-domain first-word accuracy (is the
fronted auxiliary the main one?), the tree score and parse F1 of the model's tree projection
against the gold trees (Murty et al., ICLR 2023), the parameter norm and the attention
entropy. The curves go to ``RUN_DIR/tracking.jsonl`` and, drawn, to
``RUN_DIR/figures/grokking-curves.png`` and ``RUN_DIR/figures/tree-score-over-training.png``
(and PDF).

    python examples/structural_grokking.py                      # the documented run (hours)
    python examples/structural_grokking.py --object-rc 0.5      # with object relative clauses
    python examples/structural_grokking.py --steps 60 --quick   # smoke run

Interrupted runs resume from their last checkpoint (training and tracking both).
"""

from __future__ import annotations

import argparse
import time

from hierlens.analysis.figures import GROKKING_FULL, reproduce
from hierlens.analysis.grokking import grokking_summary, track
from hierlens.models import ModelConfig, Run, TrainConfig, build_transformer, get_task, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=GROKKING_FULL["train"]["steps"])
    parser.add_argument("--object-rc", type=float, default=0.0, help="QF p_object_rc")
    parser.add_argument("--run-dir", default="runs/structural_grokking")
    parser.add_argument("--device", default=None)
    parser.add_argument("--quick", action="store_true", help="small evaluation sets (smoke)")
    args = parser.parse_args()

    # the documented setting (hierlens.analysis.figures.GROKKING_FULL; README, "Results")
    setting = GROKKING_FULL
    task = get_task(
        setting["task"]["name"], **setting["task"]["params"], p_object_rc=args.object_rc
    )
    model = build_transformer(ModelConfig.for_task(task, **setting["model"]), device=args.device)
    train_settings = {**setting["train"], "steps": args.steps}
    track_settings = dict(setting["track"])
    if args.quick:
        train_settings.update(
            eval_every=max(args.steps // 3, 1), eval_n=50, train_pool=2000, checkpoint_log_points=3
        )
        track_settings.update(n=50, n_trees=10)
    config = TrainConfig(device=args.device, **train_settings)

    start = time.perf_counter()
    train(model, task, config, args.run_dir, resume=True)
    print(f"training: {time.perf_counter() - start:.0f} s (this invocation)")

    start = time.perf_counter()
    records = track(args.run_dir, task, device=args.device, **track_settings)
    print(f"tracking: {time.perf_counter() - start:.0f} s")
    for r in records:
        print(
            f"step {r['step']:6d}  in-domain {r['test_id/first_word_acc']:.3f}  "
            f"OOD {r['test_ood/first_word_acc']:.3f}  tree score {r['tree_score']:.3f}  "
            f"parse F1 {r['parse_f1']:.3f}"
        )
    print(grokking_summary(records))
    for name in ("grokking-curves", "tree-score-over-training"):
        figures = Run(args.run_dir).figures_dir
        paths = reproduce(name, figures, run_dir=args.run_dir, device=args.device)
        print("wrote", ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
