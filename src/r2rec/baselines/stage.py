"""The ``baseline`` stage: fit a classical baseline on a run's prepared data and evaluate it.

The model is fitted once (seed = the first evaluation seed; the neural models stop early on the val candidates
of the first *prepared* seed), then scores the frozen test candidates of every seed. Writes
``results/<method>.json`` and its prediction dump (:mod:`r2rec.eval`), and a manifest
``manifests/baseline-<method>.json``: rerunning with the same inputs and config is skipped.
Called by ``r2rec baseline`` (:mod:`r2rec.baselines.cli`) and by the pipeline.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from r2rec.baselines.base import make_recommender
from r2rec.data.schema import PreparedData, samples_path
from r2rec.runs import RunDir

log = logging.getLogger(__name__)


def run_baseline(
    run_dir: str | Path,
    name: str,
    overrides: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    values: dict | None = None,
    method: str | None = None,
    split: str = "test",
    force: bool = False,
) -> dict:
    """Fit baseline ``name`` on ``run_dir``'s prepared data, evaluate it on ``split``; return the result dict.

    ``values``: config mapping (e.g. a YAML section), ``overrides``: ``key=value`` strings on top of it.
    ``method``: name of the result (default ``name``; give another to keep variants side by side).
    ``seeds``: candidate seeds to evaluate (default: every prepared seed).
    """
    from r2rec.eval import EvalProtocol, Prediction, evaluate, write_result
    from r2rec.eval.results import load_result, result_path

    run = RunDir(run_dir)
    prepared = PreparedData(run.prepared)
    seeds = [int(s) for s in (seeds if seeds else prepared.seeds)]
    missing = sorted(set(seeds) - set(prepared.seeds))
    if missing:
        raise ValueError(f"{run.prepared}: seeds {missing} were not prepared (prepared: {prepared.seeds})")
    if name in ("sasrec", "gru4rec"):
        from r2rec.baselines.trainer import reject_removed_keys

        reject_removed_keys(values, overrides)
    model = make_recommender(name, values, list(overrides or []))
    method = method or name
    stage = f"baseline-{method}"
    inputs = [
        run.prepared / "meta.json",
        run.prepared / "train_sequences.jsonl.gz",
        samples_path(run.prepared, "val", prepared.seeds[0]),
        *(samples_path(run.prepared, split, k) for k in seeds),
    ]
    stage_config = {"baseline": name, "model": asdict(model.config), "split": split, "seeds": seeds}
    out = result_path(run.results, method)
    if not force and out.exists() and run.manifest_matches(stage, inputs, stage_config, seeds[0]):
        log.info(f"[baseline] {method}: up to date ({out}), skipped")
        return load_result(out)

    start = time.time()
    model.fit(prepared, seed=seeds[0])
    from r2rec.baselines.retrieval import save_fitted

    save_fitted(model, run.root, method)  # neural fits only: reused by whole-catalogue retrieval
    preds, samples = {}, {}
    for k in seeds:
        samples[k] = prepared.samples(split, k)
        scores = model.score(samples[k])
        preds[k] = [Prediction.from_sample(s, scores=row) for s, row in zip(samples[k], scores)]
    wall = time.time() - start
    protocol = EvalProtocol(
        split=split,
        seeds=tuple(seeds),
        num_candidates=len(samples[seeds[0]][0].candidates) if samples[seeds[0]] else 20,
    )
    dataset = str(prepared.meta.get("dataset", prepared.meta.get("name", run.root.name)))
    result = evaluate(protocol, method, dataset, preds, config=stage_config, wall_seconds=wall, samples_by_seed=samples)
    result["fit"] = model.fit_info
    write_result(run.results, result, preds)
    run.write_manifest(stage, inputs, stage_config, seeds[0], outputs=[out])
    return result
