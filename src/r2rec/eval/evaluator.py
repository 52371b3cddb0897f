"""The evaluation protocol as a named, configurable object, and the function that applies it.

Every method (random, popularity, SASRec, the untuned LLM, R2Rec after SFT and RL) is scored by
:func:`evaluate`, so every row of every table follows the same rules: the same split, the same frozen
candidate seeds, the same metric definitions (:mod:`r2rec.eval.metrics`) and the same bootstrap
(:mod:`r2rec.eval.bootstrap`). Usage::

    protocol = EvalProtocol(split="test", seeds=(0, 1, 2))
    preds = {s: [Prediction.from_sample(x, scores=model.score(x)) for x in data.samples("test", s)]
             for s in protocol.seeds}
    result = evaluate(protocol, "sasrec", "llara-movielens", preds, config=cfg, wall_seconds=12.3)
    write_result(run.results, result, preds)          # r2rec.eval.results

The result dict is the result file contract of docs/design.md.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .bootstrap import summarize
from .metrics import ANSWER_METRICS, RANK_METRICS, Prediction, metric_arrays


@dataclass
class EvalProtocol:
    """How methods are evaluated.

    split: which prepared split to score (``test``; ``val`` for model selection).
    seeds: candidate seeds; each seed is one frozen draw of the 19 negatives per sample. Metrics are averaged
        over seeds; ``<metric>_std`` is the std over the per-seed values.
    num_candidates: candidates per sample (target + negatives); every prediction must have exactly this many.
    n_bootstrap: bootstrap resamples for the confidence intervals.
    ci: confidence level of the percentile interval (0.95 -> 2.5th and 97.5th percentiles).
    bootstrap_seed: seed of the resampling RNG, so intervals are reproducible.
    """

    split: str = "test"
    seeds: tuple[int, ...] = (0, 1, 2)
    num_candidates: int = 20
    n_bootstrap: int = 1000
    ci: float = 0.95
    bootstrap_seed: int = 0

    def __post_init__(self):
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.seeds:
            raise ValueError("EvalProtocol.seeds: need at least one candidate seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"EvalProtocol.seeds: duplicate seeds in {self.seeds}")
        if self.num_candidates < 2:
            raise ValueError(f"EvalProtocol.num_candidates must be >= 2, got {self.num_candidates}")
        if self.n_bootstrap < 1:
            raise ValueError(f"EvalProtocol.n_bootstrap must be >= 1, got {self.n_bootstrap}")
        if not 0.0 < self.ci < 1.0:
            raise ValueError(f"EvalProtocol.ci must be in (0, 1), got {self.ci}")


def _where(seed: int, i: int, p: Prediction) -> str:
    return f"seed {seed}, sample {i} (user {p.user!r})"


def validate(
    protocol: EvalProtocol,
    predictions_by_seed: Mapping[int, Sequence[Prediction]],
    samples_by_seed: Mapping[int, Sequence[Any]] | None = None,
) -> int:
    """Check predictions against the protocol; return the number of samples per seed.

    Every seed of the protocol is present (and no other); each prediction's candidates have the protocol's
    size, are distinct and contain the target; per-seed lists align (same users and targets, same order)
    so samples can be resampled jointly across seeds. With ``samples_by_seed`` (the prepared samples), each
    prediction must also carry exactly its sample's user, target and frozen candidates.
    """
    # Seeds may arrive as strings (from JSON); compare and index them as ints.
    predictions_by_seed = {int(s): v for s, v in predictions_by_seed.items()}
    got = sorted(predictions_by_seed)
    want = sorted(protocol.seeds)
    if got != want:
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        raise ValueError(
            f"predictions are for seeds {got}, the protocol asks for {want}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unexpected {extra}" if extra else "")
        )
    first = protocol.seeds[0]
    ref = list(predictions_by_seed[first])
    if not ref:
        raise ValueError(f"seed {first}: no predictions")
    k = protocol.num_candidates
    for seed in protocol.seeds:
        preds = list(predictions_by_seed[seed])
        if len(preds) != len(ref):
            raise ValueError(
                f"seed {seed} has {len(preds)} predictions, seed {first} has {len(ref)}: "
                f"every seed must score the same samples"
            )
        samples = None
        if samples_by_seed is not None:
            if seed not in samples_by_seed:
                raise ValueError(f"no prepared samples given for seed {seed}")
            samples = list(samples_by_seed[seed])
            if len(samples) != len(preds):
                raise ValueError(f"seed {seed}: {len(preds)} predictions for {len(samples)} prepared samples")
        for i, p in enumerate(preds):
            if not isinstance(p, Prediction):
                raise ValueError(f"seed {seed}, sample {i}: expected a Prediction, got {type(p).__name__}")
            if p.seed != seed:
                raise ValueError(f"{_where(seed, i, p)}: prediction says seed {p.seed}")
            if len(p.candidates) != k:
                raise ValueError(f"{_where(seed, i, p)}: {len(p.candidates)} candidates, protocol expects {k}")
            n_target = p.candidates.count(p.target)
            if n_target != 1:
                raise ValueError(
                    f"{_where(seed, i, p)}: target {p.target} appears {n_target} times among "
                    f"the candidates (must be exactly once)"
                )
            if len(set(p.candidates)) != k:
                raise ValueError(f"{_where(seed, i, p)}: duplicate candidates")
            r = ref[i]
            if (p.user, p.target) != (r.user, r.target):
                raise ValueError(
                    f"{_where(seed, i, p)}: misaligned with seed {first} (user {r.user!r}, target "
                    f"{r.target}); per-seed prediction lists must hold the same samples in the "
                    f"same order"
                )
            if samples is not None:
                s = samples[i]
                if (str(s.user), int(s.target), tuple(s.candidates)) != (p.user, p.target, p.candidates):
                    raise ValueError(
                        f"{_where(seed, i, p)}: does not match the prepared sample (user "
                        f"{s.user!r}, target {s.target}); candidates must be the frozen ones"
                    )
    return len(ref)


def _jsonable(config: Any) -> Any:
    if is_dataclass(config) and not isinstance(config, type):
        config = asdict(config)
    # Round-trip so tuples, paths and numpy scalars become plain JSON values.
    return json.loads(json.dumps(config if config is not None else {}, default=str))


def evaluate(
    protocol: EvalProtocol,
    method: str,
    dataset: str,
    predictions_by_seed: Mapping[int, Sequence[Prediction]],
    config: Any = None,
    wall_seconds: float | None = None,
    samples_by_seed: Mapping[int, Sequence[Any]] | None = None,
) -> dict:
    """Score one method under ``protocol``; return the result dict (the contract in docs/design.md).

    Keys: ``method, dataset, split, seeds, n`` (samples per seed), ``num_candidates``, ``chance_hr1``,
    ``hr1, hr1_valid, valid_ratio`` and, when every prediction has scores, ``hr@1, hr@5, ndcg@5, ndcg@10, mrr``;
    ``faithfulness`` (mean over predictions that carry it) when any does. Each metric ``m`` has
    ``m_ci95 = [lo, hi]`` and ``m_std`` (std over seeds; ``None`` with one seed). ``per_seed`` holds each
    metric's per-seed values; ``protocol``, ``config`` and ``wall_seconds`` record how it was produced.
    An undefined value (``hr1_valid`` with no valid answer) is ``None`` (JSON null).
    """
    if not method or any(c in method for c in "/\\") or method.startswith("."):
        raise ValueError(f"method name {method!r}: must be non-empty, without path separators, not start with '.'")
    predictions_by_seed = {int(s): v for s, v in predictions_by_seed.items()}
    n = validate(protocol, predictions_by_seed, samples_by_seed)
    per_seed = [list(predictions_by_seed[s]) for s in protocol.seeds]
    with_ranks = all(p.scores is not None for preds in per_seed for p in preds)
    arrs = [metric_arrays(preds, with_ranks) for preds in per_seed]
    stacked = {k: np.stack([a[k] for a in arrs]) for k in arrs[0]}

    means = {"hr1": "correct", "valid_ratio": "valid"}
    ratios = {"hr1_valid": ("correct", "valid")}
    if with_ranks:
        means.update({m: m for m in RANK_METRICS})
    has_faith = bool(stacked["has_faith"].any())
    if has_faith:
        ratios["faithfulness"] = ("faith", "has_faith")
    summ = summarize(stacked, means, ratios, n_boot=protocol.n_bootstrap, ci=protocol.ci, seed=protocol.bootstrap_seed)

    order = [*ANSWER_METRICS, *(RANK_METRICS if with_ranks else ()), *(("faithfulness",) if has_faith else ())]
    result: dict[str, Any] = {
        "method": method,
        "dataset": dataset,
        "split": protocol.split,
        "seeds": list(protocol.seeds),
        "n": n,
        "num_candidates": protocol.num_candidates,
        "chance_hr1": 1.0 / protocol.num_candidates,
    }
    for m in order:
        s = summ[m]
        result[m] = s.mean
        result[f"{m}_ci95"] = list(s.ci95)
        result[f"{m}_std"] = s.std
    result["metrics"] = order
    result["per_seed"] = {m: list(summ[m].per_seed) for m in order}
    result["protocol"] = _jsonable(protocol)
    result["bootstrap"] = {
        "method": "percentile, samples resampled jointly across seeds",
        "n": protocol.n_bootstrap,
        "ci": protocol.ci,
        "seed": protocol.bootstrap_seed,
    }
    result["config"] = _jsonable(config)
    result["wall_seconds"] = None if wall_seconds is None else float(wall_seconds)
    return result
