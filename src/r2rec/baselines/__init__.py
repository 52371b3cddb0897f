"""Classical baselines: random, popularity, item transition, co-occurrence, chain evidence, SASRec, GRU4Rec.

``BASELINES`` maps a name to its ``Recommender`` class (torch is imported only for the neural ones, on access).
The count-based scores themselves live one layer down, in :mod:`r2rec.signals` (the prompts rank candidates
with them too), and the chain-evidence score in :mod:`r2rec.graph`; this package wraps them as rankers.

Where the package sits: above :mod:`r2rec.eval`. Fitting a neural baseline stops early on val HR@1 and MRR
computed with the evaluator's own tie rule (:func:`r2rec.eval.metrics.rank_metrics`), and the stage
(:mod:`r2rec.baselines.stage`) writes its result through the shared evaluator, so both read ``eval``; ``eval``
never imports a baseline, so the yardstick does not depend on what it measures.
"""

import os

# OpenMP threads that busy-wait between the tiny ops of these models collapse when the (shared, 2-core) CPU
# is busy: a SASRec step went from 48 ms to 880 ms with 2 spinning threads. Passive waiting avoids that. It only
# takes effect if torch is not imported yet, and an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from r2rec.baselines.base import BASELINES, Recommender, make_recommender  # noqa: E402

__all__ = ["BASELINES", "Recommender", "make_recommender"]
