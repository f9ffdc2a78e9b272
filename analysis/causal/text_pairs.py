"""Minimal pairs a user writes: sentence pairs for a pretrained model loaded from disk.

A pair file is JSON lines, one pair per line::

    {"base": "The keys to the cabinet", "source": "The key to the cabinets",
     "base_answer": " are", "source_answer": " is", "base_value": 1, "source_value": 0}

``base_value``/``source_value`` are the variable's values (integers) on each sentence;
each answer must be one token. The query is each sentence's last token; the counterfactual
output is the source's answer (setting the variable to the source's value makes the base
answer as the source does); the candidates are the two answers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from hierlens.models.tasks.variables import MinimalPairs

__all__ = ["pairs_from_sentences", "read_pair_file"]

_KEYS = ("base", "source", "base_answer", "source_answer", "base_value", "source_value")


def _one_token(tokenizer: Any, text: str, where: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(
            f"{where}: the answer {text!r} is {len(ids)} tokens; answers must be one token"
        )
    return int(ids[0])


def pairs_from_sentences(
    tokenizer: Any, records: Sequence[Mapping[str, Any]], variable: str, causal: bool = True
) -> MinimalPairs:
    """:class:`~hierlens.models.tasks.variables.MinimalPairs` from sentence-pair records (see
    the module docstring), tokenized with ``tokenizer`` (its special tokens included)."""
    if not records:
        raise ValueError("no sentence pairs given")
    rows: dict[str, list] = {k: [] for k in ("base", "source", "bl", "sl", "bv", "sv")}
    for i, rec in enumerate(records):
        missing = [k for k in _KEYS if k not in rec]
        if missing:
            raise ValueError(f"pair {i}: missing {missing}; each pair needs {', '.join(_KEYS)}")
        if rec["base_value"] == rec["source_value"]:
            raise ValueError(f"pair {i}: base and source have the same {variable!r}")
        rows["base"].append(tokenizer(rec["base"])["input_ids"])
        rows["source"].append(tokenizer(rec["source"])["input_ids"])
        rows["bl"].append(_one_token(tokenizer, rec["base_answer"], f"pair {i}"))
        rows["sl"].append(_one_token(tokenizer, rec["source_answer"], f"pair {i}"))
        rows["bv"].append(int(rec["base_value"]))
        rows["sv"].append(int(rec["source_value"]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def padded(seqs):
        T = max(len(s) for s in seqs)
        out = torch.full((len(seqs), T), int(pad), dtype=torch.int64)
        for r, s in enumerate(seqs):
            out[r, : len(s)] = torch.tensor(s)
        return out

    bl_, sl_ = (
        torch.tensor([len(s) for s in rows["base"]]),
        torch.tensor([len(s) for s in rows["source"]]),
    )
    base_label, source_label = torch.tensor(rows["bl"]), torch.tensor(rows["sl"])
    pairs = MinimalPairs(
        variable=variable,
        base=padded(rows["base"]),
        source=padded(rows["source"]),
        base_lengths=bl_,
        source_lengths=sl_,
        base_query=bl_ - 1,
        source_query=sl_ - 1,
        base_label=base_label,
        source_label=source_label,
        counterfactual=source_label.clone(),
        candidates=torch.stack([base_label, source_label], 1),
        base_values={variable: torch.tensor(rows["bv"])},
        source_values={variable: torch.tensor(rows["sv"])},
        pad_id=int(pad),
        causal=causal,
    )
    pairs.validate()
    return pairs


def read_pair_file(
    path: str | os.PathLike, tokenizer: Any, variable: str, causal: bool = True
) -> MinimalPairs:
    """:func:`pairs_from_sentences` of the JSON-lines file ``path``."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: not a JSON object ({exc})") from None
    return pairs_from_sentences(tokenizer, records, variable, causal)
