"""The ``chains`` stage: chains for every sample of the requested splits, written per (split, seed)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Iterator, Sequence

from r2rec.data.schema import PreparedData, read_jsonl, samples_path, write_jsonl
from r2rec.graph.chains import ChainConfig, ChainSampler, check_chain_memory
from r2rec.graph.graph import GRAPH_FILE, build_graph
from r2rec.io import atomic_write_json
from r2rec.runs import RunDir

SPLITS = ("train", "val", "test")


def chains_path(run_dir: str | Path, split: str, seed: int) -> Path:
    return Path(run_dir) / "chains" / f"{split}.seed{seed}.jsonl.gz"


def load_chains(run_dir: str | Path, split: str, seed: int) -> list[dict]:
    path = chains_path(run_dir, split, seed)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no chains (run `r2rec chains --run {run_dir} --split {split}`)")
    return list(read_jsonl(path))


def _jobs(prepared: PreparedData, splits: Sequence[str], seeds: Sequence[int] | None) -> list[tuple[str, int]]:
    jobs = []
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"chains: unknown split {split!r}; known: {list(SPLITS)}")
        wanted = list(seeds) if seeds is not None else prepared.seeds
        have = [s for s in wanted if samples_path(prepared.root, split, s).exists()]
        if split == "train":
            # Train samples are prepared for the first seed only; their chains do not depend on candidates.
            have = have[:1]
        if not have:
            raise FileNotFoundError(f"{prepared.root}: no {split} samples for seeds {wanted}")
        jobs += [(split, s) for s in have]
    return jobs


def _lines(sampler: ChainSampler, samples: list, mode: str, counts: dict, progress: bool, desc: str) -> Iterator[dict]:
    """The chains file's lines for ``samples``, batch by batch; ``counts`` adds up chains, samples with a chain
    and (candidates mode) samples whose target some chain reaches."""
    for start, cb in sampler.iter_batches(samples, mode, progress=progress, desc=desc):
        for b in range(len(cb.offsets) - 1):
            s = samples[start + b]
            recs = cb.records(b)
            row = {"i": start + b, "user": s.user, "mode": mode, "chains": recs}
            if mode == "target":
                row["target"] = s.target
            else:
                # Val/test lines carry the candidates' evidence, never the target itself.
                row["evidence"] = [round(float(x), 6) for x in cb.evidence[b, : len(s.candidates)]]
                counts["reach"] += int(cb.evidence[b, s.candidates.index(s.target)] > 0)
            counts["chains"] += len(recs)
            counts["with_chain"] += bool(recs)
            yield row


def run_chains(
    run_dir: str | Path,
    config: ChainConfig | None = None,
    splits: Sequence[str] = SPLITS,
    seeds: Sequence[int] | None = None,
    force: bool = False,
    progress: bool = False,
) -> dict:
    """Write ``chains/{split}.seed{s}.jsonl.gz``; returns per-file stats. Skipped when the manifest matches."""
    import json

    config = config or ChainConfig()
    run = RunDir(run_dir)
    prepared = PreparedData(run.prepared)
    graph = build_graph(run_dir)
    jobs = _jobs(prepared, splits, seeds)
    inputs = [run.root / "graph" / GRAPH_FILE] + [samples_path(run.prepared, sp, s) for sp, s in jobs]
    stage_config = {"chains": asdict(config), "jobs": [f"{sp}.seed{s}" for sp, s in jobs]}
    stats_path = run.root / "chains" / "stats.json"
    if not force and stats_path.exists() and run.manifest_matches("chains", inputs, stage_config, config.seed):
        return json.loads(stats_path.read_text())

    sampler = ChainSampler(graph, config)
    stats: dict = {"config": asdict(config), "graph": graph.stats(), "files": {}}
    outputs = []
    for split, seed in jobs:
        check_chain_memory(prepared.meta.get("counts", {}).get(split, 0), samples_path(run.prepared, split, seed))
        samples = prepared.samples(split, seed)
        mode = "target" if split == "train" else "candidates"
        counts = {"chains": 0, "with_chain": 0, "reach": 0}
        out = chains_path(run_dir, split, seed)
        # Streamed: a line is written as soon as its batch is sampled (holding every line costs ~7 KB/sample).
        write_jsonl(out, _lines(sampler, samples, mode, counts, progress, f"chains {split}.seed{seed}"))
        n_chains, with_chain, reach = counts["chains"], counts["with_chain"], counts["reach"]
        outputs.append(out)
        entry = {
            "samples": len(samples),
            "with_chain": with_chain,
            "chains": n_chains,
            "chains_per_sample": round(n_chains / max(len(samples), 1), 3),
        }
        if mode == "candidates":
            # Stats only: how often some chain reaches the target (an upper bound for chain-based reasoning).
            entry["target_reached"] = reach
        stats["files"][f"{split}.seed{seed}"] = entry
    atomic_write_json(stats_path, stats)
    run.write_manifest("chains", inputs, stage_config, config.seed, outputs=outputs + [stats_path])
    return stats
