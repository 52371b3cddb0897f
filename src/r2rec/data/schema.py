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
from typing import Iterable

from r2rec.errors import InputError, InputNotFound
from r2rec.io import INT64_MAX, atomic_open, check_input, iter_jsonl, read_jsonl

__all__ = ["PreparedData", "Sample", "UserSequence", "read_jsonl", "samples_path", "write_jsonl"]


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
        return {
            "user": self.user,
            "history": list(self.history),
            "target": self.target,
            "candidates": list(self.candidates),
            "split": self.split,
            "seed": self.seed,
        }

    @classmethod
    def from_json(cls, d: dict) -> Sample:
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


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Write rows atomically (:func:`r2rec.io.atomic_open`) so an interrupted write never leaves a half file;
    gzip-compressed when ``path`` ends in ``.gz``."""
    path = Path(path)
    n = 0
    with atomic_open(path, "wb") as raw:
        # mtime=0 and a fixed name in the gzip header: the same rows give byte-identical files, so the sha256
        # that later stages put in their manifests changes only when the content does. (The name is the one
        # earlier versions wrote, so files written before and after agree too.) Level 6 writes ~4x faster than
        # the default 9 for ~3% larger files.
        gz = (
            gzip.GzipFile(path.name + ".tmp", "wb", compresslevel=6, fileobj=raw, mtime=0)
            if path.suffix == ".gz"
            else None
        )
        f = io.TextIOWrapper(gz or raw, encoding="utf-8")
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
        f.flush()
        f.detach()  # raw stays open: atomic_open fsyncs and closes it
        if gz is not None:
            gz.close()  # the gzip trailer
    return n


_INT_ONLY = {int}


def _ids(row: dict, key: str, n_items: int, path: Path, lineno: int) -> list[int]:
    """``row[key]``: a list of item ids in ``0..n_items-1``, else InputError naming the line."""
    value = row.get(key)
    if type(value) is list and (
        not value or (set(map(type, value)) == _INT_ONLY and min(value) >= 0 and max(value) < n_items)
    ):
        return value  # the one test every line pays for; the faults are told apart below
    if not isinstance(value, list) or not all(type(i) is int for i in value):
        raise InputError(f"{key!r} must be a list of integer item ids", path, lineno)
    bad = next(i for i in value if not 0 <= i < n_items)
    raise InputError(f"{key!r} holds item {bad}, outside the catalogue 0..{n_items - 1}", path, lineno)


def _user(row: dict, path: Path, lineno: int) -> str:
    user = row.get("user")
    if type(user) not in (str, int) or user == "":
        raise InputError("'user' must be a non-empty string or an integer", path, lineno)
    return str(user)


def _sample(row: dict, path: Path, lineno: int, n_items: int, split: str, seed: int) -> Sample:
    """A checked Sample: the fields a hand-edited or damaged file can get wrong are faults naming the line."""
    user = _user(row, path, lineno)
    history = _ids(row, "history", n_items, path, lineno)
    candidates = _ids(row, "candidates", n_items, path, lineno)
    target = row.get("target")
    if type(target) is not int or target not in candidates:
        raise InputError(f"'target' must be an item id among the candidates, got {target!r}", path, lineno)
    if len(set(candidates)) != len(candidates):
        raise InputError("'candidates' holds an item twice", path, lineno)
    if row.get("split") != split or row.get("seed") != seed:
        raise InputError(
            f"a sample of split {row.get('split')!r} seed {row.get('seed')!r} in the file of "
            f"split {split!r} seed {seed}",
            path,
            lineno,
        )
    return Sample(user, tuple(history), target, tuple(candidates), split, seed)


class PreparedData:
    """Read access to ``<run>/prepared``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        meta = self.root / "meta.json"
        if not meta.exists() and not meta.is_symlink():
            raise InputNotFound(f"no prepared data (no {meta.name}; run `r2rec prepare` first)", self.root)
        check_input(meta, "prepared meta.json")
        try:
            self.meta: dict = json.loads(meta.read_bytes())
        except (ValueError, RecursionError) as e:
            where = f" at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else ""
            raise InputError(
                f"not valid JSON{where} ({getattr(e, 'msg', e)}); run `r2rec prepare --force`", meta
            ) from None
        seeds = self.meta.get("seeds") if isinstance(self.meta, dict) else None
        n_items = self.meta.get("n_items") if isinstance(self.meta, dict) else None
        if (
            type(n_items) is not int
            or n_items < 1
            or not isinstance(seeds, list)
            or not seeds
            or not all(type(s) is int for s in seeds)
        ):
            raise InputError(
                "not a prepare meta.json (needs an integer n_items >= 1 and a list of integer "
                "seeds); run `r2rec prepare --force`",
                meta,
            )
        self._titles: dict[int, str] | None = None

    @property
    def titles(self) -> dict[int, str]:
        if self._titles is None:
            path = self.root / "items.jsonl"
            titles: dict[int, str] = {}
            for lineno, r in iter_jsonl(path, "prepared items file"):
                item, title = r.get("item"), r.get("title")
                if type(item) is not int or not 0 <= item < self.n_items or item in titles:
                    raise InputError(
                        f"'item' must be a new integer id in 0..{self.n_items - 1}, got {item!r}", path, lineno
                    )
                if not isinstance(title, str) or not title.strip():
                    raise InputError(f"'title' of item {item} must be a non-empty string", path, lineno)
                titles[item] = title
            self._titles = titles
        return self._titles

    @property
    def n_items(self) -> int:
        return int(self.meta["n_items"])

    @property
    def seeds(self) -> list[int]:
        return list(self.meta["seeds"])

    def train_sequences(self) -> list[UserSequence]:
        path = self.root / "train_sequences.jsonl.gz"
        out = []
        for lineno, r in iter_jsonl(path, "prepared train sequences"):
            items = _ids(r, "items", self.n_items, path, lineno)
            times = r.get("times", [])
            if (
                not isinstance(times, list)
                or (times and len(times) != len(items))
                or not all(type(t) is int and 0 <= t <= INT64_MAX for t in times)
            ):
                raise InputError(
                    f"'times' must be empty or one integer timestamp in 0..2^63-1 per item ({len(items)})", path, lineno
                )
            out.append(UserSequence(_user(r, path, lineno), items, times))
        return out

    def samples(self, split: str, seed: int = 0) -> list[Sample]:
        path = self.root / f"{split}.seed{seed}.jsonl.gz"
        if not path.exists() and not path.is_symlink():
            raise InputNotFound(f"no {split} samples for seed {seed} (prepared seeds: {self.seeds})", path)
        return [
            _sample(r, path, lineno, self.n_items, split, seed)
            for lineno, r in iter_jsonl(path, f"prepared {split} samples")
        ]


def samples_path(root: Path, split: str, seed: int) -> Path:
    return Path(root) / f"{split}.seed{seed}.jsonl.gz"
