"""Per-sample metrics for next-item prediction among a fixed candidate set.

Every method, classical ranker or LLM, reports one :class:`Prediction` per sample. A ranker gives ``scores``
(one per candidate, same order, higher is better); an LLM gives an ``answer`` (the chosen item id, ``None``
when it named no single candidate). The metrics below turn one prediction into numbers:

* ``correct``  (headline ``hr1``): 1 if the answer is the target. From scores alone the answer is the
  top-scored candidate and **ties count fractionally**: a target tied with ``t`` others at the top earns
  ``1/(t+1)``. A method that cannot separate the candidates (popularity with all-zero scores) therefore gets
  exactly chance, whatever the candidate order.
* ``valid``: the answer names one of the candidates. A scores-only prediction is always valid.
* ``hr@1``, ``hr@5``, ``ndcg@5``, ``ndcg@10``, ``mrr`` (scores only): the expectation over a uniformly random
  order among candidates tied with the target. With ``a`` candidates strictly above the target and ``t`` tied with
  it, the target's rank ``r`` is uniform on ``a+1 .. a+t+1``, so each metric is the mean of its value over those ranks
  (closed forms via cumulative sums; see :func:`rank_metrics`). MRR has no cut-off. ``hr@1`` is the top of
  the score ranking: for a ranker it equals ``hr1``; for an LLM, which answers by decoding and also scores every
  candidate title after its reasoning, it is what the model would score if it answered with its most
  probable title instead (``r2rec eval answer_from=scores``), so one evaluation shows both.

Aggregates (``hr1`` = correct / all, ``hr1_valid`` = correct / valid, ``valid_ratio`` = valid / all) and their
confidence intervals live in :mod:`r2rec.eval.bootstrap` and :mod:`r2rec.eval.evaluator`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

# Metrics defined from scores only; reported when every prediction of a method has scores.
RANK_METRICS: tuple[str, ...] = ("hr@1", "hr@5", "ndcg@5", "ndcg@10", "mrr")
# Metrics every method gets.
ANSWER_METRICS: tuple[str, ...] = ("hr1", "hr1_valid", "valid_ratio")


@dataclass
class Prediction:
    """One method's output on one sample (one user, one candidate seed).

    ``scores``: one float per candidate, same order as ``candidates``, higher = better (rankers).
    ``answer``: the chosen item id; ``None`` = no valid answer (LLMs). When ``answer`` is given it decides
    ``hr1``/``valid`` even if ``scores`` are also given; when only ``scores`` are given the answer is the
    top-scored candidate (ties fractional, see the module docstring).
    ``raw``, ``reasoning``, ``faithfulness``, ``extra``: carried into the per-sample dump for inspection.
    """

    user: str
    seed: int
    target: int
    candidates: tuple[int, ...]
    scores: tuple[float, ...] | None = None
    answer: int | None = None
    raw: str | None = None
    reasoning: str | None = None
    faithfulness: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        # Accept lists / numpy arrays from callers, store plain tuples so predictions compare and serialise.
        self.user = str(self.user)
        self.seed = int(self.seed)
        self.target = int(self.target)
        self.candidates = tuple(int(c) for c in self.candidates)
        if self.scores is not None:
            self.scores = tuple(float(s) for s in self.scores)
            if len(self.scores) != len(self.candidates):
                raise ValueError(
                    f"prediction for user {self.user!r} (seed {self.seed}): {len(self.scores)} scores for "
                    f"{len(self.candidates)} candidates; give one score per candidate, same order"
                )
            if any(math.isnan(s) for s in self.scores):
                raise ValueError(f"prediction for user {self.user!r} (seed {self.seed}): NaN in scores")
        if self.answer is not None:
            self.answer = int(self.answer)
        if self.faithfulness is not None:
            self.faithfulness = float(self.faithfulness)

    @property
    def has_scores(self) -> bool:
        return self.scores is not None

    @property
    def top(self) -> int | None:
        """The answer used for display: ``answer`` if given, else the first top-scored candidate."""
        if self.answer is not None or self.scores is None:
            return self.answer
        return self.candidates[int(np.argmax(self.scores))]

    def to_json(self) -> dict:
        d = {
            "user": self.user,
            "seed": self.seed,
            "target": self.target,
            "candidates": list(self.candidates),
            "scores": None if self.scores is None else list(self.scores),
            "answer": self.answer,
        }
        # Optional fields only when present: keeps baseline dumps small.
        for k in ("raw", "reasoning", "faithfulness"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.extra:
            d["extra"] = self.extra
        return d

    @classmethod
    def from_json(cls, d: dict) -> Prediction:
        return cls(
            user=d["user"],
            seed=d["seed"],
            target=d["target"],
            candidates=d["candidates"],
            scores=d.get("scores"),
            answer=d.get("answer"),
            raw=d.get("raw"),
            reasoning=d.get("reasoning"),
            faithfulness=d.get("faithfulness"),
            extra=d.get("extra") or {},
        )

    @classmethod
    def from_sample(cls, sample, **kwargs) -> Prediction:
        """A prediction for a :class:`r2rec.data.schema.Sample` (user, seed, target, candidates copied)."""
        return cls(user=sample.user, seed=sample.seed, target=sample.target, candidates=sample.candidates, **kwargs)


# -- ranks with ties ---------------------------------------------------------------------------------------


def target_position(pred: Prediction) -> int:
    """Index of the target in the candidates (the caller guarantees it is there exactly once)."""
    try:
        return pred.candidates.index(pred.target)
    except ValueError:
        raise ValueError(
            f"prediction for user {pred.user!r} (seed {pred.seed}): target {pred.target} is not among its candidates"
        ) from None


def above_and_tied(scores: Sequence[float], target_idx: int) -> tuple[int, int]:
    """``(a, t)``: candidates scored strictly above the target, and the *other* candidates tied with it."""
    s = np.asarray(scores, dtype=np.float64)
    ts = s[target_idx]
    return int((s > ts).sum()), int((s == ts).sum()) - 1


def _discount_cumsum(n: int) -> np.ndarray:
    """``D[r] = sum_{j<=r} 1/log2(j+1)`` with ``D[0] = 0``: NDCG of a single relevant item at rank ``j``."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, n + 2)))])


def _harmonic_cumsum(n: int) -> np.ndarray:
    """``H[r] = sum_{j<=r} 1/j`` with ``H[0] = 0``."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1))])


def rank_metrics(
    a: np.ndarray,
    t: np.ndarray,
    n_candidates: int,
    hr_ks: Sequence[int] = (1, 5),
    ndcg_ks: Sequence[int] = (5, 10),
    ranked: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Expected HR@k, NDCG@k and MRR when the target's rank is uniform on ``a+1 .. a+t+1``.

    For a per-rank gain ``g(r)`` with cumulative sum ``G``, ``E[g] = (G[hi] - G[lo]) / (t+1)`` where
    ``lo = a`` and ``hi = a+t+1``, each clipped at the cut-off ``k`` for @k metrics. Vectorised over samples.
    NDCG@k of one relevant item at rank ``r`` is ``1 / log2(r + 1)`` for ``r <= k``, else 0 (the ideal DCG is 1).
    The defaults give the candidate metrics (``hr@1``, ``hr@5``, ``ndcg@5``, ``ndcg@10``, ``mrr``); the
    whole-catalogue evaluation asks for ``hr_ks=(1, 5, 10), ndcg_ks=(10,)`` over the catalogue's size.
    ``ranked``: optional bool per sample; where False the target was never ranked (e.g. left out by a retrieval
    stage) and every metric is 0.
    """
    a = np.asarray(a, dtype=np.int64)
    t = np.asarray(t, dtype=np.int64)
    lo, hi, m = a, a + t + 1, (t + 1).astype(np.float64)
    n = int(max(n_candidates, int(hi.max(initial=1))))
    D, H = _discount_cumsum(n), _harmonic_cumsum(n)
    out = {}
    for k in hr_ks:
        out[f"hr@{k}"] = (np.minimum(hi, k) - np.minimum(lo, k)) / m
    for k in ndcg_ks:
        out[f"ndcg@{k}"] = (D[np.minimum(hi, k)] - D[np.minimum(lo, k)]) / m
    out["mrr"] = (H[hi] - H[lo]) / m
    if ranked is not None:
        keep = np.asarray(ranked, dtype=bool)
        out = {name: np.where(keep, v, 0.0) for name, v in out.items()}
    return out


# -- one prediction ----------------------------------------------------------------------------------------


def valid(pred: Prediction) -> float:
    """1.0 if the answer is one of the candidates (scores-only predictions are valid), else 0.0."""
    if pred.answer is not None:
        return float(pred.answer in pred.candidates)
    return float(pred.scores is not None)


def hr1(pred: Prediction) -> float:
    """1 if the answer is the target, from ``answer`` when given, else from scores with fractional ties."""
    if pred.answer is not None:
        return float(pred.answer == pred.target)
    if pred.scores is None:
        return 0.0  # no answer at all: a miss
    a, t = above_and_tied(pred.scores, target_position(pred))
    return float(rank_metrics(np.array([a]), np.array([t]), len(pred.candidates))["hr@1"][0])


def _rank(pred: Prediction, name: str) -> float | None:
    if pred.scores is None:
        return None
    a, t = above_and_tied(pred.scores, target_position(pred))
    return float(rank_metrics(np.array([a]), np.array([t]), len(pred.candidates))[name][0])


def hr_at_5(pred: Prediction) -> float | None:
    return _rank(pred, "hr@5")


def ndcg_at_5(pred: Prediction) -> float | None:
    return _rank(pred, "ndcg@5")


def ndcg_at_10(pred: Prediction) -> float | None:
    return _rank(pred, "ndcg@10")


def mrr(pred: Prediction) -> float | None:
    return _rank(pred, "mrr")


def sample_metrics(pred: Prediction) -> dict[str, float]:
    """All per-sample numbers of one prediction: ``correct``, ``valid`` and, with scores, the rank metrics."""
    out = {"correct": hr1(pred), "valid": valid(pred)}
    if pred.scores is not None:
        a, t = above_and_tied(pred.scores, target_position(pred))
        r = rank_metrics(np.array([a]), np.array([t]), len(pred.candidates))
        out.update({m: float(r[m][0]) for m in RANK_METRICS})
    return out


# -- many predictions at once (what the evaluator uses) ------------------------------------------------------


def metric_arrays(preds: Sequence[Prediction], with_ranks: bool) -> dict[str, np.ndarray]:
    """Per-sample arrays over ``preds``: ``correct``, ``valid``, ``faith`` / ``has_faith`` and, when
    ``with_ranks``, the rank metrics (every prediction must then have scores).

    The rank part is vectorised: all predictions of one evaluation share the candidate-set size.
    """
    n = len(preds)
    correct = np.zeros(n)
    valid_ = np.zeros(n)
    faith = np.zeros(n)
    has_faith = np.zeros(n)
    for i, p in enumerate(preds):
        if p.answer is not None:
            valid_[i] = p.answer in p.candidates
            correct[i] = p.answer == p.target
        else:
            valid_[i] = p.scores is not None
        if p.faithfulness is not None:
            faith[i], has_faith[i] = p.faithfulness, 1.0
    out = {"correct": correct, "valid": valid_, "faith": faith, "has_faith": has_faith}
    score_rows = [i for i, p in enumerate(preds) if p.scores is not None]
    if score_rows:
        S = np.array([preds[i].scores for i in score_rows], dtype=np.float64)
        tpos = np.array([target_position(preds[i]) for i in score_rows])
        ts = S[np.arange(len(score_rows)), tpos][:, None]
        a, t = (S > ts).sum(1), (S == ts).sum(1) - 1
        r = rank_metrics(a, t, S.shape[1])
        # Scores decide hr1 only where no explicit answer was given.
        no_answer = np.array([preds[i].answer is None for i in score_rows])
        rows = np.array(score_rows)
        correct[rows[no_answer]] = r["hr@1"][no_answer]
        if with_ranks:
            if len(score_rows) != n:
                raise ValueError("rank metrics need scores on every prediction")
            for m in RANK_METRICS:
                out[m] = r[m]
    elif with_ranks and n:
        raise ValueError("rank metrics need scores on every prediction")
    return out
