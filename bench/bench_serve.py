"""Latency of ``r2rec serve`` over HTTP: one request at a time, then 50 at once (micro-batched generation).

    .venv/bin/python bench/bench_serve.py --run runs/demo --max-new-tokens 32       # the demo's model (rl), real SmolLM2
    .venv/bin/python bench/bench_serve.py --tiny                                   # tiny random model, synthetic run (a minute)
    .venv/bin/python bench/bench_serve.py --tiny --unbatched                       # + the same load with batch size 1

The service runs as ``r2rec serve`` in its own process on a free loopback port (as deployed: the client's work
does not compete for the server's interpreter); requests go through httpx's asyncio client. Requests are the
run's test samples (history + frozen candidates, seed 0), cycled up to ``--concurrency``. After one warm-up
request:

1. ``sequential``: the first ``--sequential`` requests one after the other: single-request latency.
2. ``one_batch``: the first ``--batch-size`` requests sent while a longer request occupies the model, so that
   they wait and share the next generation call: its wall time (their last answer minus the blocker's), and
   ``batch_cost`` = that / single-request latency. The server's ``generation_calls`` counter checks that they
   did share one call.
3. ``concurrent``: ``--concurrency`` (50) requests at once: p50/p95/max latency, the wall time of the whole
   burst and the generation calls it took; every answer that also ran alone (phase 1) is compared with it
   (chosen item and completion text).
4. ``--unbatched``: phase 3 again on a server with ``--batch-size 1`` (the one-at-a-time service this
   replaced).

Target: ``p95(concurrent) <= 2 x ideal``, where ``ideal = ceil(concurrency / batch_size) x one_batch``: what the
burst costs when the model does nothing but full batches back to back (single-request latency x the batch cost
``one_batch / single``, times the batches needed). The result (machine, torch threads, date, every latency)
goes to ``--out`` (default ``bench/results/serve.json``; ``--tiny`` writes ``serve_tiny.json``). The machine is
shared: the load average before and after is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from r2rec.hardware import cpu_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Before torch loads: spinning OpenMP threads are an order of magnitude slower on a busy shared CPU.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]


def say(msg: str) -> None:
    print(f"[bench_serve] {msg}", file=sys.stderr, flush=True)


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100])."""
    s = sorted(xs)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def stats(xs: list[float]) -> dict:
    return {
        "n": len(xs),
        "p50": round(percentile(xs, 50), 3),
        "p95": round(percentile(xs, 95), 3),
        "max": round(max(xs), 3),
        "mean": round(statistics.fmean(xs), 3),
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(args, run: Path, model: str, base_model: str, batch_size: int):
    """``r2rec serve`` in a subprocess; (base url, /health answer, load seconds, process)."""
    import httpx

    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "r2rec.cli",
        "serve",
        "--run",
        str(run),
        "--model",
        model,
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--threads",
        str(args.threads),
        "--port",
        str(port),
        "--batch-size",
        str(batch_size),
        "--batch-wait-ms",
        str(args.batch_wait_ms),
        "--precision",
        args.precision,
        "--max-pending",
        str(max(256, args.concurrency)),
        "--log-level",
        "warning",
    ]
    if base_model:
        cmd += ["--base-model", base_model]
    env = {**os.environ, "R2REC_LOG_LEVEL": "WARNING"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"r2rec serve exited with status {proc.returncode}")
        try:
            health = httpx.get(f"{url}/health", timeout=5).json()
            return url, health, time.perf_counter() - t0, proc
        except httpx.TransportError:
            time.sleep(0.5)


def stop_server(proc) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


async def burst(url: str, bodies: list[dict]) -> tuple[list[float], list[dict], float]:
    """Send every body at once; (latency per request, answers, wall seconds of the whole burst)."""
    import httpx

    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, timeout=3600, limits=limits) as client:

        async def one(body):
            t = time.perf_counter()
            r = await client.post("/recommend", json=body)
            r.raise_for_status()
            return time.perf_counter() - t, r.json()

        t0 = time.perf_counter()
        out = await asyncio.gather(*(one(b) for b in bodies))
        wall = time.perf_counter() - t0
    return [o[0] for o in out], [o[1] for o in out], wall


async def one_full_batch(url: str, blocker: dict, bodies: list[dict]) -> tuple[float, float]:
    """Wall seconds of one generation call over ``bodies``: they are sent while ``blocker`` (a longer budget, so
    never in their batch) occupies the model, so all of them wait and go through the next call together.
    Returns (batch seconds = last answer - blocker's answer, blocker's latency)."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:

        async def one(body):
            r = await client.post("/recommend", json=body)
            r.raise_for_status()
            return time.perf_counter()

        t0 = time.perf_counter()
        first = asyncio.create_task(one(blocker))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(one(b)) for b in bodies]
        blocker_done = await first
        done = await asyncio.gather(*rest)
    return max(done) - blocker_done, blocker_done - t0


def tiny_run(workdir: Path) -> tuple[Path, Path]:
    """A synthetic prepared run with its graph, and the tiny random model (needs SmolLM2's tokenizer)."""
    from r2rec.graph.graph import build_graph
    from r2rec.graph.synthetic import write_synthetic_run
    from r2rec.llm.models import make_tiny_model

    run = write_synthetic_run(workdir / "run", seed=5, n_test_users=50)
    build_graph(run)
    return run, make_tiny_model(workdir / "tiny-llama")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="a run folder with prepared data and its graph (runs/demo after `make demo`)")
    p.add_argument("--tiny", action="store_true", help="tiny random model on a synthetic run instead of --run")
    p.add_argument("--model", default="auto", help="model kind to serve (default auto: rl, else sft, else base)")
    p.add_argument("--base-model", default="", help="base LLM override (registry name or local dir)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="reasoning budget per request (default 32)")
    p.add_argument("--batch-size", type=int, default=8, help="the service's batch size (default 8)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="the service's batching window (default 5)")
    p.add_argument("--concurrency", type=int, default=50, help="requests sent at once (default 50)")
    p.add_argument("--sequential", type=int, default=10, help="requests timed one at a time (default 10)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--precision", default="auto", help="the service's precision (default auto)")
    p.add_argument("--unbatched", action="store_true", help="also run the burst with batch size 1")
    p.add_argument("--out", default=None, help="result file (default bench/results/serve.json, or serve_tiny.json)")
    args = p.parse_args(argv)
    if bool(args.run) == args.tiny:
        p.error("give exactly one of --run and --tiny")

    import torch

    from r2rec.data.schema import PreparedData
    from r2rec.log import setup

    setup("WARNING")
    tmp = tempfile.TemporaryDirectory(prefix="bench-serve-")
    if args.tiny:
        run, base = tiny_run(Path(tmp.name))
        model, base_model = "base", str(base)
    else:
        run, model, base_model = Path(args.run), args.model, args.base_model
    samples = PreparedData(Path(run) / "prepared").samples("test", 0)
    bodies = [{"history": list(s.history), "candidates": list(s.candidates)} for s in samples]
    bodies = [bodies[i % len(bodies)] for i in range(args.concurrency)]

    def calls(url: str) -> int:
        import httpx

        return httpx.get(f"{url}/health", timeout=30).json()["generation_calls"]

    load_before = os.getloadavg()
    url, health, load_seconds, proc = start_server(args, run, model, base_model, args.batch_size)
    say(f"serving {health['model']} at {url} (loaded in {load_seconds:.1f} s)")
    try:
        asyncio.run(burst(url, bodies[:1]))  # warm-up: first-call costs out of the numbers
        seq_lat, seq_ans = [], []
        for body in bodies[: args.sequential]:
            lat, ans, _ = asyncio.run(burst(url, [body]))
            seq_lat += lat
            seq_ans += ans
        say(f"sequential: {args.sequential} requests, median {statistics.median(seq_lat):.2f} s")
        before = calls(url)
        blocker = {**bodies[0], "max_new_tokens": 4 * args.max_new_tokens}
        batch_wall, blocker_seconds = asyncio.run(one_full_batch(url, blocker, bodies[: args.batch_size]))
        batch_calls = calls(url) - before - 1  # the blocker's own call left out
        say(f"one batch: {args.batch_size} requests in {batch_calls} generation call(s), {batch_wall:.2f} s")
        before = calls(url)
        con_lat, con_ans, con_wall = asyncio.run(burst(url, bodies))
        con_calls = calls(url) - before
        say(
            f"concurrent: {args.concurrency} requests at once, {con_wall:.2f} s, p95 {percentile(con_lat, 95):.2f} s, "
            f"{con_calls} generation calls"
        )
    finally:
        stop_server(proc)
    unbatched = None
    if args.unbatched:  # the one-at-a-time service this replaced: same model, batch size 1
        url, _, _, proc = start_server(args, run, model, base_model, 1)
        try:
            asyncio.run(burst(url, bodies[:1]))
            un_lat, _, un_wall = asyncio.run(burst(url, bodies))
        finally:
            stop_server(proc)
        unbatched = {**stats(un_lat), "wall_seconds": round(un_wall, 3)}
        say(f"unbatched: {args.concurrency} requests at once, {un_wall:.2f} s")
    load_after = os.getloadavg()

    same = sum((a["item"], a["raw"]) == (b["item"], b["raw"]) for a, b in zip(seq_ans, con_ans))
    single = statistics.median(seq_lat)
    batches = math.ceil(args.concurrency / args.batch_size)
    ideal = batches * batch_wall
    p95 = percentile(con_lat, 95)
    from transformers import AutoTokenizer

    from r2rec.prompting import PromptBuilder, prompt_config
    from r2rec.runs import RunDir

    tok = AutoTokenizer.from_pretrained(health["checkpoint"]["model"])
    builder = PromptBuilder(run, prompt_config(RunDir(run), None))
    prompt_tokens = [
        len(
            tok(
                tok.apply_chat_template(builder.prompt(s).messages, add_generation_prompt=True, tokenize=False),
                add_special_tokens=False,
            )["input_ids"]
        )
        for s in samples[: args.sequential]
    ]
    result = {
        "command": "bench/bench_serve.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads or torch.get_num_threads(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "loadavg_1min": [round(load_before[0], 2), round(load_after[0], 2)],
        },
        "service": {
            "model": health["model"],
            "dataset": health["dataset"],
            "checkpoint": {k: v and str(v).replace(str(Path.home()), "~") for k, v in health["checkpoint"].items()},
            "device": health["device"],
            "precision": health["precision"],
            "max_new_tokens": args.max_new_tokens,
            "batch_size": args.batch_size,
            "batch_wait_ms": args.batch_wait_ms,
            "load_seconds": round(load_seconds, 2),
            "server": "r2rec serve (uvicorn), its own process",
        },
        "prompt_tokens_mean": round(statistics.fmean(prompt_tokens), 1),
        "generated_tokens_mean": round(statistics.fmean(a["generated_tokens"] for a in con_ans), 1),
        "sequential": {**stats(seq_lat), "single_seconds": round(single, 3)},
        "one_batch": {
            "requests": args.batch_size,
            "generation_calls": batch_calls,
            "wall_seconds": round(batch_wall, 3),
            "batch_cost": round(batch_wall / single, 2),
            "blocker_seconds": round(blocker_seconds, 3),
        },
        "concurrent": {
            "requests": args.concurrency,
            "generation_calls": con_calls,
            "wall_seconds": round(con_wall, 3),
            **stats(con_lat),
            "same_answer_as_alone": f"{same}/{min(len(seq_ans), len(con_ans))}",
        },
        "unbatched": unbatched,
        "target": {
            "ideal_seconds": round(ideal, 3),
            "p95_over_ideal": round(p95 / ideal, 2),
            "met": p95 <= 2 * ideal,
            "definition": "p95(concurrent) <= 2 x ceil(concurrency / batch_size) x one_batch.wall_seconds",
        },
    }
    out = (
        Path(args.out) if args.out else ROOT / "bench" / "results" / ("serve_tiny.json" if args.tiny else "serve.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
