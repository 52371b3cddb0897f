"""The "evidence heuristic" baseline: rank candidates by the chains that reach them (no learning, no LLM).

Score of a candidate = recency-weighted count of chains ``u0 -> i_a -> u1 -> candidate`` through train users
who share >= 2 history items with the prompt user and met the candidate after ``i_a``
(:meth:`r2rec.graph.chains.ChainSampler.candidate_evidence`). The LLM stages order a prompt's candidates by
the same score, so this baseline says how much of an LLM's accuracy the ordering alone would give.

Why the ranker lives here and not in :mod:`r2rec.graph`: it implements the ``Recommender`` interface of
:mod:`r2rec.baselines.base` (registered as ``evidence``), and ``baselines`` sits above ``graph`` (it imports the
graph, never the reverse). The score stays in the graph; only this thin wrapper, which fits and scores like any
other baseline, is here, so the interface did not have to move down into a layer of plain scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from r2rec.baselines.base import Recommender, candidate_matrix
from r2rec.data.schema import PreparedData, Sample
from r2rec.graph.chains import ChainConfig, ChainSampler
from r2rec.graph.graph import InteractionGraph


@dataclass
class EvidenceConfig:
    """Chain-evidence settings (same meaning and defaults as the prompt's candidate ordering)."""

    min_shared: int = 2  # closure: other users share at least this many history items
    max_users_per_item: int = 256  # users of one candidate examined (seeded systematic sample); 0 = all
    recency_decay: float = 0.8  # weight of a history item j steps before the latest one: decay ** j

    def __post_init__(self):
        if self.min_shared < 1 or self.max_users_per_item < 0 or not 0 < self.recency_decay <= 1:
            raise ValueError(
                f"need min_shared >= 1, max_users_per_item >= 0, 0 < recency_decay <= 1; got "
                f"{self.min_shared}, {self.max_users_per_item}, {self.recency_decay}"
            )


class EvidenceRecommender(Recommender):
    name = "evidence"
    config_cls = EvidenceConfig

    def fit(self, prepared: PreparedData, seed: int = 0) -> EvidenceRecommender:
        graph = InteractionGraph.from_sequences(prepared.train_sequences(), prepared.n_items)
        c = self.config
        self.sampler = ChainSampler(
            graph,
            ChainConfig(
                k=0,
                min_shared=c.min_shared,
                max_users_per_item=c.max_users_per_item,
                recency_decay=c.recency_decay,
                seed=seed,
            ),
        )
        self.seed = seed
        self.fit_info = {"graph": graph.stats()}
        return self

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        self._check_fitted()
        candidate_matrix(samples)  # same-size check with the baselines' error message
        return self.sampler.candidate_evidence_batch(samples)
