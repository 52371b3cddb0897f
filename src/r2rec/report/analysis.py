"""Numbers the report derives from the prediction dumps: position bias, faithfulness, example traces.

Everything here is a pure function of predictions (``r2rec.eval.metrics.Prediction``) so it is testable
without a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..eval.metrics import Prediction

# Keys under which an evaluator may record the order the candidates were *shown* in the prompt (the prompt
# can reorder the frozen candidates, e.g. strongest evidence first). Without one, the stored order is used.
SHOWN_ORDER_KEYS = ("shown_candidates", "candidate_order", "ordered_candidates", "prompt_candidates")

# Display order of known methods: classical baselines, then the LLM variants, R2Rec last.
METHOD_ORDER = (
    "random",
    "pop",
    "popularity",
    "transition",
    "cooc",
    "evidence",
    "sasrec",
    "gru4rec",
    "blend",
    "prior",
    "base",
    "sft-direct",
    "sft",
    "rl",
    "rl+prior",
)


def is_classical(result) -> bool:
    """A row of a classical model (a baseline, or the prior the prompt and the fusion use), not of an LLM."""
    config = result.get("config") or {}
    return "baseline" in config or (result.get("method") == "prior" and "llm" not in config)


def method_sort_key(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)


def shown_order(p: Prediction) -> tuple[tuple[int, ...], bool]:
    """The candidates in prompt order and whether that order was recorded (else the stored order)."""
    for key in SHOWN_ORDER_KEYS:
        order = p.extra.get(key) if p.extra else None
        if order is not None:
            try:
                order = tuple(int(c) for c in order)
            except (TypeError, ValueError):
                continue
            if sorted(order) == sorted(p.candidates):
                return order, True
    return p.candidates, False


def _first_share(p: Prediction, first: int) -> float | None:
    """Probability mass the method puts on the first listed candidate; ``None`` without an answer or scores.

    From scores, ties at the top share the mass (as HR@1 does): a method that ties everything is not
    counted as always choosing the first candidate.
    """
    if p.answer is not None:
        return float(p.answer == first)
    if p.scores is None:
        return None
    s = np.asarray(p.scores)
    top = s == s.max()
    return float(top[p.candidates.index(first)]) / float(top.sum())


@dataclass
class PositionBias:
    n: int  # predictions considered (answer or scores)
    answer_first: float  # share of answers that are the first listed candidate
    target_first: float  # share of samples whose target is listed first (what a perfect model would do)
    chance: float  # 1 / number of candidates
    invalid: int  # predictions with neither a valid answer nor scores
    order_recorded: bool  # True if the prompt order was recorded with the predictions
    # For methods that answer (LLMs): HR@1 when the answer is the first listed candidate, and when it is not
    # (a "departure"): does the model add anything to the ranking it reads? None for rankers / no such answer.
    hit_when_first: float | None = None
    departures: int = 0
    hit_when_departing: float | None = None


def position_bias(preds_by_seed: Mapping[int, Sequence[Prediction]]) -> PositionBias | None:
    """How often the method answers with the first candidate shown, against how often that is the target."""
    shares: list[float] = []
    targets: list[float] = []
    k, invalid, recorded = 0, 0, True  # k: the number of candidates, set by every prediction
    # Answered predictions, by "answer is the first listed": hit or not.
    hits: dict[bool, list[float]] = {True: [], False: []}
    for preds in preds_by_seed.values():
        for p in preds:
            order, rec = shown_order(p)
            recorded &= rec
            k = len(order)
            share = _first_share(p, order[0])
            if share is None or (p.answer is not None and p.answer not in p.candidates):
                invalid += 1
                # An invalid answer is not the first candidate: it still counts in the denominator.
                share = 0.0 if share is None else share
            shares.append(share)
            targets.append(float(order[0] == p.target))
            if p.answer is not None:
                hits[p.answer == order[0]].append(float(p.answer == p.target))
    if not shares:
        return None

    def mean(xs):
        return float(np.mean(xs)) if xs else None

    return PositionBias(
        len(shares),
        float(np.mean(shares)),
        float(np.mean(targets)),
        1.0 / k,
        invalid,
        recorded,
        mean(hits[True]),
        len(hits[False]),
        mean(hits[False]),
    )


def faithfulness_values(preds_by_seed: Mapping[int, Sequence[Prediction]]) -> list[float]:
    return [p.faithfulness for preds in preds_by_seed.values() for p in preds if p.faithfulness is not None]


def has_reasoning(preds_by_seed: Mapping[int, Sequence[Prediction]] | None, raw_ok: bool = False) -> bool:
    """Whether any prediction carries reasoning (or, with ``raw_ok``, at least a raw model output)."""
    if not preds_by_seed:
        return False
    return any(p.reasoning or (raw_ok and p.raw) for ps in preds_by_seed.values() for p in ps)


def pick_traces(preds_by_seed: Mapping[int, Sequence[Prediction]], k: int = 3) -> list[Prediction]:
    """A few predictions with reasoning, deterministic: the first correct one, the first wrong one, then the
    next ones in order (first seed first), so a reader sees a success and a failure."""
    pool = [p for s in sorted(preds_by_seed) for p in preds_by_seed[s] if (p.reasoning or p.raw)]
    picked: list[Prediction] = []
    for want in (True, False):
        hit = next((p for p in pool if (p.answer == p.target) == want), None)
        if hit is not None and len(picked) < k:
            picked.append(hit)
    for p in pool:
        if len(picked) >= k:
            break
        if all(p is not q for q in picked):
            picked.append(p)
    return picked
