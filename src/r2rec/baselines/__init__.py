"""Classical baselines: random, popularity, item transition, SASRec, GRU4Rec.

``BASELINES`` maps a name to its ``Recommender`` class (torch is imported only for the neural ones, on access).
``transition_scores`` is the evidence heuristic the LLM stages reuse to rank a prompt's candidates.
"""

import os

# OpenMP threads that busy-wait between the tiny ops of these models collapse when the (shared, 2-core) CPU
# is busy: a SASRec step went from 48 ms to 880 ms with 2 spinning threads. Passive waiting avoids that. It only
# takes effect if torch is not imported yet, and an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from r2rec.baselines.base import BASELINES, Recommender, make_recommender  # noqa: E402
from r2rec.baselines.transition import transition_matrix, transition_scores  # noqa: E402

__all__ = ["BASELINES", "Recommender", "make_recommender", "transition_matrix", "transition_scores"]
