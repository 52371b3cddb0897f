"""``r2rec graph --run DIR``: build the train-only user-item graph of a prepared run.

Writes ``<run>/graph/graph.npz`` (CSR arrays with interaction positions and times), ``<run>/graph/stats.json``
and the ``graph`` manifest; skipped when the manifest matches.
"""

from __future__ import annotations

import argparse
import json

from r2rec.config import build
from r2rec.graph.graph import GraphConfig, build_graph


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run folder with prepared/ (writes <run>/graph/)")
    p.add_argument("--force", action="store_true", help="rebuild even when the manifest matches")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="GraphConfig overrides")


def run(args: argparse.Namespace) -> int:
    config = build(GraphConfig, {}, args.set, where="graph")
    graph = build_graph(args.run, config, force=args.force)
    print(json.dumps(graph.stats()))
    return 0
