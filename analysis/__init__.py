"""hierlens.analysis: tree projections and scores, grokking tracking, depth sweeps, the
pipeline, reports, paper figures and the CLI.

Each room is its own namespace: :mod:`.trees` (span scores, tree decoding, tree metrics;
imports only :mod:`hierlens.models`), :mod:`.compare` (CKA and other similarities, unit
matching, SAE geometry, rank collapse, comparing runs), :mod:`.report`, :mod:`.figures`,
:mod:`.pipeline`, :mod:`.cli`; beside them :mod:`.grokking` (tracking over checkpoints) and
:mod:`.sweep` (depth sweeps). Import names from the room that holds them:
``from hierlens.analysis.trees import span_scores, tree_projection``. Importing this package
imports none of them, so ``hierlens --help`` stays fast.
"""

__all__: list[str] = []
