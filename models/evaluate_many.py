"""Evaluation of a stack of models of one shape on the same examples, as one program.

:func:`evaluate_stack` computes what :meth:`~hierlens.models.Task.evaluate` gives for each of
S TL-native models whose parameters are stacked on a leading model axis: one fused forward
(:func:`~hierlens.models.fused.fused_logits`) per batch of examples for all S models, then
the task's metric counts per model. Tasks that define their own evaluation (a greedy
continuation, say) are evaluated model by model by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .fused import FusedSpec, fused_logits
from .tasks.base import Example, Task, add_counts, iter_batches, metrics_from_totals

__all__ = ["evaluate_stack", "stack_evaluable"]


def stack_evaluable(task: Task) -> bool:
    """True when ``task`` evaluates through :meth:`~hierlens.models.Task.metric_counts` on
    the logits of padded batches (the default evaluation), which a stack can share."""
    return (
        type(task).evaluate is Task.evaluate
        and type(task).evaluation_totals is Task.evaluation_totals
    )


def evaluate_stack(
    task: Task,
    spec: FusedSpec,
    params: Mapping[str, torch.Tensor],
    examples: Sequence[Example],
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> list[dict[str, float]]:
    """``task.evaluate(model_i, examples=examples)`` for every model ``i`` of the stack
    ``params`` (``{native name: (S, *shape)}``): the task's metrics plus ``loss`` and ``n``,
    one dict per model. Batches of ``examples`` ``(B, T)`` run as ``(S, B, T)``."""
    if not stack_evaluable(task):
        raise ValueError(f"task {task.name!r} has its own evaluation; evaluate each model alone")
    if not examples:
        raise ValueError("evaluate_stack needs at least one example")
    n = next(iter(params.values())).shape[0]
    totals: list[dict[str, list[torch.Tensor]]] = [{} for _ in range(n)]
    with torch.inference_mode():
        for batch in iter_batches(examples, batch_size, task.pad_id):
            batch = batch.to(device)
            shape = (n, *batch.tokens.shape)
            mask = batch.attention_mask
            logits = fused_logits(
                spec,
                params,
                batch.tokens.expand(shape),
                None if mask is None else mask.bool().expand(shape),
            )
            for i in range(n):
                add_counts(totals[i], task.batch_counts(batch, logits[i]))
    return [metrics_from_totals(t, len(examples)) for t in totals]
