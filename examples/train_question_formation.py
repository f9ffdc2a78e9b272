"""Question formation (McCoy et al.; Murty et al. 2023): a causal transformer learns to copy
declaratives (`decl`) and to front the main auxiliary (`quest`). Training questions are
ambiguous between the linear rule ("move the first auxiliary") and the hierarchical one;
`test_ood` questions tell them apart.

    python examples/train_question_formation.py                # a few minutes on CPU
    python examples/train_question_formation.py --steps 100    # smoke run

Structural grokking needs far longer training (see the README); this script shows the API.
"""

from __future__ import annotations

import argparse

from hierlens.models import ModelConfig, TrainConfig, build_transformer, get_task, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--run-dir", default="runs/example_question_formation")
    parser.add_argument("--device", default=None)
    parser.add_argument("--n-eval", type=int, default=1000, help="evaluation examples per split")
    args = parser.parse_args()

    task = get_task("question_formation")
    model_config = ModelConfig.for_task(task, d_model=128, n_layers=4, n_heads=4)
    config = TrainConfig(
        steps=args.steps,
        batch_size=64,
        lr=5e-4,
        warmup_steps=100,
        eval_every=max(args.steps // 4, 1),
        checkpoint_every=max(args.steps // 4, 1),
        device=args.device,
    )
    model = build_transformer(model_config, device=config.device)
    train(model, task, config, args.run_dir, resume=False, overwrite=True)
    for split in ("test_id", "test_ood"):
        m = task.evaluate(model, split, n=args.n_eval, device=config.device)
        print(
            f"{split:9s} first-word accuracy {m['first_word_acc']:.3f}  "
            f"errors following move-first {m['error_move_first']:.3f}"
        )


if __name__ == "__main__":
    main()
