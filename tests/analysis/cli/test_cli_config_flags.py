"""Config dataclasses as command-line flags (add_config_flags / config_from_flags)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Literal

import pytest

from hierlens.analysis.cli.common import CLIError, add_config_flags, config_from_flags
from hierlens.core.config import Config
from hierlens.sae import SAETrainConfig


@dataclasses.dataclass(frozen=True)
class Toy(Config):
    """A toy config.

    Parameters:
        width: how wide; a long entry that
            continues on a second line.
        mode: which mode.
        rates: learning rates, one per member.
        flag, other: two switches.
        name: a name.
    """

    width: int = 4
    mode: Literal["fast", "slow"] = "fast"
    rates: tuple[float, ...] = (0.1,)
    flag: bool = False
    other: bool | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.width < 1:
            raise ValueError(f"width must be positive, got {self.width}")


def _parser(**kw):
    p = argparse.ArgumentParser()
    add_config_flags(p, Toy, **kw)
    return p


def test_flags_types_choices_help_and_defaults():
    p = _parser()
    actions = {a.dest: a for a in p._actions}
    assert actions["width"].type is int and actions["width"].default is None
    assert actions["mode"].choices == ("fast", "slow")
    assert actions["width"].help.startswith("how wide; a long entry that continues on a second")
    assert "(default: 4)" in actions["width"].help
    assert actions["other"].help.startswith("two switches")
    assert config_from_flags(p.parse_args([]), Toy) == Toy()
    args = p.parse_args(["--width", "7", "--mode", "slow", "--rates", "0.5,0.25", "--flag", "on"])
    assert config_from_flags(args, Toy) == Toy(width=7, mode="slow", rates=(0.5, 0.25), flag=True)
    assert config_from_flags(args, Toy, width=9).width == 9
    with pytest.raises(SystemExit):
        p.parse_args(["--mode", "medium"])
    with pytest.raises(CLIError, match="width must be positive"):
        config_from_flags(p.parse_args(["--width", "0"]), Toy)


def test_prefix_and_exclude():
    p = argparse.ArgumentParser()
    group = p.add_argument_group("toy")
    add_config_flags(group, Toy, exclude=("name",), prefix="toy_")
    assert "--toy-name" not in p.format_help() and "--toy-width" in p.format_help()
    assert config_from_flags(p.parse_args(["--toy-width", "3"]), Toy) == Toy(width=3)


def test_sae_train_config_flags():
    p = argparse.ArgumentParser()
    add_config_flags(p, SAETrainConfig, exclude=("device",))
    text = p.format_help()
    assert "--grad-clip" in text and "--device" not in text
    args = p.parse_args(["--steps", "10", "--lr", "0.01", "--betas", "0.8,0.9"])
    cfg = config_from_flags(args, SAETrainConfig, device="cpu")
    assert cfg == SAETrainConfig(steps=10, lr=0.01, betas=(0.8, 0.9), device="cpu")
