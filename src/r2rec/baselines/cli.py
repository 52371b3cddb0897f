"""``r2rec baseline NAME --run DIR [--seeds ...] [key=value ...]``: fit a classical baseline, evaluate it.

The model is fitted once (seed = the first evaluation seed; the neural models stop early on the val
candidates of the first *prepared* seed), then scores the frozen test candidates of every seed. Writes ``results/<method>.json`` and its prediction
dump (``r2rec.eval``), and a manifest ``manifests/baseline-<method>.json``: rerunning with the same inputs
and config is skipped. Prints the Markdown table of every result in the run.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from r2rec.baselines.base import BASELINES, make_recommender
from r2rec.data.schema import PreparedData, samples_path
from r2rec.runs import RunDir


def run_baseline(run_dir: str | Path, name: str, overrides: Sequence[str] | None = None,
                 seeds: Sequence[int] | None = None, values: dict | None = None, method: str | None = None,
                 split: str = "test", force: bool = False) -> dict:
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
    inputs = [run.prepared / "meta.json", run.prepared / "train_sequences.jsonl.gz",
              samples_path(run.prepared, "val", prepared.seeds[0]),
              *(samples_path(run.prepared, split, k) for k in seeds)]
    stage_config = {"baseline": name, "model": asdict(model.config), "split": split, "seeds": seeds}
    out = result_path(run.results, method)
    if not force and out.exists() and run.manifest_matches(stage, inputs, stage_config, seeds[0]):
        print(f"[baseline] {method}: up to date ({out}), skipped")
        return load_result(out)

    start = time.time()
    model.fit(prepared, seed=seeds[0])
    preds, samples = {}, {}
    for k in seeds:
        samples[k] = prepared.samples(split, k)
        scores = model.score(samples[k])
        preds[k] = [Prediction.from_sample(s, scores=row) for s, row in zip(samples[k], scores)]
    wall = time.time() - start
    protocol = EvalProtocol(split=split, seeds=tuple(seeds),
                            num_candidates=len(samples[seeds[0]][0].candidates) if samples[seeds[0]] else 20)
    dataset = str(prepared.meta.get("dataset", prepared.meta.get("name", run.root.name)))
    result = evaluate(protocol, method, dataset, preds, config=stage_config, wall_seconds=wall,
                      samples_by_seed=samples)
    result["fit"] = model.fit_info
    write_result(run.results, result, preds)
    run.write_manifest(stage, inputs, stage_config, seeds[0], outputs=[out])
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help=f"baseline: one of {', '.join(BASELINES)}, or 'all'")
    p.add_argument("--run", required=True, help="run folder holding prepared/ (from `r2rec prepare`)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="candidate seeds to evaluate (default: every prepared seed); the first one seeds the fit")
    p.add_argument("--split", default="test", choices=["test", "val"], help="split to evaluate (default test)")
    p.add_argument("--as", dest="method", default=None,
                   help="name of the result file (default NAME), to keep tuned variants side by side")
    p.add_argument("--config", default=None, help="YAML file; its `baselines: {NAME: {...}}` section is used")
    p.add_argument("--force", action="store_true", help="rerun even if the manifest says it is up to date")
    p.add_argument("overrides", nargs="*", help="config overrides key=value (see the model's config dataclass)")
    # Two positionals (NAME, then overrides after the options) need intermixed parsing: plain parse_args
    # would bind the empty override list right after NAME and reject `--run DIR key=value`.
    p.parse_args = p.parse_intermixed_args


def run(args: argparse.Namespace) -> int:
    from r2rec.eval import load_results, markdown_table

    names = list(BASELINES) if args.name == "all" else [args.name]
    if args.name != "all" and args.name not in BASELINES:
        raise ValueError(f"unknown baseline {args.name!r}; known: {', '.join(BASELINES)} (or 'all')")
    if args.name == "all" and (args.overrides or args.method):
        raise ValueError("'all' takes no key=value overrides and no --as; run each baseline by name instead")
    section = {}
    if args.config:
        from r2rec.config import load_yaml

        section = load_yaml(args.config).get("baselines", {}) or {}
    for name in names:
        result = run_baseline(args.run, name, args.overrides, args.seeds, section.get(name), args.method,
                              args.split, args.force)
        print(f"[baseline] {result['method']}: hr1 {result['hr1']:.4f} (n={result['n']}, "
              f"seeds {result['seeds']}, {result['wall_seconds']:.1f}s)")
    results = [r for r in load_results(RunDir(args.run).results) if r.get("split") == args.split]
    print()
    print(markdown_table(results))
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    from r2rec.cli import main

    sys.exit(main(["baseline", *sys.argv[1:]]))
