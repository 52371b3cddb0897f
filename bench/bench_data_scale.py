"""Data at scale: the prepare, graph and chains stages on synthetic interaction logs of 1M, 10M and 100M rows.

    .venv/bin/python bench/bench_data_scale.py                        # 1M, 10M, 100M (-> results/data_scale.json)
    .venv/bin/python bench/bench_data_scale.py --sizes 1e6 --keep     # one size (added to the results file)

For each size it writes a seeded synthetic ``user,item,timestamp`` CSV and its ``item,title`` file (the format
``r2rec prepare --dataset csv`` reads) into a temporary folder, then runs the real stage functions in turn,
each in its own child process (so the peak RSS is that stage's alone, read by ``wait4``) under ``prlimit --as``
(default 10 GiB):

- ``prepare``: :func:`r2rec.data.prepare.prepare` (dataset ``csv``, seeds 0,1,2, 20 candidates,
  ``max_test_samples`` = ``--test-samples`` (20,000): what ``r2rec prepare`` runs);
- ``graph``: :func:`r2rec.graph.graph.build_graph` (``r2rec graph``);
- ``chains``: :func:`r2rec.graph.stage.run_chains` (``r2rec chains``) on the test split of seed 0 (at most
  20,000 samples, "candidates" mode: chains towards all 20 candidates, written as JSON lines); then, in the
  same process, the sampler on the first ``--train-samples`` (50,000) train samples in "target" mode (what the
  stage does for the train split), CPU-timed with and without building the JSON records.
  ``--train-samples -1`` runs the stage on the whole train split too (one sample per train interaction).

The log: ``n / 50`` users with log-normal lengths (median ~30, a long tail; users under 5 interactions are
dropped by the split as in real logs), ``n / 100`` items with Zipf(0.9) popularity inside taste clusters of
500 items (80% of a user's items from its cluster, as in ``bench_chains.py``), increasing integer timestamps
per user, rows in random order (blocks of users shuffled).

Reported per size and stage: wall seconds, CPU seconds, peak RSS (GiB), seconds and bytes per interaction (the
linearity check), and for chains the chains written per CPU-second of the stage. A stage that does not fit
the memory limit reports the error it raised, and the later stages of that size are not run. OMP/BLAS are
pinned to one thread. The log is written by a child process too: Linux carries a process's peak RSS across
exec, so the parent of the measured children must stay small.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from r2rec.hardware import cpu_model

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

GIB = 2**30
STAGES = ("prepare", "graph", "chains")


# -- the synthetic log ------------------------------------------------------------------------------------
def write_log(folder: Path, n: int, seed: int = 0, cluster_size: int = 500) -> dict:
    """``log.csv`` (user,item,timestamp, ~n rows) and ``titles.csv`` in ``folder``; generated in blocks of
    users so memory stays small at any n."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    n_users, n_items = max(n // 50, 10), max(n // 100, 200)
    # Log-normal lengths with median ~30 and mean ~50, scaled to sum to n.
    lengths = rng.lognormal(np.log(30), 1.0, size=n_users)
    lengths = np.maximum(1, np.round(lengths * n / lengths.sum())).astype(np.int64)
    clusters = max(n_items // cluster_size, 1)
    block = n_items // clusters
    w_all = np.cumsum(np.arange(1, n_items + 1, dtype=np.float64) ** -0.9)
    w_all /= w_all[-1]
    w_blk = np.cumsum(np.arange(1, block + 1, dtype=np.float64) ** -0.9)
    w_blk /= w_blk[-1]
    item_perm = rng.permutation(n_items)  # popularity unrelated to item ids
    cluster_of = rng.integers(0, clusters, size=n_users)
    log = folder / "log.csv"
    opts = pacsv.WriteOptions(include_header=True, quoting_style="none")
    rows = 0
    with pacsv.CSVWriter(
        str(log),
        pa.schema([("user", pa.string()), ("item", pa.string()), ("timestamp", pa.int64())]),
        write_options=opts,
    ) as w:
        ends = np.cumsum(lengths)
        u0 = 0
        while u0 < n_users:
            u1 = int(np.searchsorted(ends, (ends[u0 - 1] if u0 else 0) + 2_000_000, side="right"))
            u1 = max(u1, u0 + 1)
            ln = lengths[u0:u1]
            m = int(ln.sum())
            users = np.repeat(np.arange(u0, u1, dtype=np.int64), ln)
            local = rng.random(m) < 0.8
            items = np.minimum(np.searchsorted(w_all, rng.random(m)), n_items - 1)
            in_blk = np.minimum(np.searchsorted(w_blk, rng.random(int(local.sum()))), block - 1)
            items[local] = cluster_of[users[local]] * block + in_blk
            items = item_perm[items]
            start = rng.integers(1_000_000_000, 1_600_000_000, size=len(ln))
            gaps = rng.integers(1, 100_000, size=m)
            starts = np.cumsum(ln) - ln
            cum = np.cumsum(gaps)
            ts = np.repeat(start, ln) + cum - np.repeat(cum[starts] - gaps[starts], ln)  # increasing per user
            order = rng.permutation(m)
            table = pa.table(
                {
                    "user": pa.array(np.char.add("u", users[order].astype(str)).astype(object), pa.string()),
                    "item": pa.array(np.char.add("i", items[order].astype(str)).astype(object), pa.string()),
                    "timestamp": pa.array(ts[order]),
                }
            )
            w.write_table(table)
            rows += m
            u0 = u1
    titles = folder / "titles.csv"
    with open(titles, "w") as f:
        f.write("item,title\n")
        f.writelines(f"i{k},Item {k}\n" for k in range(n_items))
    return {
        "rows": rows,
        "users": n_users,
        "items": n_items,
        "log_bytes": log.stat().st_size,
        "log": str(log),
        "titles": str(titles),
    }


# -- one stage in a child process ----------------------------------------------------------------------
def child(args) -> dict:
    """Runs one stage in this (child) process; prints its JSON result."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    t0, c0 = time.perf_counter(), time.process_time()
    out: dict = {"stage": args.child}
    if args.child == "prepare":
        from r2rec.data.prepare import PrepareConfig, prepare

        cfg = PrepareConfig(
            dataset="csv", interactions=args.log, titles=args.titles, max_test_samples=args.test_samples
        )
        data = prepare(cfg, args.run, force=True)
        out["counts"] = data.meta["counts"]
        out["seconds_inside"] = data.meta["seconds"]
    elif args.child == "graph":
        from r2rec.graph.graph import build_graph

        g = build_graph(args.run, force=True)
        out["graph"] = g.stats()
    else:
        from r2rec.graph.chains import ChainConfig
        from r2rec.graph.stage import run_chains

        splits = ["test"] + (["train"] if args.train_samples < 0 else [])
        stats = run_chains(args.run, ChainConfig(), splits=splits, seeds=[0], force=True)
        out["stage_cpu_s"] = round(time.process_time() - c0, 2)
        out["files"] = stats["files"]
        out["chains"] = sum(f["chains"] for f in stats["files"].values())
        out["samples"] = sum(f["samples"] for f in stats["files"].values())
        if args.train_samples > 0:
            out["train_target_mode"] = _train_chains(args.run, args.train_samples)
    out["wall_s_child"] = round(time.perf_counter() - t0, 2)
    out["cpu_s_child"] = round(time.process_time() - c0, 2)
    return out


def _log_for(folder: Path, n: int, seed: int, reuse: bool) -> dict:
    """The log of size n, written by a child process: the peak RSS that wait4 reports for a stage includes
    the RSS of the process it was forked from (Linux keeps it across exec), so this process stays small.
    ``reuse``: a log written before with the same n and seed is used as it is."""
    info = folder / "log.json"
    if reuse and info.exists():
        size = json.loads(info.read_text())
        if size.get("n") == n and size.get("seed") == seed and Path(size["log"]).exists():
            return size
    t0 = time.perf_counter()
    cmd = [sys.executable, __file__, "--child", "write", "--log", str(folder), "--size", str(n), "--seed", str(seed)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    size = json.loads(proc.stdout.strip().splitlines()[-1])
    size.update(n=n, seed=seed, write_s=round(time.perf_counter() - t0, 1))
    info.write_text(json.dumps(size))
    return size


def _meminfo_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return round(int(line.split()[1]) * 1024 / GIB, 2)
    return float("nan")


def _train_chains(run: str, n: int) -> dict:
    """The first ``n`` train samples in "target" mode (what the stage does for the train split): chains drawn
    and turned into their JSON records, timed in CPU seconds of this process (file writing not included)."""
    from itertools import islice

    from r2rec.data.schema import PreparedData, Sample, samples_path
    from r2rec.graph.chains import ChainConfig, ChainSampler
    from r2rec.graph.graph import load_graph
    from r2rec.io import read_jsonl

    prepared = PreparedData(Path(run) / "prepared")
    path = samples_path(prepared.root, "train", prepared.seeds[0])
    samples = [Sample.from_json(r) for r in islice(read_jsonl(path), n)]  # only the first n held
    sampler = ChainSampler(load_graph(run), ChainConfig())
    c0, n_chains = time.process_time(), 0
    for _, cb in sampler.iter_batches(samples, "target"):
        n_chains += len(cb)
    sample_s = time.process_time() - c0
    c0, n_records = time.process_time(), 0
    for _, cb in sampler.iter_batches(samples, "target"):
        n_records += sum(len(cb.records(b)) for b in range(len(cb.offsets) - 1))
    records_s = time.process_time() - c0
    return {
        "samples": len(samples),
        "chains": n_chains,
        "sampling_cpu_s": round(sample_s, 2),
        "chains_per_cpu_s": round(n_chains / max(sample_s, 1e-9)),
        "with_records_cpu_s": round(records_s, 2),
        "with_records_chains_per_cpu_s": round(n_records / max(records_s, 1e-9)),
    }


def run_stage(
    stage: str, size: dict, run: Path, limit: int, train_samples: int, test_samples: int, timeout: int
) -> dict:
    """One stage in a child process under ``prlimit --as=limit``; wall time from here, peak RSS from wait4."""
    cmd = [sys.executable, __file__, "--child", stage, "--log", size["log"], "--titles", size["titles"]]
    cmd += ["--run", str(run), "--train-samples", str(train_samples), "--test-samples", str(test_samples)]
    if limit:
        cmd = ["prlimit", f"--as={limit}", *cmd]
    load = [round(x, 2) for x in os.getloadavg()]
    mem_free = _meminfo_gib()
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > timeout:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    result: dict = {
        "stage": stage,
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_gib": round(usage.ru_maxrss * 1024 / GIB, 3),
        "loadavg_before": load,
        "mem_available_gib_before": mem_free,
        "limit_gib": round(limit / GIB, 1) if limit else None,
    }
    if wall > timeout:
        result["error"] = f"stopped after {timeout}s (the benchmark's time limit per stage)"
    elif proc.returncode != 0:
        lines = [x for x in stderr.strip().splitlines() if x.strip()]
        result["error"] = lines[-1] if lines else f"exit status {proc.returncode}"
        result["exit_status"] = proc.returncode
    else:
        result.update({k: v for k, v in json.loads(stdout.strip().splitlines()[-1]).items() if k not in result})
        result["child_wall_s"] = result.pop("wall_s_child", None)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1e6,1e7,1e8", help="interactions per log (comma-separated)")
    p.add_argument("--stages", default=",".join(STAGES))
    p.add_argument("--limit-gib", type=float, default=10.0, help="prlimit --as for every stage (0 = none)")
    p.add_argument(
        "--train-samples",
        type=int,
        default=50_000,
        help="chains stage: also time the sampler on this many train samples in target mode (0 = no; -1 = run "
        "the stage on the whole train split as well)",
    )
    p.add_argument(
        "--test-samples",
        type=int,
        default=20_000,
        help="prepare's max_test_samples: the test samples the chains stage runs on ('candidates' mode)",
    )
    p.add_argument("--timeout", type=int, default=900, help="seconds per stage before it is stopped")
    p.add_argument("--tmp", default=None, help="folder for the logs and runs (default: a new temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the logs and runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "data_scale.json"))
    p.add_argument("--reuse", action="store_true", help="use a log written before (same size and seed) in --tmp")
    p.add_argument("--child", choices=(*STAGES, "write"), help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--log", help=argparse.SUPPRESS)
    p.add_argument("--titles", help=argparse.SUPPRESS)
    p.add_argument("--run", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child == "write":
        print(json.dumps(write_log(Path(args.log), args.size, seed=args.seed)))
        return 0
    if args.child:
        print(json.dumps(child(args)))
        return 0

    stages = [s for s in args.stages.split(",") if s]
    limit = int(args.limit_gib * GIB)
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="r2rec-data-scale-"))
    tmp.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for text in args.sizes.split(","):
            n = int(float(text))
            folder = tmp / f"n{n}"
            folder.mkdir(exist_ok=True)
            size = _log_for(folder, n, args.seed, args.reuse)
            print(
                f"{n:,}: wrote {size['rows']:,} rows ({size['log_bytes'] / GIB:.2f} GiB) in {size['write_s']}s",
                flush=True,
            )
            entry = {
                "size": text,
                "command": "python bench/bench_data_scale.py "
                + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "interactions": size["rows"],
                "log": {k: v for k, v in size.items() if k not in ("log", "titles")},
                "stages": [],
            }
            for stage in stages:
                r = run_stage(stage, size, folder / "run", limit, args.train_samples, args.test_samples, args.timeout)
                r["command"] = entry["command"]
                r["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
                r["us_per_interaction"] = round(1e6 * r["wall_s"] / size["rows"], 3)
                r["cpu_us_per_interaction"] = round(1e6 * r["cpu_s"] / size["rows"], 3)
                r["bytes_per_interaction"] = round(r["peak_rss_gib"] * GIB / size["rows"], 1)
                if "chains" in r:
                    r["chains_per_cpu_s"] = round(r["chains"] / max(r["stage_cpu_s"], 1e-9))
                entry["stages"].append(r)
                print(
                    f"  {stage:>8}: {r['wall_s']:8.1f}s wall {r['cpu_s']:8.1f}s cpu  peak {r['peak_rss_gib']:6.2f} GiB  "
                    f"{r['cpu_us_per_interaction']:.2f} cpu-us/int  {r['bytes_per_interaction']:.0f} B/int"
                    + (f"  {r['chains_per_cpu_s']:,} chains/cpu-s" if "chains_per_cpu_s" in r else "")
                    + (f"  ERROR {r['error']}" if "error" in r else ""),
                    flush=True,
                )
                if "error" in r:
                    break
            entry["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
            results.append(entry)
            shutil.rmtree(folder / "run", ignore_errors=True) if not args.keep else None
            if not args.keep:
                for f in ("log.csv", "titles.csv", "log.json"):
                    (folder / f).unlink(missing_ok=True)
    finally:
        if not args.keep and not args.tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    # Sizes and stages run before (by another invocation) stay in the file unless run again; every stage result
    # carries the command and date that made it.
    previous = json.loads(Path(args.out).read_text()).get("results", []) if Path(args.out).exists() else []
    by_n = {r["interactions"]: r for r in previous}
    for entry in results:
        old = by_n.get(entry["interactions"])
        if old is not None:
            ran = {r["stage"] for r in entry["stages"]}
            kept = [r for r in old["stages"] if r["stage"] not in ran and "error" not in r]
            entry["stages"] = sorted(kept + entry["stages"], key=lambda r: STAGES.index(r["stage"]))
        by_n[entry["interactions"]] = entry
    merged = list(by_n.values())
    doc = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "mem_total_gib": _memtotal_gib()},
        "limit_gib": args.limit_gib,
        "results": sorted(merged, key=lambda r: r["interactions"]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2))
    print(f"wrote {args.out}")
    return 0


def _memtotal_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) * 1024 / GIB, 1)
    return float("nan")


if __name__ == "__main__":
    sys.exit(main())
