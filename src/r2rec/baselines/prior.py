"""The prompt's prior: the best classical model's candidate scores for every prepared sample, leak-free.

Written by the ``baselines`` stage when the prompt orders its candidates by it (``prompt.candidate_order:
prior``) or ``baselines.prior`` is set; read through :mod:`r2rec.prompting.prior` (layout there). How each split
is scored:

- **val, test**: the model fitted on every train sequence (seed = the first prepared seed), exactly as the
  ``baseline`` stage fits and evaluates it (the neural models stop early on the val candidates of the first
  seed; the stage's saved fit is reused when it matches), so the prior's test scores are the baseline's.
- **train** (the SFT/RL prompts): *cross-fitted*. Users are split into ``folds`` seeded folds; a train user's
  samples are scored by the model fitted on the other folds' train sequences only, so the target of a train
  prompt (which that user's own sequence contains) never reached the model that scores it. In-sample scores
  would put it first far more often than at test time (``meta.json`` records both HR@1s). A fold model sees
  no val or test sample at all: a neural one trains a fixed number of epochs (``fold_epochs``; by default the
  best epoch of the full fit, the one number the val split passes on; a blend's fold fits also take its weights,
  chosen on val), a count-based one has none.

Which model: ``model`` names one, or ``auto`` fits each of ``choose_from`` on every train sequence and keeps the
best mean val HR@1 over the prepared seeds (MRR breaks ties). A ``blend`` (:mod:`r2rec.baselines.blend`) chooses
its weights on val in the full fit; its fold fits reuse those weights and its neural parts' best epochs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from r2rec.baselines.base import BASELINES, Recommender, make_recommender, val_hit_rate
from r2rec.baselines.blend import BlendRecommender, settings_for
from r2rec.baselines.retrieval import NEURAL
from r2rec.baselines.trainer import NeuralConfig
from r2rec.data.schema import PreparedData, Sample, UserSequence, samples_path, write_jsonl
from r2rec.io import atomic_write_json, sha256_file
from r2rec.prompting.prior import META, meta_path, prior_dir, scores_path
from r2rec.runs import RunDir

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
PRIOR_METHOD = "prior"  # the prior's row in the results table


@dataclass
class PriorConfig:
    """How the prior is made (YAML ``baselines.prior``; the models' own settings are ``baselines.settings``).

    model: a baseline name (``sasrec``, ``gru4rec``, ``transition``, ``blend``, ...) or ``auto``: the best of
        ``choose_from`` by mean val HR@1 (a ``blend`` there wins whenever it holds the best single model: its
        weights were chosen on the same val samples).
    choose_from: the candidates of ``auto``.
    folds: user folds of the cross-fit of the train scores (each fold's model is fitted on the other folds).
    fold_epochs: epochs of a neural fold model (0 = the full fit's best epoch). Count-based models ignore it.
    """

    model: str = "auto"
    choose_from: list[str] = field(default_factory=lambda: ["transition", "sasrec", "gru4rec"])
    folds: int = 3
    fold_epochs: int = 0

    def __post_init__(self):
        known = [n for n in BASELINES if n != "random"]
        if self.model != "auto" and self.model not in known:
            raise ValueError(f"model: expected 'auto' or one of {known}, got {self.model!r}")
        bad = [n for n in self.choose_from if n not in known]
        if bad or not self.choose_from:
            raise ValueError(f"choose_from: expected a non-empty list of {known}, got {self.choose_from!r}")
        if self.folds < 2:
            raise ValueError(f"folds: must be >= 2 (a train user's scores come from the other folds), got {self.folds}")
        if self.fold_epochs < 0:
            raise ValueError(f"fold_epochs: must be >= 0 (0 = the full fit's best epoch), got {self.fold_epochs}")

    @property
    def models(self) -> list[str]:
        return list(self.choose_from) if self.model == "auto" else [self.model]


class TrainSequencesOnly(PreparedData):
    """A prepared dataset seen through a fold: some train sequences, and no val, test or train samples.

    A model fitted on it can read nothing else: the neural fit's early stopping gets no val samples (so it
    trains a fixed number of epochs), and any other sample read is an error.
    """

    def __init__(self, prepared: PreparedData, sequences: Sequence[UserSequence]):
        self.root, self.meta, self._titles = prepared.root, prepared.meta, None
        self._sequences = list(sequences)

    def train_sequences(self) -> list[UserSequence]:
        return list(self._sequences)

    def samples(self, split: str, seed: int = 0) -> list[Sample]:
        if split == "val":
            return []
        raise RuntimeError(f"a fold model may read train sequences only, not the {split} samples")


def user_folds(users: Sequence[str], folds: int, seed: int) -> dict[str, int]:
    """Each user's fold: a seeded permutation of the sorted users, dealt round-robin (fold sizes differ by <= 1)."""
    ordered = sorted(set(users))
    perm = np.random.default_rng(seed).permutation(len(ordered))
    return {ordered[j]: int(r % folds) for r, j in enumerate(perm)}


def _model(name: str, values: dict | None, epochs: int = 0) -> Recommender:
    values = dict(values or {})
    if epochs and issubclass(BASELINES[name].config_cls, NeuralConfig):
        values.update(max_epochs=epochs, patience=epochs, progress=False)
    return make_recommender(name, values)


def cross_fit_scores(
    name: str,
    values: dict | None,
    prepared: PreparedData,
    samples: Sequence[Sample],
    folds: int,
    seed: int,
    epochs: int = 0,
) -> tuple[np.ndarray, dict[str, int], list[dict]]:
    """Scores of ``samples`` (train samples), each from the model fitted without its user's fold.

    Returns ``(scores [n, C], user -> fold, per-fold fit facts)``. ``epochs``: a neural fold model's fixed epochs.
    """
    sequences = prepared.train_sequences()
    fold = user_folds([s.user for s in sequences] + [s.user for s in samples], folds, seed)
    width = max((len(s.candidates) for s in samples), default=0)
    out = np.zeros((len(samples), width))
    facts = []
    for f in range(folds):
        rows = [i for i, s in enumerate(samples) if fold[s.user] == f]
        kept = [s for s in sequences if fold[s.user] != f]
        t0 = time.time()
        model = _model(name, values, epochs).fit(TrainSequencesOnly(prepared, kept), seed=seed)
        if rows:
            out[rows] = model.score([samples[i] for i in rows])
        info = {k: v for k, v in model.fit_info.items() if k != "curve"}
        facts.append({"fold": f, "users_fitted": len(kept), "samples_scored": len(rows), **info})
        log.info(
            f"[prior] {name} fold {f + 1}/{folds}: {len(kept)} sequences, {len(rows)} samples, {time.time() - t0:.0f}s"
        )
    return out, fold, facts


def _full_fit(run: RunDir, prepared: PreparedData, name: str, values: dict | None, seed: int) -> Recommender:
    """The model fitted on every train sequence: the baselines stage's saved fit when it matches (same data,
    settings and seed: :func:`r2rec.baselines.retrieval.load_fitted`), else a fresh fit."""
    if issubclass(BASELINES[name].config_cls, NeuralConfig):
        from r2rec.baselines.retrieval import load_fitted

        saved = load_fitted(run.root, name, values=values, seed=seed)
        if saved is not None:
            log.info(f"[prior] {name}: the baselines stage's saved fit ({saved.fit_info.get('loaded_from')})")
            return saved
    return _model(name, values).fit(prepared, seed=seed)


def _seeds_of(prepared: PreparedData, split: str) -> list[int]:
    return [k for k in prepared.seeds if samples_path(prepared.root, split, k).exists()]


def _mean_hr1(model: Recommender, val: dict[int, list[Sample]]) -> tuple[float, float]:
    metrics = [val_hit_rate(model.score(v), v) for v in val.values() if v]
    if not metrics:
        return 0.0, 0.0
    return float(np.mean([m["hr1"] for m in metrics])), float(np.mean([m["mrr"] for m in metrics]))


def _write_result(
    run: RunDir, prepared: PreparedData, meta: dict, test: dict[int, tuple[list[Sample], np.ndarray]]
) -> Path:
    """``results/prior.json``: the prior's test scores as a row of the results table (the yardstick the prompt's
    and the fusion's prior is)."""
    from r2rec.eval import EvalProtocol, Prediction, evaluate, write_result

    seeds = sorted(test)
    preds = {k: [Prediction.from_sample(s, scores=row) for s, row in zip(*test[k])] for k in seeds}
    protocol = EvalProtocol(split="test", seeds=tuple(seeds), num_candidates=len(test[seeds[0]][0][0].candidates))
    dataset = str(prepared.meta.get("dataset", prepared.meta.get("name", run.root.name)))
    config = {"prior": meta["model"], "chosen_by": meta["chosen_by"], "candidates": meta["candidates"]}
    result = evaluate(
        protocol,
        PRIOR_METHOD,
        dataset,
        preds,
        config=config,
        wall_seconds=meta["wall_seconds"],
        samples_by_seed={k: v[0] for k, v in test.items()},
    )
    result["fit"] = meta["fit"]
    path, _ = write_result(run.results, result, preds)
    return path


def run_prior(
    run_dir: str | Path, config: PriorConfig | None = None, settings: dict | None = None, force: bool = False
) -> dict:
    """Fit the prior (choosing the model on val when ``auto``), write ``<run>/prior/``; return its meta.

    ``settings``: ``{baseline name: config mapping}`` (YAML ``baselines.settings``). Skipped when the manifest
    ``manifests/prior.json`` matches (same prepared files, config and settings).
    """
    config = config or PriorConfig()
    settings = settings or {}
    run = RunDir(run_dir)
    prepared = PreparedData(run.prepared)
    seed = prepared.seeds[0]
    seeds = {split: _seeds_of(prepared, split) for split in SPLITS}
    inputs = [
        run.prepared / "meta.json",
        run.prepared / "train_sequences.jsonl.gz",
        *(samples_path(run.prepared, split, k) for split in SPLITS for k in seeds[split]),
    ]
    stage_config = {"prior": asdict(config), "settings": {m: settings_for(m, settings) for m in config.models}}
    if not force and meta_path(run.root).exists() and run.manifest_matches("prior", inputs, stage_config, seed):
        log.info(f"[prior] up to date ({prior_dir(run.root)}), skipped")
        from r2rec.prompting.prior import read_meta

        return read_meta(run.root)

    t0 = time.time()
    val = {k: prepared.samples("val", k) for k in seeds["val"]}
    fits: dict[str, Recommender] = {}
    choice: dict[str, dict] = {}
    for name in config.models:
        model = _full_fit(run, prepared, name, settings_for(name, settings), seed)
        v_hr1, v_mrr = _mean_hr1(model, val)
        choice[name] = {"val_hr1": v_hr1, "val_mrr": v_mrr}
        log.info(f"[prior] {name}: val HR@1 {v_hr1:.4f} (MRR {v_mrr:.4f}, mean over val seeds {seeds['val']})")
        fits[name] = model
    chosen = max(config.models, key=lambda n: (choice[n]["val_hr1"], choice[n]["val_mrr"]))
    full = fits[chosen]
    fits.clear()
    epochs = config.fold_epochs or int(full.fit_info.get("best_epoch", 0))
    values = settings_for(chosen, settings)
    fold_epochs = epochs if issubclass(BASELINES[chosen].config_cls, NeuralConfig) else None
    if isinstance(full, BlendRecommender):  # the folds refit the chosen blend: its weights, its parts' epochs
        values = full.fixed_values()
        if config.fold_epochs:
            values["epochs"] = {m: config.fold_epochs for m in values["models"] if m in NEURAL}
        fold_epochs = values["epochs"]

    out_dir = prior_dir(run.root)
    files: dict[str, str] = {}
    hr1: dict[str, float] = {}
    test: dict[int, tuple[list[Sample], np.ndarray]] = {}
    train = {k: prepared.samples("train", k) for k in seeds["train"]}
    every = [s for v in train.values() for s in v]  # one cross-fit scores the train samples of every seed
    crossed, fold_facts = np.zeros((0, 0)), list[dict]()
    if every:
        crossed, _, fold_facts = cross_fit_scores(chosen, values, prepared, every, config.folds, seed, epochs)
    ends = np.cumsum([len(v) for v in train.values()]).tolist()
    start = {k: e - len(v) for (k, v), e in zip(train.items(), ends)}
    for split in SPLITS:
        for k in seeds[split]:
            samples = train[k] if split == "train" else prepared.samples(split, k)
            if split == "train":
                scores = crossed[start[k] : start[k] + len(samples)]
                in_sample = full.score(samples) if samples else np.zeros((0, 0))
                hr1[f"train.seed{k}.in_sample"] = val_hit_rate(in_sample, samples)["hr1"] if samples else 0.0
            else:
                scores = full.score(samples) if samples else np.zeros((0, 0))
                if split == "test":
                    test[k] = (samples, scores)
            # Diagnostics only, after every score of the split is fixed: how often the prior's first candidate
            # is the target (train: cross-fitted; the in-sample figure above shows what cross-fitting avoids).
            hr1[f"{split}.seed{k}"] = val_hit_rate(scores, samples)["hr1"] if samples else 0.0
            path = scores_path(run.root, split, k)
            write_jsonl(
                path,
                (
                    {
                        "user": s.user,
                        "history": list(s.history),
                        "candidates": list(s.candidates),
                        "scores": [float(x) for x in row],
                    }
                    for s, row in zip(samples, scores)
                ),
            )
            files[path.name] = sha256_file(path)
    meta = {
        "model": chosen,
        "chosen_by": "config" if config.model != "auto" else "val_hr1",
        "candidates": choice,
        "config": asdict(config),
        "settings": values,
        "fit_seed": seed,
        "fold_epochs": fold_epochs,
        "fit": {k: v for k, v in full.fit_info.items() if k != "curve"},
        "folds": fold_facts,
        "hr1": hr1,
        "wall_seconds": round(time.time() - t0, 1),
        "files": files,
    }
    atomic_write_json(out_dir / META, meta)  # last: the commit point
    result = _write_result(run, prepared, meta, test) if test and all(v[0] for v in test.values()) else None
    outputs = [out_dir / META] + ([] if result is None else [result])
    run.write_manifest("prior", inputs, stage_config, seed, outputs=outputs)
    log.info(f"[prior] {chosen} ({meta['chosen_by']}): HR@1 {hr1} in {meta['wall_seconds']}s -> {out_dir}")
    return meta
