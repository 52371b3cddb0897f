"""Measured seconds per SFT step (fp32 vs bf16 autocast) and per GRPO step on this machine.

    .venv/bin/python bench/bench_train.py --run runs/llara-movielens --steps 6
    .venv/bin/python bench/bench_train.py --tiny            # no real data or weights: synthetic run, tiny model

Copies the run's ``prepared/`` and ``thoughts/sft.jsonl.gz`` into a temporary run (so nothing in the real run
changes), trains a few steps per setting and prints the median seconds per step read from ``log.csv``
(the first step, which includes warm-up, is left out). Without traces in the run, traces are made from the
prepared train samples with a fixed one-line thought, which have the real prompt length.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _traces_from_prepared(run: Path, n: int) -> None:
    from r2rec.data.schema import PreparedData, write_jsonl
    from r2rec.grammar import format_completion, format_direct
    from r2rec.prompting import build_messages

    data = PreparedData(run / "prepared")
    t = data.titles
    recs = []
    for s in data.samples("train", 0)[:n]:
        msgs = build_messages([t[i] for i in s.history], [t[i] for i in s.candidates])
        thought = f"Users who watched {t[s.history[-1]]} went on to watch {t[s.target]}."
        recs.append(
            {
                "messages": msgs,
                "completion": format_completion([thought], t[s.target]),
                "completion_direct": format_direct(t[s.target]),
                "sample": s.to_json(),
            }
        )
    write_jsonl(run / "thoughts" / "sft.jsonl.gz", recs)


def _median_step(log: Path) -> float | None:
    rows = [r for r in csv.DictReader(open(log)) if r.get("sec_per_step")]
    vals = [float(r["sec_per_step"]) for r in rows if int(r["step"]) > 1]
    return statistics.median(vals) if vals else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/llara-movielens")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tiny", action="store_true", help="synthetic run + tiny random model (a smoke run)")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--rl-steps", type=int, default=3)
    p.add_argument("--skip-rl", action="store_true")
    p.add_argument("--out", default=None, help="write the measurements as JSON here")
    args = p.parse_args(argv)

    from r2rec.config import build
    from r2rec.train.rl import RLConfig, run_rl
    from r2rec.train.sft import SFTConfig, run_sft

    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    run = tmp / "run"
    model = args.model
    if args.tiny:
        from r2rec.llm.models import make_tiny_model

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        model = str(make_tiny_model(tmp / "tiny"))
        src = None
    else:
        src = Path(args.run)
    try:
        if src is None:
            import random

            from r2rec.data.schema import Sample, write_jsonl

            rng = random.Random(0)
            prep = run / "prepared"
            prep.mkdir(parents=True)
            write_jsonl(prep / "items.jsonl", [{"item": i, "title": f"Movie {i} (1990)"} for i in range(200)])
            samples = [
                Sample(f"u{u}", tuple(rng.sample(range(200), 10)), 0, tuple(range(20)), "train", 0) for u in range(32)
            ]
            write_jsonl(prep / "train.seed0.jsonl.gz", [s.to_json() for s in samples])
            (prep / "meta.json").write_text(json.dumps({"n_items": 200, "seeds": [0]}))
        else:
            shutil.copytree(src / "prepared", run / "prepared")
        traces = None if src is None else src / "thoughts" / "sft.jsonl.gz"
        if traces is not None and traces.exists():
            (run / "thoughts").mkdir(parents=True)
            shutil.copy(traces, run / "thoughts" / "sft.jsonl.gz")
        else:
            _traces_from_prepared(run, 64)

        results = {"model": model, "batch_size": args.batch_size}
        for bf16 in (False, True):
            name = f"sft_{'bf16' if bf16 else 'fp32'}"
            cfg = build(
                SFTConfig,
                dict(
                    model=model,
                    max_steps=args.steps,
                    batch_size=args.batch_size,
                    eval_every=0,
                    save_every=10_000,
                    logging_steps=1,
                    precision="bf16" if bf16 else "fp32",
                    output=f"checkpoints/{name}",
                ),
            )
            t0 = time.time()
            run_sft(run, cfg)
            results[name] = {
                "sec_per_step": _median_step(run / cfg.output_dir / "log.csv"),
                "wall": round(time.time() - t0, 1),
            }
            print(name, results[name], flush=True)
        if not args.skip_rl:
            cfg = build(
                RLConfig,
                dict(
                    model=model,
                    init="checkpoints/sft_bf16/final",
                    max_steps=args.rl_steps,
                    num_generations=4,
                    max_completion_length=64,
                    eval_every=0,
                    save_every=10_000,
                    precision="bf16",
                ),
            )
            t0 = time.time()
            run_rl(run, cfg)
            results["grpo_bf16_4x64"] = {
                "sec_per_step": _median_step(run / cfg.output / "log.csv"),
                "wall": round(time.time() - t0, 1),
            }
            print("grpo", results["grpo_bf16_4x64"], flush=True)
        print(json.dumps(results, indent=2))
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
