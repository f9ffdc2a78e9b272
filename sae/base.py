"""The shared base of every sparse autoencoder in hierlens.

Every SAE maps activations ``x`` of width ``d_in`` to codes of width ``d_sae`` and back,
with parameters named as in SAELens: ``W_enc`` ``(d_in, d_sae)``, ``b_enc`` ``(d_sae,)``,
``W_dec`` ``(d_sae, d_in)``, ``b_dec`` ``(d_in,)`` (and ``threshold`` ``(d_sae,)`` where
an architecture uses one).

Every architecture registers itself on :class:`SAE` under a canonical name and aliases
(``class TopKSAE(SAE, name="topk", aliases=("TopKSAE",))``): :func:`sae_class` and
``SAE.registry`` are the one table of architectures that files, grids, MDL fitting, the
pipeline and the CLI use. An architecture's config dataclass is the only place its defaults
live: ``TopKSAE(64, 256, k=4)`` builds a ``TopKSAEConfig(d_in=64, d_sae=256, k=4)``.

The training computation is one *stacked* template, :meth:`SAE.stacked_forward`: it takes
parameters with a leading member axis ``S`` and runs ``S`` SAEs of the same architecture and
shape on one shared batch as batched matrix products. Architectures fill in two hooks:
:meth:`SAE.train_encode` (the codes, and the reconstruction when the encoder forms it) and
:meth:`SAE.penalties` (the sparsity terms added to the squared error). A single SAE's
:meth:`SAE.forward` is the ``S = 1`` case of the same code, and the fused trainer
(:func:`hierlens.sae.train_saes`) stacks many SAEs into one call. Hyperparameters listed in
``continuous_hparams`` (penalty coefficients, bandwidths) may differ between the members of
one stack; they arrive as ``(S,)`` tensors.
"""

from __future__ import annotations

import abc
import dataclasses
import os
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from hierlens.core.device import resolve_device, resolve_dtype

from .config import SAEConfig, check_k, check_nonneg
from .outputs import Encoded, SAEOutput, StackedOutput, StepContext
from .saelens_format import write_sae_files
from .stacked import count_fires, dense_decode, sparse_decode, squared_error

Tensors = dict[str, Tensor]  # stacked tensors or (S,) hyperparameters, by name

__all__ = [
    "SAE",
    "Encoded",
    "SAEConfig",
    "SAEOutput",
    "StackedOutput",
    "StepContext",
    "check_k",
    "check_nonneg",
    "sae_class",
]


class SAE(nn.Module, abc.ABC):
    """Base class of the SAE architectures, and their registry.

    A subclass registers itself with class keywords: ``name`` (the canonical name used by
    grids, the pipeline and the CLI) and ``aliases`` (other names it answers to, such as
    SAELens' architecture name; the class name is added automatically). It sets
    ``config_class`` (its frozen config dataclass: the only place defaults live),
    ``architecture`` (the SAELens architecture name written to ``cfg.json``),
    ``continuous_hparams``, ``saelens_fields`` (config field -> ``cfg.json`` key) and
    ``grid_knob`` (the sparsity field a grid varies), and implements :meth:`train_encode`,
    :meth:`stacked_encode` and, when it has one, :meth:`penalties`.

    ``Cls(d_in, d_sae, **fields)`` builds ``Cls.config_class(d_in=d_in, d_sae=d_sae,
    **fields)``; ``device`` says where the parameters live (``None``: CUDA when available,
    else CPU). Parameters are created deterministically from ``cfg.seed``.
    """

    registry: ClassVar[dict[str, type[SAE]]] = {}
    _aliases: ClassVar[dict[str, str]] = {}

    name: ClassVar[str] = ""
    architecture: ClassVar[str] = ""
    config_class: ClassVar[type[SAEConfig]] = SAEConfig
    continuous_hparams: ClassVar[tuple[str, ...]] = ()
    tensor_names: ClassVar[tuple[str, ...]] = ("W_enc", "b_enc", "W_dec", "b_dec")
    saelens_fields: ClassVar[dict[str, str]] = {}
    grid_knob: ClassVar[str] = "k"
    # Training steps with ``ctx.sparse_decode`` on the CPU run on the kernels of
    # :mod:`hierlens.sae.sparse_step` (the trainer then keeps ``W_enc`` in their layout).
    sparse_cpu_step: ClassVar[bool] = False

    def __init_subclass__(
        cls, *, name: str | None = None, aliases: tuple[str, ...] = (), **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if name is None:
            return
        names = (name, cls.__name__, *aliases)
        taken = [n for n in names if SAE._aliases.get(n, name) != name]
        if taken:
            raise ValueError(f"SAE names already registered to another architecture: {taken}")
        cls.name = name
        SAE.registry[name] = cls
        for alias in names:
            SAE._aliases[alias] = name

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        *,
        device: str | torch.device | None = None,
        **fields: Any,
    ) -> None:
        valid = {f.name for f in dataclasses.fields(self.config_class)} - {"d_in", "d_sae"}
        unknown = sorted(set(fields) - valid)
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unknown argument(s) {unknown}; "
                f"its config fields are {sorted(valid)} (see {self.config_class.__name__})"
            )
        self._setup(self.config_class(d_in=d_in, d_sae=d_sae, **fields), device)

    def _setup(self, cfg: SAEConfig, device: str | torch.device | None) -> None:
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
        obj._setup(cfg, device)
        return obj

    def _init_tensors(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Initial tensors: random unit-norm decoder rows, ``W_enc = W_dec.T``, zero biases
        (the tied initialisation of [Conerly2024] / [Gao2024])."""
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
        items = tuple(
            sorted(
                (k, tuple(v) if isinstance(v, list) else v)
                for k, v in self.cfg.to_dict().items()
                if k not in skip
            )
        )
        return (type(self).__name__, items)

    def _repr_html_(self) -> str:
        """A table of the SAE's architecture, shape, device and config fields."""
        from hierlens.core.html_table import key_value_table

        n_params = sum(p.numel() for p in self.parameters())
        rows = {"architecture": self.name, "parameters": n_params, "device": str(self.device)}
        rows.update({k: v for k, v in self.cfg.to_dict().items() if v is not None})
        return key_value_table(rows, caption=f"{type(self).__name__} ({self.d_in} -> {self.d_sae})")

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

    # ----- the stacked computation: a template and its hooks ----------------------------------
    @classmethod
    @abc.abstractmethod
    def train_encode(
        cls, cfg: SAEConfig, p: Tensors, hp: Tensors, x: Tensor, ctx: StepContext
    ) -> Encoded:
        """The codes of ``S`` stacked SAEs on ``x`` ``(B, d_in)`` in a forward pass with
        ``ctx``'s behaviour (training or inference), as an :class:`Encoded`."""

    @classmethod
    @abc.abstractmethod
    def stacked_encode(
        cls, cfg: SAEConfig, p: dict[str, torch.Tensor], x: torch.Tensor
    ) -> torch.Tensor:
        """Inference codes ``(S, B, d_sae)`` of stacked SAEs on ``x`` ``(B, d_in)``."""

    @classmethod
    def penalties(
        cls, cfg: SAEConfig, p: Tensors, hp: Tensors, x: Tensor, enc: Encoded, recon: Tensor
    ) -> dict[str, tuple[Tensor, Tensor]]:
        """Named loss terms beyond the squared error: ``name -> (term, coefficient)``, both
        ``(S,)``; the loss adds ``coefficient * term``. None by default."""
        return {}

    @classmethod
    def stacked_forward(
        cls, cfg: SAEConfig, p: Tensors, hp: Tensors, x: Tensor, ctx: StepContext
    ) -> StackedOutput:
        """Run ``S`` stacked SAEs on ``x`` ``(B, d_in)``: tensors in ``p`` have a leading
        ``S`` axis, ``hp`` holds ``(S,)`` continuous hyperparameters.

        The template: :meth:`train_encode`; decode (through the ``k`` active rows when the
        code is k-sparse and ``ctx.sparse_decode``, else densely) unless the encoder formed
        the reconstruction; loss = squared error + each of :meth:`penalties`.
        """
        enc = cls.train_encode(cfg, p, hp, x, ctx)
        recon = enc.recon
        if recon is None:
            if enc.sparse is not None and ctx.sparse_decode:
                recon = sparse_decode(*enc.sparse, p)
            else:
                recon = dense_decode(enc.codes, p)
        mse = squared_error(x, recon)
        terms = {"mse": mse}
        loss = mse
        for name, (term, coefficient) in cls.penalties(cfg, p, hp, x, enc, recon).items():
            terms[name] = term
            loss = loss + coefficient * term
        fires = None
        if enc.sparse is not None:
            values, indices = enc.sparse
            fires = count_fires(indices, values, cfg.d_sae)
        sparse = enc.sparse if enc.codes is None else None
        return StackedOutput(recon, enc.codes, loss, terms, fires, sparse_codes=sparse)

    @classmethod
    @torch.no_grad()
    def post_step_stacked(cls, cfg: SAEConfig, p: dict[str, torch.Tensor]) -> None:
        """Re-impose constraints after an optimiser step, in place, on stacked tensors
        (the trainer calls it after every step): renormalise decoder rows when
        ``unit_norm_decoder``."""
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
        codes = self.stacked_encode(self.cfg, self.stacked_tensors(), flat)[0]
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
        """Write ``cfg.json`` and ``sae_weights.safetensors`` (SAELens 6 layout) to the folder
        ``path`` (see :mod:`hierlens.sae.saelens_format`)."""
        write_sae_files(self, path)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.cfg.to_dict().items())


def sae_class(name: str) -> type[SAE]:
    """The SAE class registered under ``name``: a canonical name (``"topk"``,
    ``"batch_topk"``, ``"mp"``, ``"relu"``, ``"jumprelu"``), a class name (``"TopKSAE"``) or a
    SAELens architecture name (``"standard"``, ``"batchtopk"``, ``"matching_pursuit"``).

    Raises:
        ValueError: an unknown name (the message lists the registered names).
    """
    canonical = SAE._aliases.get(name) if isinstance(name, str) else None
    if canonical is None:
        raise ValueError(
            f"unknown architecture {name!r}; registered SAE architectures: "
            f"{sorted(SAE.registry)} (also accepted: {sorted(set(SAE._aliases) - set(SAE.registry))})"
        )
    return SAE.registry[canonical]
