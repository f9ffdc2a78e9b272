"""Streams of fixed-size activation batches for the SAE trainer.

A *source* is one of:

- a tensor ``(n, d_in)`` of activations: batches are drawn without replacement in a
  per-epoch shuffled order that is a pure function of ``(seed, step)``, so a resumed run
  sees exactly the batches an uninterrupted run would;
- an iterable of ``(b, d_in)`` tensors (any ``b``; rows are re-chunked into batches of
  ``batch_size``), e.g. an activation store's ``store.batches(...)`` iterator. A re-iterable
  (a list, a DataLoader) is started again when it runs out;
- a zero-argument callable returning such an iterable (e.g.
  ``lambda: store.batches(hook, batch_size=4096)``): called again for every pass, and on
  resume called once and fast-forwarded past the rows already consumed, which makes resume
  exact for deterministic stores;
- a zero-argument callable returning a ``(b, d_in)`` tensor per call.

A one-shot iterator is read as it is; when it runs out the trainer stops early with a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch

Source = torch.Tensor | Iterable[torch.Tensor] | Callable[[], object]


def _check_batch(x: object, d_in: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"activation source must yield torch.Tensors, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != d_in:
        raise ValueError(
            f"activation batches must have shape (batch, d_in={d_in}), got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"activations must be floating point, got {x.dtype}")
    return x


class BatchStream:
    """Fixed-size batches ``(batch_size, d_in)`` on ``device`` from any supported source."""

    def __init__(
        self,
        source: Source,
        d_in: int,
        batch_size: int,
        device: torch.device,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        self.d_in, self.batch_size, self.device = d_in, batch_size, device
        self.seed, self.shuffle = seed, shuffle
        self.tensor: torch.Tensor | None = None
        self.factory: Callable[[], Iterable[torch.Tensor]] | None = None
        self.batch_fn: Callable[[], torch.Tensor] | None = None
        self.iterable: Iterable[torch.Tensor] | None = None
        self.one_shot = False
        if isinstance(source, torch.Tensor):
            self.tensor = _check_batch(source, d_in)
            if source.shape[0] == 0:
                raise ValueError("the activation tensor is empty")
            if not bool(torch.isfinite(source).all()):
                raise ValueError("the activation tensor contains NaN or inf values")
        elif callable(source) and not isinstance(source, Iterable):
            first = source()
            if isinstance(first, torch.Tensor):
                self.batch_fn = source  # type: ignore[assignment]
                self._pending: list[torch.Tensor] = [_check_batch(first, d_in)]
            elif isinstance(first, Iterable):
                self.factory = source  # type: ignore[assignment]
                self.iterable = first
            else:
                raise TypeError(
                    "a callable source must return a tensor or an iterable of tensors, "
                    f"got {type(first).__name__}"
                )
        elif isinstance(source, Iterable):
            self.iterable = source
            self.one_shot = iter(source) is source
        else:
            raise TypeError(
                "source must be a tensor (n, d_in), an iterable of (batch, d_in) tensors or a "
                f"callable; got {type(source).__name__}"
            )
        if not hasattr(self, "_pending"):
            self._pending = []

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        if x.device == self.device:
            return x
        if self.device.type == "cuda" and x.device.type == "cpu":
            return x.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device)

    # ----- tensor sources ----------------------------------------------------------------------
    def _perm(self, epoch: int) -> torch.Tensor:
        n = self.tensor.shape[0]
        if not self.shuffle:
            return torch.arange(n)
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
        return torch.randperm(n, generator=gen)

    def _tensor_batches(self, start_step: int) -> Iterator[torch.Tensor]:
        n, bs = self.tensor.shape[0], self.batch_size
        row = start_step * bs
        epoch, perm = -1, None
        while True:
            parts = []
            need = bs
            while need:
                e, pos = divmod(row, n)
                if e != epoch:
                    epoch, perm = e, self._perm(e)
                take = min(need, n - pos)
                parts.append(perm[pos : pos + take])
                row += take
                need -= take
            idx = torch.cat(parts) if len(parts) > 1 else parts[0]
            yield self._to_device(self.tensor.index_select(0, idx.to(self.tensor.device)))

    # ----- iterable sources ----------------------------------------------------------------------
    def _chunks(self) -> Iterator[torch.Tensor]:
        while self._pending:
            yield self._pending.pop(0)
        if self.batch_fn is not None:
            while True:
                yield _check_batch(self.batch_fn(), self.d_in)
        it = self.iterable
        while True:
            got = False
            for x in it:
                got = True
                yield _check_batch(x, self.d_in)
            if self.one_shot or not got:
                return
            it = self.factory() if self.factory is not None else self.iterable

    def _iter_batches(self, start_step: int) -> Iterator[torch.Tensor]:
        bs = self.batch_size
        skip = start_step * bs if (self.factory is not None or not self.one_shot) else 0
        if self.batch_fn is not None:
            skip = 0
        buf: list[torch.Tensor] = []
        have = 0
        for x in self._chunks():
            if skip:
                drop = min(skip, x.shape[0])
                x, skip = x[drop:], skip - drop
                if x.shape[0] == 0:
                    continue
            buf.append(x)
            have += x.shape[0]
            while have >= bs:
                cat = torch.cat(buf) if len(buf) > 1 else buf[0]
                batch, rest = cat[:bs], cat[bs:]
                buf, have = ([rest] if rest.shape[0] else []), rest.shape[0]
                yield self._to_device(batch)

    def batches(self, start_step: int = 0) -> Iterator[torch.Tensor]:
        """Batches for steps ``start_step, start_step + 1, ...``."""
        if self.tensor is not None:
            return self._tensor_batches(start_step)
        return self._iter_batches(start_step)
