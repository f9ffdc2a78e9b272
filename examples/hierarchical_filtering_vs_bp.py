"""Root classification on the hierarchical filtering model (Garnier-Brun, Mézard, Moscato &
Saglietti) with a bidirectional transformer, compared with the Bayes-optimal accuracy that
exact belief propagation reaches on the same held-out sequences.

    python examples/hierarchical_filtering_vs_bp.py              # q=4, L=4, k=2; a few minutes
    python examples/hierarchical_filtering_vs_bp.py --steps 100  # smoke run
"""

from __future__ import annotations

import argparse

from hierlens.models import ModelConfig, TrainConfig, build_transformer, get_task, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--filter-level", type=int, default=2)
    parser.add_argument("--run-dir", default="runs/example_filtering")
    parser.add_argument("--device", default=None)
    parser.add_argument("--n-eval", type=int, default=2000, help="evaluation examples per split")
    args = parser.parse_args()

    task = get_task(
        "hierarchical_filtering", q=4, depth=4, filter_level=args.filter_level, subtask="root"
    )
    model_config = ModelConfig.for_task(task, d_model=64, n_layers=4, n_heads=4)  # bidirectional
    config = TrainConfig(
        steps=args.steps,
        batch_size=128,
        lr=1e-3,
        warmup_steps=50,
        eval_every=0,
        checkpoint_every=args.steps,
        train_pool=60_000,
        device=args.device,
    )
    model = build_transformer(model_config, device=config.device)
    train(model, task, config, args.run_dir, resume=False, overwrite=True)
    examples = task.sample(args.n_eval, "test_id", seed=99)
    model_acc = task.evaluate(model, examples=examples, device=config.device)["root_acc"]
    bp_acc = task.bp_accuracy(examples=examples)
    print(
        f"root accuracy on {args.n_eval} held-out sequences: model {model_acc:.4f}, exact BP {bp_acc:.4f}"
    )


if __name__ == "__main__":
    main()
