"""The interface every classical baseline implements, its registry, and small shared helpers.

A baseline is fitted on ``prepared.train_sequences()`` only. The neural ones also read the val samples of one
seed for early stopping, and the val *targets* are read in exactly one place, :func:`val_hit_rate` (the tests
check this by tracing every access). ``score`` sees the samples to rank, never a target: it returns one score
per candidate, higher = better, in the candidates' own order.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Iterator, Sequence

import numpy as np

from r2rec.config import build
from r2rec.data.schema import PreparedData, Sample


class Recommender:
    """Base class: ``fit(prepared, seed) -> self``, ``score(samples) -> [n_samples, n_candidates]``."""

    name: str = ""
    config_cls: type = object

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.config_cls()
        self.seed: int | None = None
        # Filled by ``fit``: small facts worth putting in the result file (epochs run, best val HR@1, ...).
        self.fit_info: dict = {}

    def fit(self, prepared: PreparedData, seed: int = 0) -> Recommender:
        raise NotImplementedError

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        raise NotImplementedError

    def _check_fitted(self) -> int:
        """The fit seed; an error before :meth:`fit`."""
        if self.seed is None:
            raise RuntimeError(f"{type(self).__name__}.score called before fit")
        return self.seed


# -- registry ------------------------------------------------------------------------------------------
# name -> "module:Class". Resolved on access so that ``import r2rec.baselines`` (the server uses the
# ``transition`` ranker) does not import torch.
_REGISTRY: dict[str, str] = {
    "random": "r2rec.baselines.simple:RandomRecommender",
    "pop": "r2rec.baselines.simple:PopRecommender",
    "transition": "r2rec.baselines.simple:TransitionRecommender",
    "cooc": "r2rec.baselines.simple:CoocRecommender",
    "sasrec": "r2rec.baselines.sasrec:SASRecRecommender",
    "gru4rec": "r2rec.baselines.gru4rec:GRU4RecRecommender",
    # The chain-evidence score of the LLM prompts (computed by r2rec.graph) as a ranker.
    "evidence": "r2rec.baselines.evidence:EvidenceRecommender",
    # A weighted sum of the others' standardised scores, the weights chosen on val.
    "blend": "r2rec.baselines.blend:BlendRecommender",
}


class _LazyRegistry(Mapping):
    """A read-only ``name -> Recommender class`` mapping that imports each class on first access."""

    def __init__(self, table: dict[str, str]):
        self._table = table

    def __getitem__(self, name: str) -> type[Recommender]:
        if name not in self._table:
            raise KeyError(name)
        module, cls = self._table[name].split(":")
        return getattr(importlib.import_module(module), cls)

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


BASELINES: Mapping[str, type[Recommender]] = _LazyRegistry(_REGISTRY)


def make_recommender(name: str, values: dict | None = None, overrides: list[str] | None = None) -> Recommender:
    """Build baseline ``name`` with its config from ``values`` (e.g. a YAML section) plus ``key=value`` overrides."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {sorted(BASELINES)}")
    cls = BASELINES[name]
    return cls(build(cls.config_cls, values, overrides, where=f"baseline {name}"))


# -- shared helpers ------------------------------------------------------------------------------------
def candidate_matrix(samples: Sequence[Sample]) -> np.ndarray:
    """Candidates as an ``int64 [n, C]`` array; all samples must have the same number of candidates."""
    if not samples:
        return np.zeros((0, 0), dtype=np.int64)
    sizes = {len(s.candidates) for s in samples}
    if len(sizes) != 1:
        raise ValueError(f"samples have different numbers of candidates: {sorted(sizes)}")
    return np.asarray([s.candidates for s in samples], dtype=np.int64)


def pad_histories(histories: Sequence[Sequence[int]], max_len: int, shift: int = 1, align: str = "left") -> np.ndarray:
    """Histories as ``int64 [n, max_len]``: the last ``max_len`` items, ids shifted by ``shift`` so 0 is padding.

    ``align="left"`` pads on the left (the newest item is always in the last column, as SASRec reads it);
    ``align="right"`` pads on the right (packed RNNs want the real items first).
    """
    out = np.zeros((len(histories), max_len), dtype=np.int64)
    for r, h in enumerate(histories):
        h = list(h)[-max_len:]
        if not h:
            continue
        if align == "left":
            out[r, max_len - len(h) :] = np.asarray(h) + shift
        else:
            out[r, : len(h)] = np.asarray(h) + shift
    return out


def val_hit_rate(scores: np.ndarray, samples: Sequence[Sample]) -> dict[str, float]:
    """HR@1 and MRR of ``scores`` on ``samples``: the **only** place a baseline reads val targets.

    Same definitions as the evaluator (``r2rec.eval.metrics``): ties with the target count fractionally, so a
    constant scorer gets chance, not a lucky first-position hit.
    """
    from r2rec.eval.metrics import rank_metrics

    cands = candidate_matrix(samples)
    targets = np.asarray([s.target for s in samples], dtype=np.int64)
    is_target = cands == targets[:, None]
    if not is_target.any(axis=1).all():
        bad = int(np.flatnonzero(~is_target.any(axis=1))[0])
        raise ValueError(f"val sample {bad} (user {samples[bad].user}): target not among its candidates")
    scores = np.asarray(scores, dtype=np.float64)
    t_score = np.take_along_axis(scores, is_target.argmax(axis=1)[:, None], axis=1)
    above = (scores > t_score).sum(axis=1)
    tied = (scores == t_score).sum(axis=1) - 1
    r = rank_metrics(above, tied, cands.shape[1])
    return {"hr1": float(r["hr@1"].mean()), "mrr": float(r["mrr"].mean())}
