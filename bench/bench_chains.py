"""Chain sampler throughput (chains/s on one core) and peak memory: ML-100K-sized data and synthetic graphs.

    .venv/bin/r2rec prepare --dataset llara-movielens --run runs/llara-movielens   # once (for the real case)
    .venv/bin/python bench/bench_chains.py                      # real run + synthetic 1M, 3M, 10M edges
    .venv/bin/python bench/bench_chains.py --sizes 1e6 --samples 20000               # quicker
    .venv/bin/python bench/bench_chains.py --cap-sweep runs/llara-movielens          # chain quality vs cap

Each case runs in its own subprocess (one thread: OMP/BLAS pinned to 1) so peak RSS belongs to that case:

- ``real``: the graph of a prepared run (default ``runs/llara-movielens``, LLaRA's ML-100K split), chains for
  every train sample towards its target (``mode=target``, what ``r2rec chains`` / the traces use) and for a
  subset towards all 20 candidates (``mode=candidates``, what prompts and the evidence heuristic use);
- ``synthetic``: a random graph of N edges (users of ~100 interactions, N/200 items, Zipf popularity, N/100,000
  taste clusters of 500 items: 85% of a user's items come from its cluster, so users share items as on real
  data; with ``--cluster-size 0`` there is no co-occurrence structure and few chains exist), samples = 10 consecutive items
  of a random user as history, the next one as target, 19 random negatives.

Reported per case and mode: chains drawn per CPU-second (k = 8 per sample; CPU time of this process, so
other jobs on the shared machine inflate it less than wall time), samples/s, wall seconds, graph build
seconds and edges/s, peak RSS and the peak of traced allocations during the graph build and one batch per
mode (tracemalloc, which numpy reports its buffers to; stopped before timing). ``records_chains_per_s`` is
sampling plus converting every drawn chain to its JSON-ready evidence record (what ``r2rec chains`` writes).
Writes ``bench/results/chains.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

from r2rec.hardware import cpu_model

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")


def _synthetic_samples(graph, n: int, seed: int):
    import numpy as np

    from r2rec.data.schema import Sample

    rng = np.random.default_rng(seed)
    lengths = np.diff(graph.ui_indptr)
    users = rng.choice(np.flatnonzero(lengths >= 12), size=n)
    # The graph stores each user's distinct items sorted by id; rebuild the order from positions.
    out = []
    for u in users.tolist():
        lo, hi = graph.ui_indptr[u], graph.ui_indptr[u + 1]
        seq = graph.ui_items[lo:hi][np.argsort(graph.ui_pos[lo:hi])]
        t = int(rng.integers(10, len(seq)))
        negs = rng.integers(0, graph.n_items, size=19)
        cands = [int(seq[t]), *map(int, negs)]
        out.append(Sample(str(graph.users[u]), tuple(map(int, seq[t - 10 : t])), int(seq[t]), tuple(cands), "train", 0))
    return out


def _measure(sampler, samples, mode: str, records: bool) -> dict:
    n_chains, t_cpu, t_wall = 0, time.process_time(), time.perf_counter()
    for _, cb in sampler.iter_batches(samples, mode):
        n_chains += len(cb)
    cpu, wall = time.process_time() - t_cpu, time.perf_counter() - t_wall
    out = {
        "mode": mode,
        "samples": len(samples),
        "chains": n_chains,
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "chains_per_s": round(n_chains / cpu),
        "samples_per_s": round(len(samples) / cpu),
        "us_per_sample": round(1e6 * cpu / max(len(samples), 1), 1),
    }
    if records:
        t_cpu, n = time.process_time(), 0
        for _, cb in sampler.iter_batches(samples, mode):
            for b in range(len(cb.offsets) - 1):
                n += len(cb.records(b))
        out["records_chains_per_s"] = round(n / (time.process_time() - t_cpu))
    return out


def one_case(args) -> dict:
    """Runs inside the subprocess of one case; prints its JSON."""
    import tracemalloc

    from r2rec.graph.chains import ChainConfig, ChainSampler
    from r2rec.graph.graph import InteractionGraph

    tracemalloc.start()
    t0 = time.process_time()
    if args.case == "real":
        from r2rec.data.schema import PreparedData

        prepared = PreparedData(Path(args.run) / "prepared")
        graph = InteractionGraph.from_sequences(prepared.train_sequences(), prepared.n_items)
        build = time.process_time() - t0
        samples = prepared.samples("train", prepared.seeds[0])
        if args.samples:
            samples = samples[: args.samples]
        name = prepared.meta.get("dataset", args.run)
    else:
        from r2rec.graph.synthetic import synthetic_edges

        n_edges = int(float(args.edges))
        n_users, n_items = max(n_edges // 100, 10), max(n_edges // 200, 100)
        users, items, pos = synthetic_edges(
            n_edges, n_users, n_items, seed=args.seed, clusters=n_items // args.cluster_size if args.cluster_size else 0
        )
        t0 = time.process_time()
        graph = InteractionGraph.from_arrays([f"u{k}" for k in range(n_users)], n_items, users, items, pos)
        build = time.process_time() - t0
        del users, items, pos
        samples = _synthetic_samples(graph, args.samples or 20000, args.seed)
        name = f"synthetic-{n_edges:.0e}".replace("+0", "")
    sampler = ChainSampler(graph, ChainConfig(k=args.k, seed=args.seed, max_users_per_item=args.cap))
    n_cand = min(len(samples), max(1000, len(samples) // 10))
    # Memory: graph build + one batch per mode under tracemalloc; timings after it is stopped (it slows
    # every Python allocation down, the JSON records most of all).
    _measure(sampler, samples[: sampler.config.batch_size], "target", False)
    _measure(sampler, samples[: sampler.config.batch_size], "candidates", False)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    modes = [
        _measure(sampler, samples, "target", records=True),
        _measure(sampler, samples[:n_cand], "candidates", records=False),
    ]
    return {
        "case": name,
        "graph": graph.stats(),
        "lookup": "dense" if graph._dense is not None else "hash",
        "build_cpu_s": round(build, 3),
        "build_edges_per_s": round(graph.n_interactions / max(build, 1e-9)),
        "k": args.k,
        "max_users_per_item": args.cap,
        "cluster_size": args.cluster_size if args.case != "real" else None,
        "modes": modes,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_traced_mib": round(traced_peak / 2**20, 1),
    }


def cap_sweep(run: str, caps: list[int], out: str) -> dict:
    """What the cap costs in chain quality on real data: chains per train sample (every 10th), the drawn
    chains' mean strength, and the val HR@1 of the evidence heuristic (all val seeds); no test data."""
    import numpy as np

    from r2rec.baselines.base import val_hit_rate
    from r2rec.data.schema import PreparedData
    from r2rec.graph.chains import ChainConfig, ChainSampler
    from r2rec.graph.graph import InteractionGraph

    prepared = PreparedData(Path(run) / "prepared")
    graph = InteractionGraph.from_sequences(prepared.train_sequences(), prepared.n_items)
    train = prepared.samples("train", prepared.seeds[0])[::10]
    val = [s for k in prepared.seeds for s in prepared.samples("val", k)]
    rows = []
    for cap in caps:
        sampler = ChainSampler(graph, ChainConfig(max_users_per_item=cap))
        counts, strength = [], []
        for _, cb in sampler.iter_batches(train):
            counts += np.diff(cb.offsets).tolist()
            strength += cb.strength.tolist()
        hr1 = val_hit_rate(sampler.candidate_evidence_batch(val), val)["hr1"]
        rows.append(
            {
                "cap": cap,
                "chains_per_sample": round(float(np.mean(counts)), 3),
                "mean_strength": round(float(np.mean(strength)), 4),
                "val_evidence_hr1": round(hr1, 4),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "command": "python bench/bench_chains.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "run": run,
        "train_samples": len(train),
        "val_samples": len(val),
        "rows": rows,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/llara-movielens", help="prepared run for the real case ('' = skip)")
    p.add_argument("--sizes", default="1e6,3e6,1e7", help="synthetic edge counts (comma-separated)")
    p.add_argument("--samples", type=int, default=0, help="samples per case (0 = all train samples / 20000)")
    p.add_argument("--k", type=int, default=8)
    p.add_argument(
        "--cluster-size",
        type=int,
        default=500,
        help="items per synthetic taste cluster (0 = no clusters, no co-occurrence structure)",
    )
    p.add_argument("--cap", type=int, default=256, help="ChainConfig.max_users_per_item (users of one i_b examined)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "chains.json"))
    p.add_argument("--cap-sweep", metavar="RUN", help="instead: chain quality vs cap on RUN (caps 32,64,128,256,0)")
    p.add_argument("--case", choices=["real", "synthetic"], help=argparse.SUPPRESS)
    p.add_argument("--edges", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.case:
        print(json.dumps(one_case(args)))
        return 0
    if args.cap_sweep:
        default_out = str(Path(__file__).parent / "results" / "chains.json")
        out = args.out if args.out != default_out else str(Path(__file__).parent / "results" / "chains_cap_sweep.json")
        cap_sweep(args.cap_sweep, [32, 64, 128, 256, 0], out)
        return 0

    cases = ([["--case", "real", "--run", args.run]] if args.run else []) + [
        ["--case", "synthetic", "--edges", s] for s in args.sizes.split(",") if s
    ]
    load_before = os.getloadavg()
    results = []
    for case in cases:
        cmd = [
            sys.executable,
            __file__,
            *case,
            "--k",
            str(args.k),
            "--cap",
            str(args.cap),
            "--cluster-size",
            str(args.cluster_size),
            "--seed",
            str(args.seed),
            "--samples",
            str(args.samples),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(r)
        t = r["modes"][0]
        print(
            f"{r['case']:>22}: {r['graph']['interactions']:>10,} interactions  build {r['build_cpu_s']:6.2f}s  "
            f"target {t['chains_per_s']:>9,} chains/s ({t['us_per_sample']} us/sample)  "
            f"candidates {r['modes'][1]['chains_per_s']:>9,} chains/s  peak RSS {r['peak_rss_mib']} MiB",
            flush=True,
        )
    out = {
        "command": "python bench/bench_chains.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "threads": 1,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
