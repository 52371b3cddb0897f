"""``r2rec eval`` on each inference engine: seconds per sample, HR@1, and how often the engines agree.

    .venv/bin/python bench/bench_eval_engines.py --run runs/demo --model sft --max-samples 20
    .venv/bin/python bench/bench_eval_engines.py --run runs/demo --model sft --max-samples 6 --batch-size 1 \
        --out bench/results/eval_engines_batch1.json

Evaluates one trained model of a run on the same samples with ``engine=torch`` (the reference, batched),
``engine=llama.cpp quant=f32`` and ``engine=llama.cpp quant=q8_0`` (one prompt at a time; the GGUF export is
built before the clock starts), each as its own result (``results/<model>-bench-<engine>.json``, forced fresh),
and writes ``bench/results/eval_engines.json``: wall seconds per sample, HR@1, and per engine the share of
samples whose answer (and whole completion) equals torch's. Needs llama-cpp-python (the ``engine`` extra).
The load average before and after each engine is stored beside it: a busy machine slows every engine.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from r2rec.hardware import cpu_flags, cpu_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ENGINES = (("torch", "q8_0"), ("llama.cpp", "f32"), ("llama.cpp", "q8_0"))


def _cpu() -> dict:
    return {
        "model": cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "flags": sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni"}),
    }


def main() -> None:
    from r2rec.data.schema import read_jsonl
    from r2rec.eval.runner import EvalConfig, resolve_checkpoint, run_eval
    from r2rec.llm.engines import gguf_for
    from r2rec.log import setup
    from r2rec.runs import RunDir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--model", default="sft")
    ap.add_argument("--max-samples", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help="torch's batch (default: all samples at once; 1 = "
        "one request at a time, as a service sees them when idle)",
    )
    ap.add_argument("--out", default="bench/results/eval_engines.json")
    args = ap.parse_args()
    setup("WARNING")
    run = RunDir(args.run)
    model, adapter, _ = resolve_checkpoint(run, args.model, EvalConfig())
    rows, answers = [], {}
    for engine, quant in ENGINES:
        if engine == "llama.cpp":
            gguf_for(model, adapter, quant)  # the one-time export is not part of the evaluation's time
        method = f"{args.model}-bench-{engine.replace('.', '')}-{quant}"
        cfg = EvalConfig(
            engine=engine,
            quant=quant,
            max_samples=args.max_samples,
            seeds=args.seeds,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size or args.max_samples,
            method=method,
            force=True,
            faithfulness=False,
            n_bootstrap=100,
        )
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        result = run_eval(run.root, args.model, cfg)
        seconds = time.perf_counter() - t0
        preds = list(read_jsonl(run.results / f"{method}.predictions.jsonl.gz"))
        answers[(engine, quant)] = [(p.get("answer"), p.get("raw")) for p in preds]
        rows.append(
            {
                "engine": engine,
                "quant": quant,
                "n": result["n"],
                "hr1": result["hr1"],
                "seconds_per_sample": round(seconds / result["n"], 3),
                "wall_seconds": round(seconds, 1),
                "load_before": round(load0, 2),
                "load_after": round(os.getloadavg()[0], 2),
            }
        )
    ref = answers[("torch", "q8_0")]
    for row in rows:
        mine = answers[(row["engine"], row["quant"])]
        row["same_answer_as_torch"] = round(sum(a[0] == b[0] for a, b in zip(mine, ref)) / len(ref), 3)
        row["same_completion_as_torch"] = round(sum(a[1] == b[1] for a, b in zip(mine, ref)) / len(ref), 3)
        print(json.dumps(row))
    flags = " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in vars(args).items()
    )
    out = {
        "command": f"bench/bench_eval_engines.py {flags}",
        "date": time.strftime("%Y-%m-%d"),
        "cpu": _cpu(),
        "run": str(run.root),
        "model": args.model,
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
