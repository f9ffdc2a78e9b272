"""Task registry: ``get_task(name, **params)`` and ``list_tasks()``."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from hierlens.core.config import unknown_keys_error

from .base import Task

_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator adding a :class:`Task` subclass to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no task name")
    if cls.name in _TASKS and _TASKS[cls.name] is not cls:
        raise ValueError(f"a task named {cls.name!r} is already registered")
    _TASKS[cls.name] = cls
    return cls


def list_tasks() -> list[str]:
    """Names of all registered tasks, sorted."""
    return sorted(_TASKS)


def task_class(name: str) -> type[Task]:
    """The task class registered under ``name``; unknown names list the closest ones."""
    if name not in _TASKS:
        close = difflib.get_close_matches(name, list(_TASKS), n=3)
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        raise ValueError(f"unknown task {name!r}{hint}; available tasks: {', '.join(list_tasks())}")
    return _TASKS[name]


def get_task(name: str, **params: Any) -> Task:
    """Build the task ``name`` with the given parameters (validated by the task)."""
    cls = task_class(name)
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in params if k not in valid]
    if unknown:
        raise unknown_keys_error(f"{name!r} task", unknown, valid)
    return cls(**params)


def task_parameters(name: str) -> list[tuple[str, str, Any]]:
    """``(parameter, type, default)`` for each parameter of task ``name``."""
    cls = task_class(name)
    return [(f.name, str(f.type), f.default) for f in dataclasses.fields(cls)]
