"""DAS with its controls, per hook: "decodable" beside "used".

For every hook, :func:`das_with_controls` reports

- ``das``: the held-out IIA of the learned rank-k subspace (:func:`~.alignment.das`);
- ``full``: the IIA of swapping the whole activation at the aligned positions;
- ``random_subspace``: the IIA of a random orthonormal subspace of the same rank;
- ``random_model``: the held-out IIA of the same search on a random-weights copy of the
  model (:func:`random_weights_copy`);
- ``probe``: the held-out accuracy of a logistic-regression probe (scikit-learn,
  multinomial) reading the variable's value from the same activations (base and source
  inputs at their aligned positions): whether the variable is *decodable* there, beside
  whether it is *used* (Arora et al., "CausalGym", ACL 2024, compare the two the same way);
- ``chance``: the IIA of guessing uniformly among the candidate outputs.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from hierlens.core.device import model_device
from hierlens.models.tasks.variables import MinimalPairs

from .alignment import DASConfig, das, parse_positions, random_basis
from .interchange import Alignment, interchange_accuracy, source_activations
from .sites import check_hooks

__all__ = ["das_with_controls", "probe_accuracy", "random_weights_copy"]


def random_weights_copy(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A copy of ``model`` with random weights: rebuilt from its hierlens config with another
    initialisation seed when it has one (``model.hierlens_config``), otherwise every
    parameter tensor's entries shuffled (each tensor keeps its values' distribution)."""
    config = getattr(model, "hierlens_config", None)
    dev = model_device(model)
    if config is not None and hasattr(config, "replace") and hasattr(config, "seed"):
        from hierlens.models.architectures import ArchConfig, build_model
        from hierlens.models.transformer import build_transformer

        fresh = config.replace(seed=int(config.seed) + 1 + seed)
        if isinstance(fresh, ArchConfig):
            return build_model(fresh).to(dev).eval()
        return build_transformer(fresh, device=dev).eval()
    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            perm = torch.randperm(p.numel(), generator=g).to(p.device)
            p.copy_(p.flatten()[perm].reshape(p.shape))
    return other.eval()


def probe_accuracy(
    model: torch.nn.Module,
    pairs: MinimalPairs,
    hooks: Sequence[str],
    positions: str = "query",
    test_fraction: float = 0.3,
    seed: int = 0,
) -> dict[str, float]:
    """Held-out accuracy of a multinomial logistic-regression probe for ``pairs.variable``
    at each hook, on the base and source inputs' activations at the aligned positions
    (their mean when there are several). Splits by pair, as DAS does."""
    names = check_hooks(model, hooks)
    dev = model_device(model)
    pos = parse_positions(positions)
    train, test = pairs.split(test_fraction, seed=seed)
    out = {}
    feats = {}
    for part in (train, test):
        swapped = part.subset(slice(None))
        swapped.base, swapped.source = part.source, part.base
        swapped.base_lengths, swapped.source_lengths = part.source_lengths, part.base_lengths
        swapped.base_query, swapped.source_query = part.source_query, part.base_query
        with torch.no_grad():
            src = source_activations(model, part, names, pos, dev)
            base = source_activations(model, swapped, names, pos, dev)
        y = torch.cat([part.source_values[part.variable], part.base_values[part.variable]])
        feats[id(part)] = ({h: torch.cat([src[h], base[h]]).mean(1).cpu() for h in names}, y)
    (xtr, ytr), (xte, yte) = feats[id(train)], feats[id(test)]
    for h in names:
        if len(torch.unique(ytr)) < 2:
            raise ValueError(f"the training pairs hold one value of {pairs.variable!r} only")
        clf = LogisticRegression(max_iter=2000)
        clf.fit(xtr[h].double().numpy(), ytr.numpy())
        out[h] = float(np.mean(clf.predict(xte[h].double().numpy()) == yte.numpy()))
    return out


def das_with_controls(
    model: torch.nn.Module,
    pairs: MinimalPairs,
    hooks: str | Sequence[str],
    config: DASConfig | None = None,
    *,
    random_model: bool = True,
    probe: bool = True,
    progress: bool = False,
) -> list[dict]:
    """One record per hook: ``hook``, ``variable``, ``rank``, ``das``, ``das_train``,
    ``full``, ``random_subspace``, ``random_model``, ``probe`` and ``chance`` (see the
    module docstring); all IIAs on the held-out pairs."""
    config = config or DASConfig()
    names = check_hooks(model, hooks)
    found = das(model, pairs, names, config, progress=progress)
    _, test = pairs.split(config.test_fraction, seed=config.seed)
    pos = parse_positions(config.positions)
    widths = {h: int(found.bases[h].shape[1]) for h in names}
    full = interchange_accuracy(
        model, test, [Alignment(h, pos) for h in names], check_minimal=False
    )
    rand = interchange_accuracy(
        model,
        test,
        [Alignment(h, pos, random_basis(widths[h], config.rank, config.seed)) for h in names],
        check_minimal=False,
    )
    control = None
    if random_model:
        control = das(random_weights_copy(model, config.seed), pairs, names, config)
    probes = (
        probe_accuracy(model, pairs, names, config.positions, config.test_fraction, config.seed)
        if probe
        else {}
    )
    chance = float(1.0 / pairs.candidates.shape[1])
    records = []
    for i, h in enumerate(names):
        records.append(
            {
                "variable": pairs.variable,
                "hook": h,
                "rank": config.rank,
                "positions": config.positions,
                "das": found.iia_test[h],
                "das_train": found.iia_train[h],
                "full": full[i],
                "random_subspace": rand[i],
                "random_model": control.iia_test[h] if control is not None else None,
                "probe": probes.get(h),
                "chance": chance,
                "n_pairs": len(pairs),
            }
        )
    return records
