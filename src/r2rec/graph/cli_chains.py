"""``r2rec chains --run DIR [--k 8] [--split train,val,test]``: sample interaction chains per split.

Writes ``<run>/chains/{split}.seed{s}.jsonl.gz`` (one line per sample, in the split file's order),
``<run>/chains/stats.json`` and the ``chains`` manifest. Train lines hold chains reaching the sample's target
(the raw material of the reasoning traces); val/test lines hold chains reaching any candidate plus the
per-candidate evidence scores, and never the target.
"""

from __future__ import annotations

import argparse
import json

from r2rec.config import build
from r2rec.graph.chains import ChainConfig
from r2rec.graph.stage import run_chains


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run folder with prepared/ (and graph/, built if missing)")
    p.add_argument("--k", type=int, default=None, help="chains per sample (default 8)")
    p.add_argument("--split", default="train,val,test", help="comma-separated splits (default train,val,test)")
    p.add_argument("--seeds", default=None, help="comma-separated candidate seeds (default: all prepared)")
    p.add_argument("--force", action="store_true", help="rerun even when the manifest matches")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="ChainConfig overrides, e.g. seed=1")


def run(args: argparse.Namespace) -> int:
    overrides = list(args.set) + ([f"k={args.k}"] if args.k is not None else [])
    config = build(ChainConfig, {}, overrides, where="chains")
    splits = [s.strip() for s in args.split.split(",") if s.strip()]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    stats = run_chains(args.run, config, splits=splits, seeds=seeds, force=args.force, progress=True)
    print(json.dumps(stats))
    return 0
