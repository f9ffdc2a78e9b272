"""Tense inflection: re-inflect a past-tense sentence to present (`PRESENT`) or copy it
(`PAST`). In `test_ood` the main verb must agree with its subject across an intervening noun
of the other number; the metric decodes greedily and checks the main verb.

    python examples/train_tense_inflection.py                # a few minutes on CPU
    python examples/train_tense_inflection.py --steps 100    # smoke run
"""

from __future__ import annotations

from train_question_formation import train_grammar_task  # the shared training recipe


def main() -> None:
    task, model, args = train_grammar_task("tense_inflection", __doc__, n_eval=500)
    for split in ("test_id", "test_ood"):
        m = task.greedy_evaluate(model, split, n=args.n_eval, device=args.device, progress=False)
        print(
            f"{split:9s} main-verb accuracy (greedy) {m['main_verb_acc']:.3f}  sequence {m['seq_acc']:.3f}"
        )


if __name__ == "__main__":
    main()
