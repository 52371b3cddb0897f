"""Learning curves of SFT/RL runs: training loss (or reward) and val HR@1 per step, one PNG.

    .venv/bin/python bench/bench_train_plot.py --out docs/img/sft_curves.png \
        runs/h6-ml/checkpoints/exp-direct-lr5e-4 runs/h6-ml/checkpoints/exp-iot
    .venv/bin/python bench/bench_train_plot.py --metric reward --out docs/img/rl_curves.png runs/h6-ml/checkpoints/rl
    .venv/bin/python bench/bench_train_plot.py --metric reward --right rewards/correct/mean --out rl.png runs/x/checkpoints/rl

Each argument is a stage output folder holding ``log.csv`` (written by the SFT/RL stages) and ``val.jsonl``.
The dashed line is the HR@1 of the prompt's first candidate (the heuristic that orders it) on the same val subset.
``--right COLUMN`` puts another ``log.csv`` column in the right panel instead (a GRPO run without val points:
its ``correct`` reward, the share of sampled completions that name the target).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(int(float(r["step"])), float(r[key])) for r in rows if r.get(key) not in (None, "")]
    return [p[0] for p in pts], [p[1] for p in pts]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="+", help="stage output folders (with log.csv and val.jsonl)")
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--metric", default="loss", help="log.csv column for the left panel (loss, reward, ...)")
    p.add_argument("--right", default=None, help="log.csv column for the right panel instead of val HR@1")
    p.add_argument("--labels", nargs="*", default=None, help="legend labels (default: folder names)")
    p.add_argument("--title", default="")
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = args.labels or [Path(d).name for d in args.dirs]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ref = None
    for d, label in zip(args.dirs, labels):
        d = Path(d)
        rows = list(csv.DictReader(open(d / "log.csv"))) if (d / "log.csv").exists() else []
        xs, ys = _series(rows, args.metric)
        if xs:
            ax1.plot(xs, ys, label=label, alpha=0.85)
        if args.right:
            ax2.plot(*_series(rows, args.right), label=label, alpha=0.85)
            continue
        val = [json.loads(line) for line in open(d / "val.jsonl")] if (d / "val.jsonl").exists() else []
        if val:
            ax2.plot([v["step"] for v in val], [v["val_hr1"] for v in val], marker="o", label=label)
            ref = val[0].get("val_first_hr1", val[0].get("val_evidence_hr1", ref))
    ax1.set_xlabel("optimiser step")
    ax1.set_ylabel(args.metric)
    ax1.set_title(f"training {args.metric}")
    ax2.set_xlabel("optimiser step")
    ax2.set_ylabel(args.right or "val HR@1 (subset)")
    ax2.set_title(f"training {args.right}" if args.right else "val HR@1")
    if ref is not None:
        ax2.axhline(ref, ls="--", c="gray", label="first candidate in the prompt (heuristic)")
    if not args.right:
        ax2.axhline(0.05, ls=":", c="lightgray", label="chance (1/20)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
