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
from typing import Any

from hierlens.models import ModelConfig, TrainConfig, build_transformer, get_task, train


def train_grammar_task(name: str, doc: str, n_eval: int) -> tuple[Any, Any, argparse.Namespace]:
    """Parse the command line (described by the script's ``doc``) and train a 4-layer causal
    transformer on the grammar task ``name``: the recipe this script shares with
    train_tense_inflection.py. Returns the task, the model and the arguments."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--run-dir", default=f"runs/example_{name}")
    parser.add_argument("--device", default=None)
    parser.add_argument("--n-eval", type=int, default=n_eval, help="evaluation examples per split")
    args = parser.parse_args()

    task = get_task(name)
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
    return task, model, args


def main() -> None:
    task, model, args = train_grammar_task("question_formation", __doc__, n_eval=1000)
    for split in ("test_id", "test_ood"):
        m = task.evaluate(model, split, n=args.n_eval, device=args.device)
        print(
            f"{split:9s} first-word accuracy {m['first_word_acc']:.3f}  "
            f"errors following move-first {m['error_move_first']:.3f}"
        )


if __name__ == "__main__":
    main()
