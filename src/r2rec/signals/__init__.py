"""Classical scores computed from the train sequences alone, used as priors and evidence above this layer.

- :mod:`r2rec.signals.transition`: item-to-next-item transition counts, the recency-weighted transition score
  (a long window gives order-free co-occurrence) and its leave-one-user-out variant for train samples;
- :mod:`r2rec.signals.popularity`: train item counts.

Why a layer of its own: the same score ranks a prompt's candidates (:mod:`r2rec.prompting`) and is a baseline
(:mod:`r2rec.baselines`), so it lives below both and depends on numpy and scipy only (no graph, no model).
"""

from r2rec.signals.popularity import item_counts
from r2rec.signals.transition import leave_user_out_scores, row_normalize, transition_matrix, transition_scores

__all__ = ["item_counts", "leave_user_out_scores", "row_normalize", "transition_matrix", "transition_scores"]
