"""Count-based baselines: ``random``, ``pop`` (train popularity) and ``transition`` (item-to-next-item)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from r2rec.baselines.base import Recommender, candidate_matrix
from r2rec.data.schema import PreparedData, Sample
from r2rec.signals import item_counts, transition_matrix, transition_scores


def _uniform_scores(samples: Sequence[Sample], seed: int, n_c: int) -> np.ndarray:
    """Uniform [0, 1) scores per (seed, sample, candidate slot), independent of scoring order.

    Keyed by the sample's user, split and candidate seed so the same sample always gets the same scores.
    """
    out = np.empty((len(samples), n_c))
    for r, s in enumerate(samples):
        key = zlib.crc32(f"{s.user}|{s.split}|{s.seed}".encode())
        out[r] = np.random.default_rng([seed, key]).random(n_c)
    return out


# -- random --------------------------------------------------------------------------------------------
@dataclass
class RandomConfig:
    """No settings: the chance floor (HR@1 = 1 / n_candidates in expectation)."""


class RandomRecommender(Recommender):
    """Uniform random scores, seeded by the fit seed and the sample (same sample -> same scores)."""

    name = "random"
    config_cls = RandomConfig

    def fit(self, prepared: PreparedData, seed: int = 0) -> RandomRecommender:
        self.seed = seed
        return self

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        seed = self._check_fitted()
        return _uniform_scores(samples, seed, candidate_matrix(samples).shape[1])


# -- pop -----------------------------------------------------------------------------------------------
@dataclass
class PopConfig:
    """No settings. Equal counts stay tied: the evaluator counts ties fractionally (expected HR@1)."""


class PopRecommender(Recommender):
    """Scores a candidate by how often it occurs in the train sequences."""

    name = "pop"
    config_cls = PopConfig

    def fit(self, prepared: PreparedData, seed: int = 0) -> PopRecommender:
        self.counts_ = item_counts(prepared.train_sequences(), prepared.n_items)
        self.seed = seed
        self.fit_info = {"train_interactions": int(self.counts_.sum())}
        return self

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        self._check_fitted()
        cands = candidate_matrix(samples)
        ok = (cands >= 0) & (cands < len(self.counts_))
        return np.where(ok, self.counts_[np.where(ok, cands, 0)], 0.0)


# -- transition ----------------------------------------------------------------------------------------
@dataclass
class TransitionConfig:
    """Recency-weighted item-to-next-item counts (see ``r2rec.signals.transition``).

    window:     a train item counts as followed by each of its next ``window`` items.
    gap_decay:  a follower ``j`` steps later weighs ``gap_decay ** (j - 1)``.
    decay:      history item at distance ``d`` from the end weighs ``decay ** d`` (``w`` in the brief).
    normalize:  divide each history item's counts by its row total (P(next | item)) instead of raw counts.
    max_history: number of newest history items used.
    pop_weight: adds ``pop_weight * popularity / max popularity`` so that candidates without any transition
                evidence are ordered by popularity rather than tied (keep it far below one transition).

    The defaults were picked on val HR@1 (mean over the 3 val seeds) of ml-100k, llara-movielens and
    llara-lastfm from a grid over window x gap_decay x decay x normalize (docs/results.md, "Classical
    baselines", has the grid command and what it found).
    """

    window: int = 10
    gap_decay: float = 1.0
    decay: float = 0.8
    normalize: bool = True
    max_history: int = 10
    pop_weight: float = 1e-6

    def __post_init__(self):
        if self.window < 1 or self.max_history < 1:
            raise ValueError(f"window and max_history: must be >= 1, got {self.window}, {self.max_history}")
        if not (0 < self.gap_decay <= 1 and 0 < self.decay <= 1) or self.pop_weight < 0:
            raise ValueError(
                f"need 0 < gap_decay <= 1, 0 < decay <= 1, pop_weight >= 0; got {self.gap_decay}, "
                f"{self.decay}, {self.pop_weight}"
            )


class TransitionRecommender(Recommender):
    name = "transition"
    config_cls = TransitionConfig

    def fit(self, prepared: PreparedData, seed: int = 0) -> TransitionRecommender:
        c = self.config
        seqs = prepared.train_sequences()
        self.matrix_ = transition_matrix((s.items for s in seqs), prepared.n_items, c.window, c.gap_decay, c.normalize)
        counts = item_counts(seqs, prepared.n_items)
        self.pop_ = counts / max(counts.max(), 1.0)
        self.seed = seed
        self.fit_info = {"transition_pairs": int(self.matrix_.nnz)}
        return self

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        self._check_fitted()
        c = self.config
        cands = candidate_matrix(samples)
        scores = transition_scores(self.matrix_, [s.history for s in samples], cands, c.decay, c.max_history)
        if c.pop_weight:
            ok = (cands >= 0) & (cands < len(self.pop_))
            scores = scores + c.pop_weight * np.where(ok, self.pop_[np.where(ok, cands, 0)], 0.0)
        return scores


@dataclass
class CoocConfig(TransitionConfig):
    """``transition`` with every later item of a train sequence counted (``window`` 1000): order-free
    co-occurrence. The best classical ranker on LastFM (co-listening), weak on MovieLens (order matters)."""

    window: int = 1000


class CoocRecommender(TransitionRecommender):
    name = "cooc"
    config_cls = CoocConfig
