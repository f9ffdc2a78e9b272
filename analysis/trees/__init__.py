"""Tree projections [Murty2023a]: span scores of a model on sentences, their
decoding into binary trees, tree scores and parse F1 against gold trees.

- :mod:`.spans`: :func:`span_scores`, one (n, n) matrix per sentence, every span run
  isolated in batched masked forwards (:func:`span_scores_many`: S models of one shape as
  one stack);
- :mod:`.decode`: :func:`tree_projection` (greedy or exact), :func:`tree_splits`,
  :func:`constituent_score`;
- :mod:`.metrics`: :func:`tree_score`, :func:`parse_f1` and the branching baselines;
- :mod:`.sentences`: checks of the token sequences and word spans;
- :mod:`.isolation`: packing isolated rows to their visible tokens, length buckets;
- :mod:`.block_runner`: the fused-kernel transformer blocks ``span_scores`` runs TL-native
  bridges on;
- :mod:`.forward_runner`: isolated rows through a model's own forward with attention masks
  (bridges booted from Hugging Face folders, plain modules).

This room imports only :mod:`hierlens.models`.
"""

from .block_runner import BlockRunner
from .metrics import baseline_trees
from .spans import span_scores_many

__all__ = ["BlockRunner", "baseline_trees", "span_scores_many"]
