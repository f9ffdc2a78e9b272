"""Tense inflection: re-inflect a past-tense sentence to present (`PRESENT`) or copy it
(`PAST`). In `test_ood` the main verb must agree with its subject across an intervening noun
of the other number; the metric decodes greedily and checks the main verb.

    python examples/train_tense_inflection.py                # a few minutes on CPU
    python examples/train_tense_inflection.py --steps 100    # smoke run
"""

from __future__ import annotations

import argparse

from hierlens.models import ModelConfig, TrainConfig, build_transformer, get_task, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--run-dir", default="runs/example_tense_inflection")
    parser.add_argument("--device", default=None)
    parser.add_argument("--n-eval", type=int, default=500, help="evaluation examples per split")
    args = parser.parse_args()

    task = get_task("tense_inflection")
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
        m = task.greedy_evaluate(model, split, n=args.n_eval, device=config.device, progress=False)
        print(
            f"{split:9s} main-verb accuracy (greedy) {m['main_verb_acc']:.3f}  sequence {m['seq_acc']:.3f}"
        )


if __name__ == "__main__":
    main()
