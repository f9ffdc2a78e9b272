"""The shared base of every sparse autoencoder in hierlens.

Every SAE maps activations ``x`` of width ``d_in`` to codes of width ``d_sae`` and back,
with parameters named as in SAELens: ``W_enc`` ``(d_in, d_sae)``, ``b_enc`` ``(d_sae,)``,
``W_dec`` ``(d_sae, d_in)``, ``b_dec`` ``(d_in,)`` (and ``threshold`` ``(d_sae,)`` where
an architecture uses one).

Each architecture implements one *stacked* computation, :meth:`SAE.stacked_forward`, that
takes parameters with a leading member axis ``S`` and runs ``S`` SAEs of the same
architecture and shape on one shared batch as batched matrix products. A single SAE's
:meth:`SAE.forward` is the ``S = 1`` case of the same code, and the fused trainer
(:func:`hierlens.sae.train_saes`) stacks many SAEs into one call. Hyperparameters listed in
``continuous_hparams`` (penalty coefficients, bandwidths) may differ between the members of
one stack; they arrive as ``(S,)`` tensors.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import os
from typing import Any, ClassVar

import torch
from torch import nn

from hierlens.models.config import Config
from hierlens.models.device import resolve_device, resolve_dtype

from .workspace import Workspace

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
            SAELens and Bricken et al. 2023).
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
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"{type(self).__name__}.{name} must be a positive int, got {value!r}"
                )
        if self.hook_name is not None and not isinstance(self.hook_name, str):
            raise TypeError(
                f"hook_name must be a string or None, got {type(self.hook_name).__name__}"
            )
        if not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {type(self.seed).__name__}")
        if self.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"dtype must be one of {_FLOAT_DTYPES}, got {self.dtype!r}")


def check_nonneg(cfg: SAEConfig, *names: str) -> None:
    """``ValueError`` unless every named field of ``cfg`` is a finite number >= 0."""
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(
                f"{type(cfg).__name__}.{name} must be a finite number >= 0, got {value!r}"
            )


def check_k(cfg: SAEConfig, name: str = "k") -> None:
    """``ValueError`` unless ``cfg.<name>`` is an int in ``[1, d_sae]``."""
    k = getattr(cfg, name)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"{type(cfg).__name__}.{name} must be a positive int, got {k!r}")
    if k > cfg.d_sae:
        raise ValueError(
            f"{type(cfg).__name__}.{name}={k} is larger than the number of latents d_sae={cfg.d_sae}"
        )


@dataclasses.dataclass
class StepContext:
    """Run-time switches of one stacked forward pass (not hyperparameters).

    Attributes:
        training: training behaviour (BatchTopK selects over the batch, MP-SAE runs exactly
            ``k`` steps) rather than inference behaviour.
        update_buffers: update running buffers (BatchTopK's inference threshold).
        dead_mask: ``(S, d_sae)`` bool, latents counted dead by the trainer (for AuxK), or None.
        sparse_decode: decode TopK codes by gathering only the ``k`` active decoder rows.
        workspace: scratch tensors kept across steps by a training loop that owns the
            parameters (:class:`~hierlens.sae.workspace.Workspace`); a TopK step on the sparse
            CPU kernels then writes the weight gradients into ``.grad`` itself.
    """

    training: bool = True
    update_buffers: bool = False
    dead_mask: torch.Tensor | None = None
    sparse_decode: bool = False
    workspace: Workspace | None = None


@dataclasses.dataclass
class StackedOutput:
    """Result of :meth:`SAE.stacked_forward` for ``S`` stacked SAEs on a batch of ``B`` rows.

    Attributes:
        recon: ``(S, B, d_in)`` reconstructions.
        codes: ``(S, B, d_sae)`` codes, or ``None`` when only ``sparse_codes`` were formed
            (use :meth:`dense_codes` to get them either way).
        loss: ``(S,)`` training loss of each member (the sum of its terms).
        terms: named ``(S,)`` loss terms (``mse`` always: squared error summed over
            ``d_in``, averaged over the batch).
        fires: ``(S, d_sae)`` float, on how many rows each latent fired, when the
            architecture can count it cheaply (else the trainer counts non-zero codes).
        sparse_codes: ``(values, indices)`` ``(S, B, k)`` of a k-sparse code, when formed.
    """

    recon: torch.Tensor
    codes: torch.Tensor | None
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    fires: torch.Tensor | None = None
    sparse_codes: tuple[torch.Tensor, torch.Tensor] | None = None

    def dense_codes(self, d_sae: int) -> torch.Tensor:
        """The ``(S, B, d_sae)`` codes (built from ``sparse_codes`` if need be)."""
        if self.codes is not None:
            return self.codes
        values, indices = self.sparse_codes
        zeros = values.new_zeros(*values.shape[:-1], d_sae)
        return zeros.scatter(-1, indices, values)


@dataclasses.dataclass
class SAEOutput:
    """Result of :meth:`SAE.forward`: ``recon`` ``(..., d_in)``, ``codes`` ``(..., d_sae)``,
    the scalar training ``loss`` and its named scalar ``terms``."""

    recon: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]


def count_fires(indices: torch.Tensor, values: torch.Tensor, d_sae: int) -> torch.Tensor:
    """``(S, d_sae)`` number of rows in which each latent has a non-zero value, from the
    ``(S, B, k)`` indices/values of a sparse code whose indices are distinct within a row."""
    S = indices.shape[0]
    ones = (values.detach() != 0).to(torch.float32).reshape(S, -1)
    out = torch.zeros(S, d_sae, device=indices.device, dtype=torch.float32)
    return out.scatter_add_(1, indices.reshape(S, -1), ones)


def squared_error(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """``(S,)`` squared error summed over features, averaged over the batch; ``x`` ``(B, d)``
    or ``(S, B, d)``, ``recon`` ``(S, B, d)``."""
    return (recon.float() - x.float()).pow(2).sum(-1).mean(-1)


def encoder_preacts(x: torch.Tensor, p: dict[str, torch.Tensor], apply_b_dec: bool) -> torch.Tensor:
    """Stacked pre-activations ``(x - b_dec) @ W_enc + b_enc`` ``(S, B, d_sae)`` for a batch
    ``x`` ``(B, d_in)`` shared by all members.

    One batched product with the bias fused in (``baddbmm``, ``x`` broadcast over members,
    the output already in member-major layout); ``b_dec`` enters as the per-member bias
    ``b_enc - b_dec @ W_enc``.
    """
    W = p["W_enc"]
    S = W.shape[0]
    bias = p["b_enc"]
    if apply_b_dec:
        bias = bias - torch.bmm(p["b_dec"].unsqueeze(1).to(W.dtype), W).squeeze(1)
    return torch.baddbmm(bias.unsqueeze(1), x.to(W.dtype).expand(S, *x.shape), W)


def dense_decode(codes: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """``codes @ W_dec + b_dec`` for stacked codes ``(S, B, d_sae)`` -> ``(S, B, d_in)``."""
    return torch.baddbmm(p["b_dec"].unsqueeze(1), codes, p["W_dec"])


def gather_rows(W: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows of stacked matrices ``W`` ``(S, n, d)`` at ``idx`` ``(S, ...)`` -> ``(S, ..., d)``.

    One ``index_select`` on the flattened rows: its backward is a single ``index_add`` into
    the gradient of ``W``, and the index stays ``(S, ...)`` (never expanded to ``d``).
    """
    S, n, d = W.shape
    offset = (torch.arange(S, device=idx.device) * n).view(S, *([1] * (idx.dim() - 1)))
    flat = (idx + offset).reshape(-1)
    return W.reshape(S * n, d).index_select(0, flat).view(*idx.shape, d)


def sparse_decode(
    values: torch.Tensor, indices: torch.Tensor, p: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Decode from the ``k`` active latents only: ``values``/``indices`` ``(S, B, k)``.

    Gathers the ``k`` decoder rows each row uses, so the work is ``B * k * d_in`` instead of
    ``B * d_sae * d_in`` (worth it when ``k << d_sae``; the dense product wins on CPU BLAS).
    """
    rows = gather_rows(p["W_dec"], indices)  # (S, B, k, d_in)
    return p["b_dec"].unsqueeze(1) + torch.einsum("sbk,sbkd->sbd", values.to(rows.dtype), rows)


class SAE(nn.Module, abc.ABC):
    """Base class of the SAE architectures.

    Subclasses set ``architecture`` (the SAELens architecture name written to ``cfg.json``),
    ``config_class``, ``continuous_hparams`` and implement :meth:`stacked_forward` and
    :meth:`_stacked_encode`. Parameters are created deterministically from ``cfg.seed``.
    """

    architecture: ClassVar[str] = ""
    config_class: ClassVar[type[SAEConfig]] = SAEConfig
    continuous_hparams: ClassVar[tuple[str, ...]] = ()
    tensor_names: ClassVar[tuple[str, ...]] = ("W_enc", "b_enc", "W_dec", "b_dec")
    # Training steps with ``ctx.sparse_decode`` on the CPU run on the kernels of
    # :mod:`hierlens.sae.sparse_step` (the trainer then keeps ``W_enc`` in their layout).
    sparse_cpu_step: ClassVar[bool] = False

    def __init__(self, cfg: SAEConfig, device: str | torch.device | None = None) -> None:
        super().__init__()
        if not isinstance(cfg, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}")
        self.cfg = cfg
        dev = resolve_device(device)
        dtype = resolve_dtype(cfg.dtype)
        gen = torch.Generator().manual_seed(cfg.seed)
        for name, value in self._init_tensors(gen).items():
            t = value.to(device=dev, dtype=dtype)
            if name in self.trainable_names():
                setattr(self, name, nn.Parameter(t))
            else:
                self.register_buffer(name, t)

    # ----- construction -------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: SAEConfig, device: str | torch.device | None = None) -> SAE:
        """Build a freshly initialised SAE from its config."""
        obj = cls.__new__(cls)
        SAE.__init__(obj, cfg, device)
        return obj

    def _init_tensors(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Initial tensors: random unit-norm decoder rows, ``W_enc = W_dec.T``, zero biases
        (the tied initialisation of Conerly et al. 2024 / Gao et al. 2024)."""
        d_in, d_sae = self.cfg.d_in, self.cfg.d_sae
        w = torch.randn(d_sae, d_in, generator=gen, dtype=torch.float64)
        w = w / w.norm(dim=1, keepdim=True)
        return {
            "W_enc": w.T.clone(),
            "b_enc": torch.zeros(d_sae, dtype=torch.float64),
            "W_dec": w,
            "b_dec": torch.zeros(d_in, dtype=torch.float64),
        }

    def trainable_names(self) -> tuple[str, ...]:
        """Names of the tensors the optimiser trains (the rest are buffers)."""
        return ("W_enc", "b_enc", "W_dec", "b_dec")

    def stack_key(self) -> tuple:
        """SAEs with equal keys can be trained as one stack: same architecture, shape,
        dtype and every hyperparameter except seed, hook name and ``continuous_hparams``."""
        skip = {"seed", "hook_name", *self.continuous_hparams}
        items = tuple(sorted((k, v) for k, v in self.cfg.to_dict().items() if k not in skip))
        return (type(self).__name__, items)

    # ----- properties ---------------------------------------------------------------------
    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_dec.dtype

    def stacked_tensors(self) -> dict[str, torch.Tensor]:
        """This SAE's tensors with a leading member axis of size 1 (views, autograd-connected)."""
        return {name: getattr(self, name).unsqueeze(0) for name in self.tensor_names}

    def hparam_tensors(self, device: torch.device | None = None) -> dict[str, torch.Tensor]:
        """``continuous_hparams`` as ``(1,)`` float32 tensors."""
        dev = device or self.device
        return {
            n: torch.tensor([float(getattr(self.cfg, n))], device=dev)
            for n in self.continuous_hparams
        }

    # ----- the stacked computation ----------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def stacked_forward(
        cls,
        cfg: SAEConfig,
        p: dict[str, torch.Tensor],
        hp: dict[str, torch.Tensor],
        x: torch.Tensor,
        ctx: StepContext,
    ) -> StackedOutput:
        """Run ``S`` stacked SAEs on ``x`` ``(B, d_in)``: tensors in ``p`` have a leading
        ``S`` axis, ``hp`` holds ``(S,)`` continuous hyperparameters."""

    @classmethod
    @abc.abstractmethod
    def _stacked_encode(
        cls, cfg: SAEConfig, p: dict[str, torch.Tensor], x: torch.Tensor
    ) -> torch.Tensor:
        """Inference codes ``(S, B, d_sae)`` of stacked SAEs on ``x`` ``(B, d_in)``."""

    @torch.no_grad()
    def post_step(self) -> None:
        """Re-impose constraints after a manual optimiser step (unit decoder rows, ...)."""
        self.post_step_stacked(
            self.cfg, {n: getattr(self, n).data.unsqueeze(0) for n in self.tensor_names}
        )

    @classmethod
    @torch.no_grad()
    def post_step_stacked(cls, cfg: SAEConfig, p: dict[str, torch.Tensor]) -> None:
        """In place, on stacked tensors: renormalise decoder rows when ``unit_norm_decoder``."""
        if cfg.unit_norm_decoder:
            w = p["W_dec"]
            w.div_(w.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    # ----- the public single-SAE API ------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor of activations, got {type(x).__name__}")
        if x.dim() < 1 or x.shape[-1] != self.d_in:
            raise ValueError(
                f"{type(self).__name__} expects activations of shape (..., d_in={self.d_in}), "
                f"got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"activations must be floating point, got {x.dtype}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("activations contain NaN or inf values")
        return x.reshape(-1, self.d_in).to(device=self.device, dtype=self.dtype)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Inference codes ``(..., d_sae)`` of activations ``x`` ``(..., d_in)``."""
        flat = self._check_input(x)
        codes = self._stacked_encode(self.cfg, self.stacked_tensors(), flat)[0]
        return codes.reshape(*x.shape[:-1], self.d_sae)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``codes @ W_dec + b_dec``: ``(..., d_sae)`` -> ``(..., d_in)``."""
        if not isinstance(codes, torch.Tensor) or codes.shape[-1] != self.d_sae:
            shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise ValueError(f"codes must have shape (..., d_sae={self.d_sae}), got {shape}")
        return codes.to(self.dtype) @ self.W_dec + self.b_dec

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))`` with inference behaviour, shape of ``x``."""
        return self.decode(self.encode(x))

    def forward(self, x: torch.Tensor) -> SAEOutput:
        """Training computation on ``x`` ``(..., d_in)``: reconstruction, codes and losses.

        Uses training behaviour when the module is in training mode (BatchTopK's batch-level
        selection and threshold update, MP-SAE's fixed ``k`` steps) and inference behaviour
        otherwise.
        """
        flat = self._check_input(x)
        ctx = StepContext(training=self.training, update_buffers=self.training)
        out = self.stacked_forward(
            self.cfg, self.stacked_tensors(), self.hparam_tensors(), flat, ctx
        )
        lead = x.shape[:-1]
        return SAEOutput(
            recon=out.recon[0].reshape(*lead, self.d_in),
            codes=out.dense_codes(self.d_sae)[0].reshape(*lead, self.d_sae),
            loss=out.loss[0],
            terms={k: v[0] for k, v in out.terms.items()},
        )

    # ----- files ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write ``cfg.json`` and ``sae_weights.safetensors`` (SAELens layout) to ``path``."""
        from .files import save_sae

        save_sae(self, path)

    def extra_repr(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.cfg.to_dict().items())
        return fields


def config_kwargs(local: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments (from ``locals()``) minus ``self``, ``device`` and ``__class__``."""
    return {k: v for k, v in local.items() if k not in ("self", "device", "__class__")}
