"""``r2rec baseline NAME --run DIR [--seeds ...] [key=value ...]``: fit a classical baseline, evaluate it.

Parses the command line and calls :func:`r2rec.baselines.stage.run_baseline` (fit once, score the frozen
candidates of every seed, write ``results/<method>.json``; skipped when its manifest matches), then prints the
Markdown table of every result in the run.

``r2rec baseline prior --run DIR [--config C] [key=value ...]`` makes the run's prior alone
(:func:`r2rec.baselines.prior.run_prior`: the model chosen on val, cross-fitted train scores, ``<run>/prior/`` and
``results/prior.json``), from the config's ``baselines.prior`` section and the overrides (``model=sasrec``,
``folds=5``), as the pipeline's baselines stage does.
"""

from __future__ import annotations

import argparse
import logging

from r2rec.baselines.base import BASELINES
from r2rec.baselines.stage import run_baseline
from r2rec.runs import RunDir

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "name", help=f"baseline: one of {', '.join(BASELINES)}, or 'all', or 'prior' (the prompt's prior alone)"
    )
    p.add_argument("--run", required=True, help="run folder holding prepared/ (from `r2rec prepare`)")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="candidate seeds to evaluate (default: every prepared seed); the first one seeds the fit",
    )
    p.add_argument("--split", default="test", choices=["test", "val"], help="split to evaluate (default test)")
    p.add_argument(
        "--as",
        dest="method",
        default=None,
        help="name of the result file (default NAME), to keep tuned variants side by side",
    )
    p.add_argument("--config", default=None, help="YAML file; its `baselines: {NAME: {...}}` section is used")
    p.add_argument("--force", action="store_true", help="rerun even if the manifest says it is up to date")
    p.add_argument("overrides", nargs="*", help="config overrides key=value (see the model's config dataclass)")
    # Two positionals (NAME, then overrides after the options) need intermixed parsing: plain parse_args
    # would bind the empty override list right after NAME and reject `--run DIR key=value`.
    p.parse_args = p.parse_intermixed_args  # type: ignore[method-assign]  # on purpose, for this parser only


def run(args: argparse.Namespace) -> int:
    from r2rec.eval import load_results, markdown_table

    if args.name == "prior":
        return _prior(args)
    names = list(BASELINES) if args.name == "all" else [args.name]
    if args.name != "all" and args.name not in BASELINES:
        raise ValueError(f"unknown baseline {args.name!r}; known: {', '.join(BASELINES)} (or 'all', or 'prior')")
    if args.name == "all" and (args.overrides or args.method):
        raise ValueError("'all' takes no key=value overrides and no --as; run each baseline by name instead")
    section: dict = {}
    if args.config:
        from r2rec.config import load_yaml

        section = load_yaml(args.config).get("baselines", {}) or {}
    for name in names:
        result = run_baseline(
            args.run, name, args.overrides, args.seeds, section.get(name), args.method, args.split, args.force
        )
        log.info(
            f"[baseline] {result['method']}: hr1 {result['hr1']:.4f} (n={result['n']}, "
            f"seeds {result['seeds']}, {result['wall_seconds']:.1f}s)"
        )
    results = [r for r in load_results(RunDir(args.run).results) if r.get("split") == args.split]
    print()
    print(markdown_table(results))
    return 0


def _prior(args: argparse.Namespace) -> int:
    from r2rec.baselines.prior import PriorConfig, run_prior
    from r2rec.config import build, load_yaml

    if args.seeds or args.method or args.split != "test":
        raise ValueError("'prior' scores every prepared seed and split; it takes no --seeds, --as or --split")
    section = (load_yaml(args.config).get("baselines", {}) or {}) if args.config else {}
    config = build(PriorConfig, section.get("prior") or {}, args.overrides, where="baselines.prior", path=args.config)
    meta = run_prior(args.run, config, section.get("settings") or {}, force=args.force)
    print(f"prior: {meta['model']} ({meta['chosen_by']}); first-candidate HR@1 {meta['hr1']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    from r2rec.cli import main

    sys.exit(main(["baseline", *sys.argv[1:]]))
