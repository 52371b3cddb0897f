"""Wall time of a whole reproduction, stage by stage: ``r2rec pipeline --config C``, timed, with the machine's load.

    .venv/bin/python bench/bench_reproduction.py --config configs/llara-movielens.yaml     # runs it (~2 h on 2 cores)
    .venv/bin/python bench/bench_reproduction.py --run runs/llara-movielens --load-log L   # a run made earlier

With ``--config`` the pipeline runs as a child process (finished stages of an earlier launch are skipped by the
pipeline itself, so point ``run:`` at a fresh folder to time everything) while the 1-minute load average is
sampled every 30 s; with ``--run`` the run's own records are read, and ``--load-log`` may give load samples
taken meanwhile (lines ``HH:MM:SS load1 load5 load15``).

Read from the run: ``manifests/pipeline-times.json`` (each stage's wall time and the process's peak RSS when the
stage last ran: a stage resumed after an interruption counts only its last launch), the training stages'
``train_summary.json`` (steps, wall time, precision) and median ``sec_per_step`` of their ``log.csv``, their val
passes (``val.jsonl``), and each evaluation's generation time from ``results/*.json``. Written to ``--out``
(default ``bench/results/reproduction_<run name>.json``) with the CPU model, whether it runs bf16 natively, the
core count and the date. On a shared machine compare stage times with the load beside them.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from r2rec.hardware import cpu_bf16, cpu_model
from r2rec.io import read_log

ROOT = Path(__file__).resolve().parents[1]
TRAIN_STAGES = {"sft-direct": "checkpoints/sft-direct", "sft": "checkpoints/sft", "rl": "checkpoints/rl"}


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _median_step(log_csv: Path) -> float | None:
    if not log_csv.exists():
        return None
    with log_csv.open() as f:
        steps = [float(r["sec_per_step"]) for r in csv.DictReader(f) if r.get("sec_per_step")]
    return round(statistics.median(steps), 2) if steps else None


def _train(run: Path) -> dict:
    out = {}
    for stage, folder in TRAIN_STAGES.items():
        summary = _json(run / folder / "final" / "train_summary.json")
        if not summary:
            continue
        vals = read_log(run / folder / "val.jsonl")
        out[stage] = {
            "steps": summary.get("global_step"),
            "train_wall_seconds": summary.get("wall_seconds"),
            "median_sec_per_step": _median_step(run / folder / "log.csv"),
            "val_passes": len(vals),
            "val_seconds": [v.get("val_seconds") for v in vals],
            "precision": (summary.get("compute") or {}).get("precision"),
        }
    return out


def _evals(run: Path) -> dict:
    out = {}
    for path in sorted((run / "results").glob("*.json")):
        gen = _json(path).get("generation")
        if isinstance(gen, dict) and "generation_seconds" in gen:
            res = _json(path)
            samples = (res.get("n") or 0) * max(1, len(res.get("seeds") or [0]))  # n is per candidate seed
            out[path.stem] = {
                "n": res.get("n"),
                "seeds": res.get("seeds"),
                "split": res.get("split"),
                "wall_seconds": res.get("wall_seconds"),
                "generation_seconds": gen.get("generation_seconds"),
                "seconds_per_sample": round(gen["generation_seconds"] / max(1, samples), 3),
            }
    return out


def _load_samples(path: Path | None) -> list[float]:
    if path is None or not path.exists():
        return []
    samples = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            try:
                samples.append(float(parts[1]))
            except ValueError:
                continue
    return samples


def summarize(run: Path, load: list[float], wall: float | None = None) -> dict:
    times = _json(run / "manifests" / "pipeline-times.json")
    stages = {name: t.get("seconds") for name, t in times.items()}
    native, why = cpu_bf16()
    return {
        "run": run.name,
        "stages_seconds": stages,
        "total_stage_seconds": round(sum(v for v in stages.values() if v), 1),
        "pipeline_wall_seconds": wall,
        "peak_rss_gib": max((t.get("peak_rss_gib") or 0 for t in times.values()), default=None),
        "training": _train(run),
        "evaluations": _evals(run),
        "load_average_1min": {
            "samples": len(load),
            "min": min(load, default=None),
            "median": round(statistics.median(load), 2) if load else None,
            "max": max(load, default=None),
        },
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "native_bf16": native, "bf16_evidence": why},
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }


def _sample_load(stop: threading.Event, into: list[float], every: float = 30.0) -> None:
    while not stop.wait(every):
        into.append(round(os.getloadavg()[0], 2))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="run `r2rec pipeline --config CONFIG` and time it")
    src.add_argument("--run", help="summarise a run made earlier")
    p.add_argument("--load-log", help="with --run: load samples taken meanwhile (HH:MM:SS load1 ...)")
    p.add_argument("--out", help="JSON file (default bench/results/reproduction_<run name>.json)")
    args = p.parse_args(argv)

    load: list[float] = []
    wall = None
    if args.config:
        from r2rec.config import load_yaml

        run = Path(load_yaml(args.config)["run"])
        stop = threading.Event()
        sampler = threading.Thread(target=_sample_load, args=(stop, load), daemon=True)
        sampler.start()
        t0 = time.time()
        cmd = [sys.executable, "-m", "r2rec.cli", "pipeline", "--config", args.config]
        rc = subprocess.run(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}).returncode
        wall = round(time.time() - t0, 1)
        stop.set()
        if rc != 0:
            print(
                f"[bench_reproduction] the pipeline failed (exit {rc}); stages so far are summarised", file=sys.stderr
            )
    else:
        run = Path(args.run)
        load = _load_samples(Path(args.load_log) if args.load_log else None)
    if not run.is_absolute():
        run = Path.cwd() / run
    doc = summarize(run, load, wall)
    out = Path(args.out or ROOT / "bench" / "results" / f"reproduction_{run.name}.json")
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({"stages_seconds": doc["stages_seconds"], "total": doc["total_stage_seconds"]}, indent=2))
    print(f"-> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
