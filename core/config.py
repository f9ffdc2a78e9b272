"""Frozen, JSON-serialisable configuration dataclasses.

Every config in hierlens (model, training, task, SAE, sweep) derives from :class:`Config`:
a frozen dataclass with ``to_dict()`` / ``from_dict()``, so that a run's full configuration
is saved as JSON next to its results and can be rebuilt exactly.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, TypeVar

from .validate import check_choice

C = TypeVar("C", bound="Config")


def unknown_keys_error(kind: str, unknown: list[str], valid: list[str]) -> ValueError:
    """A ``ValueError`` naming unknown parameters, the closest valid ones and the full list."""
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, valid, n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ValueError(
        f"unknown {kind} parameter(s): {', '.join(hints)}; valid parameters: {', '.join(valid)}"
    )


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class for frozen configuration dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain, JSON-serialisable dict (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Rebuild a config from :meth:`to_dict` output; unknown keys are a ``ValueError``."""
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in names]
        if unknown:
            raise unknown_keys_error(cls.__name__, unknown, names)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                value = data[f.name]
                if isinstance(value, list) and isinstance(f.default, tuple):
                    value = tuple(value)
                kwargs[f.name] = value
        return cls(**kwargs)

    def check_choices(self, prefix: str | None = None) -> None:
        """``ValueError`` unless every field named in the class's ``FIELD_CHOICES`` (the
        mapping the CLI also takes its ``choices`` from) holds one of its choices; a field
        whose default is None may also be None. ``prefix`` names the config in the message
        (default: the class name)."""
        for f in dataclasses.fields(self):
            choices = getattr(self, "FIELD_CHOICES", {}).get(f.name)
            value = getattr(self, f.name)
            if choices is not None and not (value is None and f.default is None):
                check_choice(f"{prefix or type(self).__name__}.{f.name}", value, choices)

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (validated like a fresh construction)."""
        return dataclasses.replace(self, **changes)
