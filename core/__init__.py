"""hierlens.core: the infrastructure every wing uses and that imports no wing.

- :mod:`.optim`: the one stacked optimizer step (per-member gradient clipping and AdamW,
  :class:`~hierlens.core.optim.StackedAdamW`) and the one learning-rate schedule
  (:func:`~hierlens.core.optim.lr_at`).

It imports torch and the standard library only.
"""
