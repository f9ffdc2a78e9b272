"""Train a 2-layer transformer on Dyck-(2, 6) and report in-domain / OOD closing-bracket
accuracy (Murty et al. 2023's metric).

    python examples/train_dyck.py                 # about 2 minutes on 2 CPU cores
    python examples/train_dyck.py --steps 200     # a quick smoke run
"""

from __future__ import annotations

import argparse
import time

from hierlens.models import ModelConfig, TrainConfig, build_transformer, get_task, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--run-dir", default="runs/example_dyck")
    parser.add_argument("--device", default=None)
    parser.add_argument("--n-eval", type=int, default=2000, help="evaluation examples per split")
    args = parser.parse_args()

    task = get_task("dyck", n_types=2, max_depth=6, min_length=4, max_length=32)
    model_config = ModelConfig.for_task(task, d_model=64, n_layers=2, n_heads=4, seed=0)
    config = TrainConfig(
        steps=args.steps,
        batch_size=64,
        lr=3e-3,
        warmup_steps=50,
        eval_every=max(args.steps // 5, 1),
        checkpoint_every=max(args.steps // 5, 1),
        train_pool=10_000,
        device=args.device,
    )
    model = build_transformer(model_config, device=config.device)
    start = time.perf_counter()
    train(
        model, task, config, args.run_dir, model_config=model_config, resume=False, overwrite=True
    )
    seconds = time.perf_counter() - start
    for split in ("test_id", "test_ood"):
        metrics = task.evaluate(model, split, n=args.n_eval, device=config.device)
        print(
            f"{split:9s} closing-bracket accuracy {metrics['closing_acc']:.4f}  "
            f"sequence accuracy {metrics['seq_acc']:.4f}"
        )
    print(f"trained {args.steps} steps in {seconds:.0f} s; run directory {args.run_dir}")


if __name__ == "__main__":
    main()
