"""``blend``: a weighted sum of classical models' standardised scores, the weights chosen on val.

Each model of ``models`` scores the candidates; its scores are standardised per sample (z-scores over the
candidates: the scales differ, logits for SASRec/GRU4Rec, probabilities or counts for the others), and the blend
is ``sum_m w_m * z_m``. With ``weights`` empty the weights are chosen on val by greedy forward selection: the
best single model on val gets weight 1, then, while the mean val HR@1 over the prepared seeds rises, the model
and weight (from ``grid``; ties go to the smaller weight) that raise it most are added. The blend is a classical
model like its parts: a row of its own in the results table, the yardstick that an LLM reading it must beat,
and a candidate of the prompt's prior (``baselines.prior``; the prior's cross-fit fits it per fold with the
weights and the neural models' epochs fixed from the full fit, since a fold sees no val sample).

SASRec and GRU4Rec reuse the baselines stage's saved fit of the same run when it matches (same data, settings and
seed), so a blend next to its parts costs no second training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from r2rec.baselines.base import Recommender, make_recommender, val_hit_rate
from r2rec.baselines.retrieval import NEURAL, load_fitted
from r2rec.data.schema import PreparedData, Sample, samples_path

log = logging.getLogger(__name__)


@dataclass
class BlendConfig:
    """Settings of ``blend`` (YAML ``baselines.settings.blend``).

    models: the blended baselines (not ``random``, not ``blend``).
    weights: fixed weights per model (0 or absent = left out); empty = chosen on val (greedy forward, ``grid``).
    grid: the weights tried when choosing.
    settings: each model's own settings (as ``baselines.settings.<model>``; the pipeline copies those in).
    epochs: a neural model's fixed epochs when it is fitted here (no early stopping: a prior's fold fit).
    """

    models: list[str] = field(default_factory=lambda: ["sasrec", "gru4rec", "transition"])
    weights: dict[str, float] = field(default_factory=dict)
    grid: list[float] = field(default_factory=lambda: [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0])
    settings: dict[str, dict] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        from r2rec.baselines.base import BASELINES

        allowed = [n for n in BASELINES if n not in ("random", "blend")]
        bad = [m for m in self.models if m not in allowed]
        if bad or not self.models or len(set(self.models)) != len(self.models):
            raise ValueError(f"blend.models: expected distinct names from {allowed}, got {self.models!r}")
        stray = [m for m in (*self.weights, *self.settings, *self.epochs) if m not in self.models]
        if stray:
            raise ValueError(f"blend: weights/settings/epochs name models not in blend.models: {sorted(set(stray))}")
        if any(w < 0 for w in self.weights.values()) or (self.weights and not any(self.weights.values())):
            raise ValueError(f"blend.weights: must be >= 0 with at least one > 0, got {self.weights!r}")
        if not self.grid or any(w <= 0 for w in self.grid):
            raise ValueError(f"blend.grid: expected weights > 0, got {self.grid!r}")
        if any(int(e) < 1 for e in self.epochs.values()):
            raise ValueError(f"blend.epochs: expected epochs >= 1, got {self.epochs!r}")


def standardise(scores: np.ndarray) -> np.ndarray:
    """Per-sample z-scores over the candidates (a constant row stays 0)."""
    s = np.asarray(scores, dtype=np.float64)
    sd = s.std(axis=1, keepdims=True)
    return (s - s.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)


def _weighted(z: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    return np.sum([w * z[m] for m, w in weights.items()], axis=0)


def choose_weights(
    z_val: dict[str, list[np.ndarray]], val: list[list[Sample]], grid: Sequence[float]
) -> tuple[dict[str, float], list[dict]]:
    """Greedy forward selection on val: ``(weights, steps)``; ``z_val[m][j]`` = model m's z-scores of ``val[j]``."""

    def hr1(weights: dict[str, float]) -> float:
        blended = [_weighted({m: z_val[m][j] for m in weights}, weights) for j in range(len(val))]
        return float(np.mean([val_hit_rate(b, v)["hr1"] for b, v in zip(blended, val)]))

    names = list(z_val)
    single = {m: hr1({m: 1.0}) for m in names}
    best = max(names, key=lambda m: (single[m], -names.index(m)))
    weights, score = {best: 1.0}, single[best]
    singles = {m: round(v, 4) for m, v in single.items()}
    steps = [{"model": best, "weight": 1.0, "val_hr1": round(score, 4), "singles": singles}]
    while len(weights) < len(names):
        trials = [(hr1({**weights, m: w}), -w, -names.index(m), m, w) for m in names if m not in weights for w in grid]
        top = max(trials)
        if top[0] <= score:
            break
        score, weights = top[0], {**weights, top[3]: float(top[4])}
        steps.append({"model": top[3], "weight": float(top[4]), "val_hr1": round(score, 4)})
    return weights, steps


class BlendRecommender(Recommender):
    name = "blend"
    config_cls = BlendConfig

    def fit(self, prepared: PreparedData, seed: int = 0) -> BlendRecommender:
        c = self.config
        active = [m for m in c.models if not c.weights or c.weights.get(m, 0) > 0]
        self.parts = {m: self._fit_part(prepared, m, seed) for m in active}
        if c.weights:
            self.weights = {m: float(c.weights[m]) for m in active}
            steps: list[dict] = []
        else:
            seeds = [k for k in prepared.seeds if samples_path(prepared.root, "val", k).exists()]
            val = [v for v in (prepared.samples("val", k) for k in seeds) if v]
            if not val:
                raise ValueError("blend: no val samples to choose the weights on; give blend.weights")
            z = {m: [standardise(p.score(v)) for v in val] for m, p in self.parts.items()}
            self.weights, steps = choose_weights(z, val, c.grid)
        parts = {m: {k: v for k, v in p.fit_info.items() if k != "curve"} for m, p in self.parts.items()}
        self.parts = {m: p for m, p in self.parts.items() if m in self.weights}
        self.seed = seed
        self.fit_info = {
            "weights": self.weights,
            "steps": steps,
            "best_epochs": {m: p.fit_info["best_epoch"] for m, p in self.parts.items() if "best_epoch" in p.fit_info},
            "parts": parts,  # every part fitted, chosen or not
        }
        log.info(f"[blend] weights {self.weights}" + (f" (val HR@1 {steps[-1]['val_hr1']})" if steps else ""))
        return self

    def _fit_part(self, prepared: PreparedData, name: str, seed: int) -> Recommender:
        values = self.config.settings.get(name)
        # A saved fit is of the whole train set: only a full prepared dataset may load it (never a prior's fold).
        if name in NEURAL and type(prepared) is PreparedData and prepared.root.name == "prepared":
            saved = load_fitted(prepared.root.parent, name, values=values, seed=seed)
            if saved is not None:
                return saved
        values = dict(values or {})
        if name in self.config.epochs:
            e = int(self.config.epochs[name])
            values.update(max_epochs=e, patience=e, progress=False)
        return make_recommender(name, values).fit(prepared, seed=seed)

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        self._check_fitted()
        return _weighted({m: standardise(p.score(samples)) for m, p in self.parts.items()}, self.weights)

    def fixed_values(self) -> dict:
        """This fit as a config that refits it without val: the chosen weights, the neural models' best epochs."""
        c = self.config
        return {
            "models": list(self.weights),
            "weights": dict(self.weights),
            "grid": list(c.grid),
            "settings": {m: v for m, v in c.settings.items() if m in self.weights},
            "epochs": {**self.fit_info["best_epochs"], **{m: e for m, e in c.epochs.items() if m in self.weights}},
        }


def settings_for(name: str, settings: dict | None) -> dict | None:
    """Baseline ``name``'s settings from a ``baselines.settings`` mapping. For ``blend``, each part's own
    ``baselines.settings.<part>`` is filled in where ``blend.settings`` does not set it, so the parts are the rows
    beside the blend (and reuse their saved fits)."""
    settings = settings or {}
    values = settings.get(name)
    if name != "blend":
        return values
    values = dict(values or {})
    models = values.get("models") or BlendConfig().models
    parts = {m: settings[m] for m in models if settings.get(m)}
    if parts:
        values["settings"] = {**parts, **(values.get("settings") or {})}
    return values
