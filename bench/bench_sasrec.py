"""Seconds per SASRec training epoch on ml-100k (mean over a few epochs) on this machine.

    .venv/bin/r2rec prepare --dataset ml-100k --run runs/ml-100k       # once
    .venv/bin/python bench/bench_sasrec.py --run runs/ml-100k --epochs 3

Trains the default ``sasrec`` config (one pass over every train next-item example per epoch) for ``--epochs``
epochs with early stopping disabled, and reads the per-epoch training time the trainer records, wall and
process CPU (the val evaluation after each epoch is timed apart and not counted). Writes ``bench/results/sasrec_epoch.json`` with
the command, the machine (CPU model, cores, torch threads) and the load average before and after: the CPU is
shared, and a busy machine inflates the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

from r2rec.hardware import cpu_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# As `r2rec baseline` does (r2rec/baselines/__init__.py): must be set before torch loads OpenMP, or the two
# threads busy-wait and a busy machine makes each epoch several times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/ml-100k", help="run folder with prepared/ (ml-100k)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "sasrec_epoch.json"))
    p.add_argument("overrides", nargs="*", help="SASRec config overrides key=value (e.g. threads=1)")
    args = p.parse_args(argv)

    import torch

    from r2rec.baselines import make_recommender
    from r2rec.data.schema import PreparedData

    prepared = PreparedData(Path(args.run) / "prepared")
    model = make_recommender(
        "sasrec",
        overrides=[*args.overrides, f"max_epochs={args.epochs}", f"patience={args.epochs + 1}", "progress=false"],
    )
    load_before = os.getloadavg()
    start = time.time()
    model.fit(prepared, seed=args.seed)
    wall = time.time() - start
    epochs = [c["train_seconds"] for c in model.fit_info["curve"]]
    cpu = [c["train_cpu_seconds"] for c in model.fit_info["curve"]]
    out = {
        "benchmark": "sasrec seconds per training epoch",
        "dataset": prepared.meta.get("dataset"),
        "train_examples": model.fit_info["train_examples"],
        "epochs": len(epochs),
        "seconds_per_epoch": epochs,
        "mean_seconds_per_epoch": statistics.mean(epochs),
        "examples_per_second": model.fit_info["train_examples"] / statistics.mean(epochs),
        # Process CPU time over all torch threads: less sensitive to other jobs on a shared CPU than wall time.
        "cpu_seconds_per_epoch": cpu,
        "mean_cpu_seconds_per_epoch": statistics.mean(cpu),
        "wall_seconds_incl_val": round(wall, 2),
        "config": {k: v for k, v in vars(model.config).items()},
        "command": " ".join(
            shlex.quote(a)
            for a in [".venv/bin/python", "bench/bench_sasrec.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(
        f"sasrec on {out['dataset']}: {out['mean_seconds_per_epoch']:.2f} s/epoch, "
        f"{out['mean_cpu_seconds_per_epoch']:.2f} CPU s/epoch "
        f"({out['examples_per_second']:.0f} examples/s, {len(epochs)} epochs, "
        f"{out['machine']['torch_threads']} threads, load {out['machine']['loadavg_before'][0]}) -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
