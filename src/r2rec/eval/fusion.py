"""Fusion: the LLM's reasoning-conditioned candidate scores combined with the run's prior, one weight chosen on val.

For a sample, with ``llm`` the log-probabilities the evaluation stored for the candidate titles after the
reasoning (``rank: true``) and ``prior`` the prior's scores (:mod:`r2rec.prompting.prior`, the best classical
model; its scores are logits for SASRec/GRU4Rec), both normalised per sample by a log-softmax over the
candidates::

    fused = log_softmax(llm) + w * log_softmax(prior)

(a product of experts: ``w = 0`` is the LLM's own ranking, a large ``w`` the prior's; the log-softmax only shifts
each sample's scores, so the ranking is that of ``llm + w * prior``: for a count-based prior, whose scores are
probabilities rather than logits, the useful weights are larger, hence the wide default grid). Candidates the prompt did
not show (``prompt.show_candidates``) have no LLM score: they get the lowest LLM score of the shown ones, so only
the prior can lift them. ``w`` is the grid value with the best val HR@1 (ties: the smallest ``w``), from the
same model's val predictions; it is then applied to the test predictions, and the result is a method of its own
(``<method>+prior``, e.g. ``rl+prior``) with the chosen weight and the whole val curve in its ``config``.

Nothing here reads a test target before the weight is fixed: the test predictions are fused with the chosen
weight only, and scored by the shared evaluator.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from r2rec.eval.evaluator import EvalProtocol, evaluate
from r2rec.eval.metrics import Prediction, metric_arrays
from r2rec.eval.results import load_predictions, load_result, result_path, write_result
from r2rec.runs import RunDir

log = logging.getLogger(__name__)

# From the LLM alone (0) to the prior with the LLM breaking its ties (1000). The top of the grid is for count-based
# priors, whose scores are probabilities of about 0.01, not logits.
DEFAULT_WEIGHTS = [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0, 1000.0]


@dataclass
class FusionConfig:
    """The fusion of an LLM result with the prior (YAML ``eval.fusion``; off when the key is absent).

    method: the LLM result to fuse (empty = the last of ``eval.models``, e.g. ``rl``).
    weights: the grid of prior weights ``w`` searched on val.
    val_seeds: candidate seeds of the val evaluation the weight is chosen on (empty = the eval's own seeds).
    val_max_samples: evaluate only the first N val samples (0 = all), to bound the cost of the val pass.
    """

    method: str = ""
    weights: list[float] = field(default_factory=lambda: list(DEFAULT_WEIGHTS))
    val_seeds: list[int] = field(default_factory=list)
    val_max_samples: int = 0

    def __post_init__(self):
        if not self.weights or any(w < 0 for w in self.weights):
            raise ValueError(f"weights: need a non-empty list of values >= 0, got {self.weights}")
        if self.val_max_samples < 0:
            raise ValueError(f"val_max_samples: must be >= 0 (0 = all), got {self.val_max_samples}")


def fused_name(method: str) -> str:
    return f"{method}+prior"


def val_name(method: str) -> str:
    """The result name of ``method``'s val pass, which the fusion weight is chosen on."""
    return f"{method}-val"


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def llm_scores(pred: Prediction, n_shown: int) -> np.ndarray:
    """The LLM's scores of ``pred``'s candidates (stored order), hidden candidates at the lowest shown score.

    The prompt order is ``extra["shown_candidates"]`` (shown first, then hidden); ``n_shown`` of them were shown
    (``extra["n_shown"]`` when recorded). Without a recorded order every candidate was shown.
    """
    if pred.scores is None:
        raise ValueError(f"prediction for user {pred.user!r} (seed {pred.seed}) has no candidate scores (eval rank)")
    s = np.asarray(pred.scores, dtype=np.float64)
    order = (pred.extra or {}).get("shown_candidates")
    n_shown = int((pred.extra or {}).get("n_shown", n_shown))
    if not order or not n_shown or n_shown >= len(order):
        return s
    pos = {c: j for j, c in enumerate(pred.candidates)}
    shown = [pos[int(c)] for c in order[:n_shown]]
    hidden = [pos[int(c)] for c in order[n_shown:]]
    s = s.copy()
    s[hidden] = s[shown].min()
    return s


def fuse(preds: Sequence[Prediction], prior: np.ndarray, weight: float, n_shown: int = 0) -> list[Prediction]:
    """Predictions whose scores are ``log_softmax(llm) + weight * log_softmax(prior)`` (no answer: scores rank)."""
    prior = np.asarray(prior, dtype=np.float64)
    if prior.shape != (len(preds), len(preds[0].candidates) if preds else 0):
        raise ValueError(f"prior scores of shape {prior.shape} for {len(preds)} predictions")
    out = []
    for p, q in zip(preds, log_softmax(prior) if len(preds) else prior):
        llm = log_softmax(llm_scores(p, n_shown))
        extra = {k: v for k, v in (p.extra or {}).items() if k in ("shown_candidates", "n_shown")}
        out.append(
            Prediction(
                p.user, p.seed, p.target, p.candidates, scores=llm + weight * q, reasoning=p.reasoning, extra=extra
            )
        )
    return out


def hit_rate(preds: Sequence[Prediction]) -> float:
    """HR@1 of score-only predictions (ties fractional, as the evaluator counts them)."""
    return float(metric_arrays(list(preds), with_ranks=False)["correct"].mean()) if preds else 0.0


def choose_weight(
    preds_by_seed: Mapping[int, Sequence[Prediction]],
    prior_by_seed: Mapping[int, np.ndarray],
    weights: Sequence[float],
    n_shown: int = 0,
) -> tuple[float, dict[str, float]]:
    """The weight of ``weights`` with the best HR@1 over every seed's (val) predictions; ties: the smallest."""
    curve: dict[str, float] = {}
    for w in sorted(set(float(w) for w in weights)):
        fused = [p for s, v in preds_by_seed.items() for p in fuse(v, prior_by_seed[s], w, n_shown)]
        curve[repr(w)] = hit_rate(fused)
    best = max(curve.values())
    return float(next(k for k, v in curve.items() if v == best)), curve


def _prior_rows(run: RunDir, split: str, preds_by_seed: Mapping[int, Sequence[Prediction]]) -> dict[int, np.ndarray]:
    """The prior's scores of each prediction's sample (found among the prepared samples by user and candidates)."""
    from r2rec.data.schema import PreparedData
    from r2rec.prompting.prior import PriorScores

    prepared, prior = PreparedData(run.prepared), PriorScores(run.root)
    out = {}
    for seed, preds in preds_by_seed.items():
        by_key = {(s.user, s.candidates): s for s in prepared.samples(split, seed)}
        samples = []
        for p in preds:
            s = by_key.get((p.user, p.candidates))
            if s is None:
                raise ValueError(f"{split} seed {seed}: user {p.user!r} is not a prepared sample with these candidates")
            samples.append(s)
        out[seed] = prior.scores(samples)
    return out


def _n_shown(result: Mapping) -> int:
    return int(((result.get("config") or {}).get("prompt") or {}).get("show_candidates") or 0)


def run_fusion(run_dir: str | Path, method: str, config: FusionConfig | None = None) -> dict:
    """Fuse ``results/<method>`` (test) with the prior, the weight chosen on ``results/<method>-val``; write and
    return ``results/<method>+prior.json``."""
    config = config or FusionConfig(method=method)
    run = RunDir(run_dir)
    t0 = time.time()
    test_res = load_result(result_path(run.results, method))
    val_res = load_result(result_path(run.results, val_name(method)))
    if val_res["split"] != "val":
        raise ValueError(f"{val_name(method)}: expected a val result to choose the weight on, got {val_res['split']}")
    val_preds = load_predictions(run.results, val_name(method))
    weight, curve = choose_weight(val_preds, _prior_rows(run, "val", val_preds), config.weights, _n_shown(val_res))
    test_preds = load_predictions(run.results, method)
    prior = _prior_rows(run, test_res["split"], test_preds)
    fused = {s: fuse(v, prior[s], weight, _n_shown(test_res)) for s, v in test_preds.items()}
    from r2rec.prompting.prior import read_meta

    name = fused_name(method)
    seeds = tuple(int(s) for s in test_res["seeds"])
    protocol = EvalProtocol(
        split=test_res["split"],
        seeds=seeds,
        num_candidates=len(next(iter(fused.values()))[0].candidates),
        n_bootstrap=int((test_res.get("bootstrap") or {}).get("n", 1000)),
    )
    cfg = {
        "fusion": asdict(config),
        "llm": method,
        "llm_val": val_name(method),
        "prior": read_meta(run.root).get("model"),
        "weight": weight,
        "val_hr1_by_weight": curve,
        "val_n": val_res.get("n"),
        "prompt": (test_res.get("config") or {}).get("prompt"),
    }
    result = evaluate(
        protocol,
        name,
        test_res["dataset"],
        fused,
        config=cfg,
        wall_seconds=time.time() - t0 + (test_res.get("wall_seconds") or 0.0),
    )
    write_result(run.results, result, fused)
    log.info(f"[fusion] {name}: w = {weight} (val HR@1 {curve[repr(weight)]:.4f}); test hr1 {result['hr1']:.4f}")
    return result
