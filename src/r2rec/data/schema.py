"""The Sample schema and the on-disk layout of a prepared dataset.

Everything downstream (baselines, graph, chains, thoughts, LLM training, evaluation) reads a run's
``prepared/`` folder through this module only, so the layout is defined in one place:

    prepared/items.jsonl                  {"item": int, "title": str}            one line per catalogue item
    prepared/train_sequences.jsonl.gz     {"user": str, "items": [int], "times": [int]}
                                          every *train* interaction of a train user, oldest first. The
                                          graph and the classical baselines are built from this file only.
    prepared/{split}.seed{k}.jsonl.gz     Sample lines, split in {train, val, test}; candidates frozen
                                          per (dataset, split, seed).
    prepared/meta.json                    dataset name, counts, dropped-row counts, candidate settings.

A val/test user contributes nothing but the history shown in their own sample.
"""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator


@dataclass(frozen=True)
class Sample:
    """One next-item prediction problem.

    ``history``: the user's last <=10 item ids before the target, oldest first.
    ``candidates``: the target plus negatives the user never interacted with, shuffled (frozen per seed).
    """

    user: str
    history: tuple[int, ...]
    target: int
    candidates: tuple[int, ...]
    split: str
    seed: int

    def to_json(self) -> dict:
        # Built by hand: dataclasses.asdict deep-copies and is ~10x slower on 66k samples.
        return {"user": self.user, "history": list(self.history), "target": self.target,
                "candidates": list(self.candidates), "split": self.split, "seed": self.seed}

    @classmethod
    def from_json(cls, d: dict) -> "Sample":
        return cls(
            user=str(d["user"]),
            history=tuple(int(i) for i in d["history"]),
            target=int(d["target"]),
            candidates=tuple(int(i) for i in d["candidates"]),
            split=str(d["split"]),
            seed=int(d["seed"]),
        )


@dataclass
class UserSequence:
    """All train interactions of one train user, oldest first (``times`` are timestamps or positions)."""

    user: str
    items: list[int]
    times: list[int] = field(default_factory=list)


def _open(path: Path, mode: str = "rt", gz: bool | None = None):
    path = Path(path)
    gz = path.suffix == ".gz" if gz is None else gz
    if gz and "w" in mode:
        # mtime=0: the same rows give byte-identical files, so the sha256 that later stages put in their
        # manifests changes only when the content does. Level 6 writes ~4x faster than the default 9
        # for ~3% larger files.
        return io.TextIOWrapper(gzip.GzipFile(path, "wb", compresslevel=6, mtime=0), encoding="utf-8")
    if gz:
        return gzip.open(path, mode, encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Write rows atomically (tmp file + rename) so an interrupted write never leaves a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    # The tmp name ends in ".tmp": compress according to the final name, not the tmp one.
    with _open(tmp, "wt", gz=path.suffix == ".gz") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def read_jsonl(path: Path) -> Iterator[dict]:
    with _open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: malformed JSON line ({e.msg})") from None


class PreparedData:
    """Read access to ``<run>/prepared``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        if not (self.root / "meta.json").exists():
            raise FileNotFoundError(f"{self.root}: no prepared data (run `r2rec prepare` first)")
        self.meta: dict = json.loads((self.root / "meta.json").read_text())
        self._titles: dict[int, str] | None = None

    @property
    def titles(self) -> dict[int, str]:
        if self._titles is None:
            self._titles = {int(r["item"]): r["title"] for r in read_jsonl(self.root / "items.jsonl")}
        return self._titles

    @property
    def n_items(self) -> int:
        return int(self.meta["n_items"])

    @property
    def seeds(self) -> list[int]:
        return list(self.meta["seeds"])

    def train_sequences(self) -> list[UserSequence]:
        return [
            UserSequence(str(r["user"]), [int(i) for i in r["items"]], [int(t) for t in r.get("times", [])])
            for r in read_jsonl(self.root / "train_sequences.jsonl.gz")
        ]

    def samples(self, split: str, seed: int = 0) -> list[Sample]:
        path = self.root / f"{split}.seed{seed}.jsonl.gz"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no {split} samples for seed {seed} (prepared seeds: {self.seeds})")
        return [Sample.from_json(r) for r in read_jsonl(path)]


def samples_path(root: Path, split: str, seed: int) -> Path:
    return Path(root) / f"{split}.seed{seed}.jsonl.gz"
