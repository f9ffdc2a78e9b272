import math

import numpy as np
import pytest

from hierlens.core.validate import check_choice, check_int, check_number, is_int, require


@pytest.mark.parametrize(
    "value, numpy, expected",
    [
        (3, False, True),
        (0, False, True),
        (-2, False, True),
        (True, False, False),
        (np.int64(3), False, False),
        (np.int64(3), True, True),
        (np.bool_(True), True, False),
        (3.0, True, False),
        ("3", True, False),
        (None, True, False),
    ],
)
def test_is_int(value, numpy, expected):
    assert is_int(value, numpy) is expected


def test_check_int_bounds_and_messages():
    check_int("n", 1)
    check_int("n", 0, minimum=0)
    check_int("n", None, none=True)
    check_int("n", np.int32(5), numpy=True)
    with pytest.raises(ValueError, match=r"^n must be a positive integer, got 0$"):
        check_int("n", 0)
    with pytest.raises(ValueError, match=r"non-negative integer, got -1"):
        check_int("n", -1, minimum=0)
    with pytest.raises(ValueError, match=r"an integer >= 2 or None, got 1"):
        check_int("n", 1, minimum=2, none=True)
    for bad in (True, 2.0, "2", None, np.int64(2)):
        with pytest.raises(ValueError, match="must be a positive integer"):
            check_int("n", bad)


def test_check_number_bounds_and_messages():
    check_number("lr", 0.0)
    check_number("lr", 1e-3, strict=True)
    check_number("lr", np.float32(0.5), strict=True)
    check_number("lr", 3, minimum=3)
    check_number("lr", None, none=True)
    with pytest.raises(ValueError, match=r"^lr must be a positive number, got 0.0$"):
        check_number("lr", 0.0, strict=True)
    with pytest.raises(ValueError, match=r"finite number >= 0"):
        check_number("lr", -1e-9)
    with pytest.raises(ValueError, match=r"finite number > 1 or None"):
        check_number("lr", 1, minimum=1, strict=True, none=True)
    for bad in (math.inf, math.nan, True, "1", None):
        with pytest.raises(ValueError, match="finite number"):
            check_number("lr", bad)


def test_require():
    require(object(), True, "never raised")
    with pytest.raises(ValueError, match="^list: the message$"):
        require([], False, "the message")


def test_check_choice():
    check_choice("mode", "a", ("a", "b"))
    with pytest.raises(ValueError, match=r"^mode must be one of 'a', 'b', got 'c'$"):
        check_choice("mode", "c", ("a", "b"))


def test_check_number_infinite_bound():
    check_number("C", math.inf, strict=True, finite=False)
    for bad in (math.nan, -math.inf, 0.0):
        with pytest.raises(ValueError, match="C must be"):
            check_number("C", bad, strict=True, finite=False)


def test_config_check_choices_reads_field_choices():
    """``Config.check_choices`` checks the fields ``FIELD_CHOICES`` names (the CLI's
    ``choices``), letting a None-default field stay None."""
    import dataclasses

    from hierlens.core.config import Config

    @dataclasses.dataclass(frozen=True)
    class Toy(Config):
        FIELD_CHOICES = {"mode": ("a", "b"), "pool": ("x",)}
        mode: str = "a"
        pool: str | None = None
        other: str = "free"

        def __post_init__(self) -> None:
            self.check_choices("toy")

    Toy()
    Toy(mode="b", pool="x", other="anything")
    with pytest.raises(ValueError, match=r"^toy.mode must be one of 'a', 'b', got 'c'$"):
        Toy(mode="c")
    with pytest.raises(ValueError, match=r"^toy.pool must be one of 'x', got 'y'$"):
        Toy(pool="y")
    with pytest.raises(ValueError, match=r"^toy.mode must be one of"):
        Toy(mode=None)  # None only where the default is None
