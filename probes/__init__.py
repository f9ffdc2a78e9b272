"""hierlens.probes: k-sparse probing after [Gurnee2023].

- :mod:`.select`: neuron selection (mean difference, ANOVA F, mutual information, L1,
  telescope, random, exhaustive), batched over problems;
- :mod:`.logistic`: batched L2 logistic regression (Newton) matching scikit-learn;
- :class:`SparseProbe`: the scikit-learn estimator;
- :func:`probe_sweep`: hooks x features x k sweeps as one batched program, saved as JSONL;
- :mod:`.structural`: structural probes [Hewitt2019] and their metrics;
- :mod:`.labels`: per-token labels from task examples and token/span aggregation.
"""

from .labels import (
    IGNORE_LABEL,
    aggregate_spans,
    flatten_activations,
    token_labels,
    tree_token_labels,
)
from .logistic import LogisticFit, balanced_weights, fit_logistic
from .metrics import binary_metrics
from .select import SELECTIONS, select_features
from .sparse import SparseProbe
from .structural import StructuralProbe, fit_structural, predict_structural, structural_probe_sweep
from .structural_metrics import distance_spearman, norm_spearman, root_accuracy, uuas
from .sweep import BinaryProblem, binary_problems, probe_sweep, stratified_split

__all__ = [
    "StructuralProbe",
    "distance_spearman",
    "fit_structural",
    "norm_spearman",
    "predict_structural",
    "root_accuracy",
    "structural_probe_sweep",
    "uuas",
    "IGNORE_LABEL",
    "SELECTIONS",
    "BinaryProblem",
    "LogisticFit",
    "SparseProbe",
    "aggregate_spans",
    "balanced_weights",
    "binary_metrics",
    "binary_problems",
    "fit_logistic",
    "flatten_activations",
    "probe_sweep",
    "select_features",
    "stratified_split",
    "token_labels",
    "tree_token_labels",
]
