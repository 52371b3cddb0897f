"""``r2rec report --run DIR``: write ``DIR/report/report.md`` and a self-contained ``report.html``.

r2rec report --run runs/llara-movielens
r2rec report --run runs/llara-movielens --run runs/llara-lastfm --out runs/report-all
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run",
        action="append",
        required=True,
        metavar="DIR",
        help="run folder (repeat to put several runs in one report)",
    )
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (default: <first run>/report)")
    parser.add_argument("--traces", type=int, default=3, help="reasoning examples to show per dataset")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the ratio CIs")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")


def run(args: argparse.Namespace) -> int:
    from .report import write_report

    if args.traces < 0:
        raise ValueError(f"--traces must be >= 0, got {args.traces}")
    if args.n_boot < 1:
        raise ValueError(f"--n-boot must be >= 1, got {args.n_boot}")
    paths = write_report(args.run, out_dir=args.out, n_traces=args.traces, n_boot=args.n_boot, seed=args.seed)
    log.info(f"wrote {paths['markdown']}")
    log.info(f"wrote {paths['html']} ({len(paths['plots'])} plots)")
    for p in paths["problems"]:
        log.warning(f"warning: {p}")
    return 0
