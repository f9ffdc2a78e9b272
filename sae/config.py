"""The config fields every SAE architecture shares, and the checks architectures' configs use."""

from __future__ import annotations

import dataclasses

from hierlens.core.config import Config
from hierlens.core.validate import check_choice, check_int, check_number

_FLOAT_DTYPES = ("float32", "float64", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class SAEConfig(Config):
    """Fields shared by every SAE architecture.

    Parameters:
        d_in: width of the activations the SAE reads.
        d_sae: number of latents (dictionary size).
        hook_name: the TransformerLens hook the SAE was trained on (metadata; used by the
            CE-recovered metric and written to ``cfg.json``).
        apply_b_dec_to_input: subtract ``b_dec`` from the input before encoding (as in
            SAELens and [Bricken2023]).
        unit_norm_decoder: keep every decoder row at unit norm: the trainer removes the
            gradient component parallel to each row before the optimiser step and
            renormalises the rows after it.
        seed: seed of the parameter initialisation (the global RNG is never touched).
        dtype: parameter dtype name.
    """

    d_in: int
    d_sae: int
    hook_name: str | None = None
    apply_b_dec_to_input: bool = True
    unit_norm_decoder: bool = True
    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for name in ("d_in", "d_sae"):
            check_int(f"{type(self).__name__}.{name}", getattr(self, name))
        if self.hook_name is not None and not isinstance(self.hook_name, str):
            raise TypeError(
                f"hook_name must be a string or None, got {type(self.hook_name).__name__}"
            )
        if not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {type(self.seed).__name__}")
        check_choice("dtype", self.dtype, _FLOAT_DTYPES)


def check_nonneg(cfg: SAEConfig, *names: str) -> None:
    """``ValueError`` unless every named field of ``cfg`` is a finite number >= 0."""
    for name in names:
        check_number(f"{type(cfg).__name__}.{name}", getattr(cfg, name))


def check_k(cfg: SAEConfig, name: str = "k") -> None:
    """``ValueError`` unless ``cfg.<name>`` is an int in ``[1, d_sae]``."""
    k = getattr(cfg, name)
    check_int(f"{type(cfg).__name__}.{name}", k)
    if k > cfg.d_sae:
        raise ValueError(
            f"{type(cfg).__name__}.{name}={k} is larger than the number of latents d_sae={cfg.d_sae}"
        )
