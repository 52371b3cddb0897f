"""``r2rec prepare``: load a dataset, split it, freeze candidates per seed, write ``<run>/prepared/``.

    r2rec prepare --dataset llara-movielens --run runs/llara-movielens
    r2rec prepare --dataset csv --interactions log.csv --titles items.csv --run runs/mylog --seeds 0,1,2

Writes (layout in :mod:`r2rec.data.schema`): ``items.jsonl``, ``train_sequences.jsonl.gz``,
``val.seed{k}`` / ``test.seed{k}`` for every seed, ``train.seed{first seed}`` (the LLM stages' training
samples, optionally a seeded subsample) and ``meta.json``. The stage is skipped when its manifest matches.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..config import build, data_dirs
from ..errors import ConfigError, InputError
from ..io import atomic_write_json, check_input, sha256_file
from ..runs import RunDir
from .candidates import draw_negatives, rng_for
from .raw import RawDataset, Row
from .schema import PreparedData, samples_path, write_jsonl
from .sources import SOURCES, SourceOptions, get_source

log = logging.getLogger(__name__)


@dataclass
class PrepareConfig:
    """Settings of the prepare stage (YAML section ``prepare``)."""

    dataset: str = "llara-movielens"
    """A key of ``r2rec.data.sources.SOURCES``: llara-movielens, llara-lastfm, ml-100k or csv."""
    data_dir: str | None = None
    """Data directory holding one folder per dataset. Looked up first, then $R2REC_DATA_DIR, then ../shared/data,
    then (ml-100k only) the copy inside an installed recbole package; meta.json records which one was used."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """One frozen candidate draw for val/test per seed; train samples use the first seed."""
    num_candidates: int = 20
    """Candidates per sample: the target plus num_candidates - 1 negatives."""
    max_history: int = 10
    """Keep at most this many most recent history items."""
    min_history: int = 3
    """Drop rows whose history is shorter (LLaRA drops len_seq < 3)."""
    max_train_samples: int | None = None
    """If set, a seeded random subsample of this many train samples (order kept)."""
    max_test_samples: int | None = None
    """If set, score only a seeded random subset of this many test samples (order kept): the same samples
    for every candidate seed, each with exactly the candidates the full test set froze for it. For datasets
    whose full test set costs more LLM evaluation than the machine has (ml-100k on 2 CPU cores)."""
    min_rating: int = 0
    """ml-100k: keep ratings >= this (0 keeps all; LLaRA used 3)."""
    interactions: str | None = None
    """csv: the user,item,timestamp file."""
    titles: str | None = None
    """csv: the item,title (or id::title) file."""

    def __post_init__(self):
        get_source(self.dataset)
        self.seeds = [int(s) for s in self.seeds]
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"prepare.seeds must be a non-empty list of distinct ints, got {self.seeds}")
        if self.num_candidates < 2:
            raise ConfigError(f"prepare.num_candidates must be >= 2, got {self.num_candidates}")
        if not 1 <= self.min_history <= self.max_history:
            raise ConfigError(
                f"prepare: need 1 <= min_history <= max_history, got {self.min_history}, {self.max_history}"
            )
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ConfigError(f"prepare.max_train_samples must be >= 1, got {self.max_train_samples}")
        if self.max_test_samples is not None and self.max_test_samples < 1:
            raise ConfigError(f"prepare.max_test_samples must be >= 1, got {self.max_test_samples}")

    def source_options(self) -> SourceOptions:
        return SourceOptions(
            data_dirs=data_dirs(self.data_dir),
            min_history=self.min_history,
            max_history=self.max_history,
            min_rating=self.min_rating,
            interactions=Path(self.interactions) if self.interactions else None,
            titles=Path(self.titles) if self.titles else None,
        )


def _subset_indices(n_rows: int, n: int | None, dataset: str, purpose: str, seed: int) -> list[int] | None:
    """A seeded random choice of ``n`` of ``n_rows`` indices, sorted (order kept), or None to keep them all."""
    if n is None or n >= n_rows:
        return None
    return np.sort(rng_for(dataset, purpose, seed).choice(n_rows, size=n, replace=False)).tolist()


# Rows per block when the frozen candidates are shuffled and written (bounds memory; results do not depend on it).
_WRITE_BLOCK = 1 << 16


def _frozen_lines(
    rows: Sequence[Row],
    *,
    dataset: str,
    split: str,
    seed: int,
    n_items: int,
    num_candidates: int,
    keep: Sequence[int] | None = None,
) -> Iterator[dict]:
    """The JSON lines of ``freeze_candidates(rows, ...)`` (kept rows only, when ``keep`` is given), made in
    blocks of rows instead of one Sample per row held at once: the generator is called as there (all
    negatives first, then the shuffle's uniforms row after row, which a block-wise call draws identically),
    so the lines are the same (tests/test_data_scale.py compares them)."""
    if num_candidates < 2:
        raise ValueError(f"num_candidates must be >= 2 (the target plus at least one negative), got {num_candidates}")
    rng = rng_for(dataset, split, seed)
    negatives = draw_negatives(rows, n_items, num_candidates - 1, rng)
    kept = None if keep is None else np.asarray(keep, dtype=np.int64)
    for lo in range(0, len(rows), _WRITE_BLOCK):
        hi = min(lo + _WRITE_BLOCK, len(rows))
        targets = np.fromiter((rows[r].target for r in range(lo, hi)), dtype=np.int64, count=hi - lo)
        cands = np.concatenate([targets[:, None], negatives[lo:hi]], axis=1)
        perm = np.argsort(rng.random(cands.shape), axis=1)
        cands = np.take_along_axis(cands, perm, axis=1)
        idx = range(lo, hi) if kept is None else kept[(kept >= lo) & (kept < hi)].tolist()
        for r in idx:
            row = rows[r]
            yield {
                "user": row.user,
                "history": list(row.history),
                "target": int(row.target),
                "candidates": cands[r - lo].tolist(),
                "split": split,
                "seed": int(seed),
            }


def _summary(meta: dict) -> str:
    c = meta["counts"]
    lines = [
        f"{meta['dataset']}: {meta['n_items']:,} items, {c['train_users']:,} train users "
        f"({c['train_interactions']:,} train interactions)",
        f"  samples: train {c['train']:,}"
        + (f" (of {c['train_rows']:,})" if c["train"] != c["train_rows"] else "")
        + f" / val {c['val']:,} / test {c['test']:,}"
        + (f" (of {c['test_rows']:,})" if c.get("test_rows", c["test"]) != c["test"] else "")
        + f"; seeds {meta['seeds']}, {meta['num_candidates']} candidates",
    ]
    dropped = ", ".join(f"{k} {v:,}" for k, v in meta["dropped"].items()) or "nothing"
    lines.append(f"  dropped: {dropped}")
    if meta["untitled_items"]:
        lines.append(f"  empty source titles replaced by a placeholder: items {meta['untitled_items']}")
    return "\n".join(lines)


def _check_usable(ds: RawDataset, config: PrepareConfig, files: list[Path]) -> None:
    """Faults that would otherwise surface halfway through writing: no test sample at all, or a row whose user
    knows so much of the catalogue that the negatives cannot be drawn."""
    where = files[0] if files else None
    if not ds.test or not ds.val:
        raise InputError(
            f"no {'test' if not ds.test else 'val'} samples: nothing to evaluate (dropped: {ds.dropped or 'nothing'})",
            where,
        )
    need = config.num_candidates - 1
    if ds.n_items < config.num_candidates:
        raise InputError(
            f"{ds.n_items} items, fewer than num_candidates = {config.num_candidates}; lower --num-candidates",
            files[-1] if files else None,
        )
    for split in ("train", "val", "test"):
        row = max(ds.rows(split), key=lambda r: len(r.known_items), default=None)
        if row is not None and ds.n_items - len(row.known_items) < need:
            raise InputError(
                f"user {row.user} has interacted with {len(row.known_items)} of the {ds.n_items} "
                f"items, leaving fewer than the {need} negatives num_candidates = "
                f"{config.num_candidates} needs; lower --num-candidates or leave the user out",
                where,
            )


def prepare(config: PrepareConfig, run_dir: RunDir | str | Path, force: bool = False) -> PreparedData:
    """Run the stage (or skip it when its manifest matches) and return the prepared data."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    source = get_source(config.dataset)
    options = config.source_options()
    located = source.locate(options)
    data_from = {"from": located.label, "path": str(located.root.resolve()) if located.root else None}
    for p in located.files:  # before the manifest hashes them: a folder, a loop or no permission is one error
        check_input(p, f"input of dataset {config.dataset!r}")
    inputs = [p.resolve() for p in located.files]
    seed0 = config.seeds[0]
    out = run.prepared
    if not force and (out / "meta.json").exists() and run.manifest_matches("prepare", inputs, config, seed0):
        log.info(f"prepare: {out} is up to date (manifest matches), skipped")
        return PreparedData(out)

    log.info(f"prepare: {config.dataset} from {located.label}" + (f" ({data_from['path']})" if located.root else ""))
    t0 = time.perf_counter()
    ds: RawDataset = located.load(options)
    ds.validate()
    _check_usable(ds, config, located.files)
    t_load = time.perf_counter() - t0

    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.seed*.jsonl.gz"):  # a previous run with other seeds must not leave files behind
        stale.unlink()
    written: list[Path] = []
    items = [
        {"item": i, "title": ds.titles[i]} | ({"source_id": ds.source_ids[i]} if ds.source_ids else {})
        for i in range(ds.n_items)
    ]
    write_jsonl(out / "items.jsonl", items)
    write_jsonl(
        out / "train_sequences.jsonl.gz",
        ({"user": s.user, "items": s.items, "times": s.times} for s in ds.train_sequences),
    )
    written += [out / "items.jsonl", out / "train_sequences.jsonl.gz"]
    train_users = len(ds.train_sequences)
    train_interactions = sum(len(s.items) for s in ds.train_sequences)
    ds.train_sequences = []  # written; frees ~100 bytes per interaction before the candidates are drawn

    t1 = time.perf_counter()
    counts: dict[str, int] = {}
    keep_train = _subset_indices(len(ds.train), config.max_train_samples, ds.name, "train-subsample", seed0)
    train_rows = ds.train if keep_train is None else [ds.train[i] for i in keep_train]
    jobs = [("train", seed0, train_rows)] + [(s, k, ds.rows(s)) for k in config.seeds for s in ("val", "test")]
    # Test samples to keep: drawn once, from the first seed, so every candidate seed scores the same users and
    # results stay paired across seeds and methods.
    test_rows = len(ds.rows("test"))
    keep_test = _subset_indices(test_rows, config.max_test_samples, ds.name, "test-subsample", seed0)
    for split, seed, rows in jobs:
        # Freeze over the full split first, then subset: a kept sample's candidates are the ones the full
        # test set gives it, so subset rows can be compared sample by sample with full-set results.
        lines = _frozen_lines(
            rows,
            dataset=ds.name,
            split=split,
            seed=seed,
            n_items=ds.n_items,
            num_candidates=config.num_candidates,
            keep=keep_test if split == "test" else None,
        )
        path = samples_path(out, split, seed)
        counts[split] = write_jsonl(path, lines)
        written.append(path)
    t_cands = time.perf_counter() - t1

    titles = list(ds.titles.values())
    meta: dict[str, Any] = {
        "dataset": ds.name,
        "n_items": ds.n_items,
        "seeds": config.seeds,
        "num_candidates": config.num_candidates,
        "max_history": config.max_history,
        "min_history": config.min_history,
        "counts": {
            **counts,
            "train_rows": len(ds.train),
            "test_rows": test_rows,
            "train_users": train_users,
            "train_interactions": train_interactions,
        },
        "dropped": ds.dropped,
        "duplicate_titles": len(titles) - len(set(titles)),
        "untitled_items": ds.untitled,
        "data": data_from,
        "sources": {str(p): sha256_file(p) for p in inputs},
        "config": asdict(config),
        "seconds": {
            "load": round(t_load, 2),
            "samples": round(t_cands, 2),
            "total": round(time.perf_counter() - t0, 2),
        },
    }
    atomic_write_json(out / "meta.json", meta, ensure_ascii=False)
    written.append(out / "meta.json")
    run.write_manifest("prepare", inputs, config, seed0, outputs=written, extra={"data": data_from})
    log.info(_summary(meta))
    log.info(
        f"  wrote {out} in {meta['seconds']['total']:.1f}s (load {t_load:.1f}s, candidates + samples {t_cands:.1f}s)"
    )
    return PreparedData(out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, choices=sorted(SOURCES), help="dataset source")
    p.add_argument("--run", required=True, help="run folder (writes <run>/prepared/)")
    p.add_argument(
        "--data-dir",
        default=None,
        help="data directory, looked in first (then $R2REC_DATA_DIR, "
        "../shared/data, and for ml-100k the copy in an installed recbole)",
    )
    p.add_argument("--seeds", default="0,1,2", help="comma-separated candidate seeds (default 0,1,2)")
    p.add_argument("--num-candidates", type=int, default=20)
    p.add_argument("--max-history", type=int, default=10)
    p.add_argument("--min-history", type=int, default=3)
    p.add_argument("--max-train-samples", type=int, default=None, help="seeded subsample of the train samples")
    p.add_argument("--min-rating", type=int, default=0, help="ml-100k: keep ratings >= this (default: all)")
    p.add_argument("--interactions", default=None, help="csv: user,item,timestamp file")
    p.add_argument("--titles", default=None, help="csv: item,title or id::title file")
    p.add_argument("--force", action="store_true", help="rebuild even when the manifest matches")


def run(args: argparse.Namespace) -> int:
    values = {
        k: getattr(args, k)
        for k in (
            "dataset",
            "data_dir",
            "seeds",
            "num_candidates",
            "max_history",
            "min_history",
            "max_train_samples",
            "min_rating",
            "interactions",
            "titles",
        )
    }
    config = build(PrepareConfig, values, where="prepare")
    prepare(config, args.run, force=args.force)
    return 0
