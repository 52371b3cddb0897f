"""The registry of dataset sources: ``SOURCES[name]`` -> a :class:`Source` (its input files and its loader)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import csv_source, llara, movielens
from .raw import RawDataset


@dataclass(frozen=True)
class SourceOptions:
    """What a loader may need; each source uses the fields that concern it."""

    data_dir: Path
    min_history: int = 3
    max_history: int = 10
    min_rating: int = 0              # ml-100k only
    interactions: Path | None = None  # csv only
    titles: Path | None = None        # csv only


@dataclass(frozen=True)
class Source:
    name: str
    description: str
    files: Callable[[SourceOptions], list[Path]]
    load: Callable[[SourceOptions], RawDataset]


def _csv_files(o: SourceOptions) -> list[Path]:
    if o.interactions is None or o.titles is None:
        raise ValueError("dataset 'csv' needs --interactions FILE (user,item,timestamp) and --titles FILE")
    return [Path(o.interactions), Path(o.titles)]


def _llara(name: str, what: str) -> Source:
    return Source(
        name, f"LLaRA's user-disjoint {what} split (portable/*.jsonl.gz)",
        files=lambda o: llara.files(o.data_dir / name),
        load=lambda o: llara.load(name, o.data_dir / name, min_history=o.min_history, max_history=o.max_history),
    )


SOURCES: dict[str, Source] = {
    "llara-movielens": _llara("llara-movielens", "MovieLens-100K"),
    "llara-lastfm": _llara("llara-lastfm", "LastFM"),
    "ml-100k": Source(
        "ml-100k", "raw MovieLens 100K, per-user temporal leave-one-out over all 943 users",
        files=lambda o: movielens.files(o.data_dir / "ml-100k"),
        load=lambda o: movielens.load(o.data_dir / "ml-100k", min_history=o.min_history,
                                      max_history=o.max_history, min_rating=o.min_rating),
    ),
    "csv": Source(
        "csv", "any user,item,timestamp CSV plus a titles file, per-user temporal leave-one-out",
        files=_csv_files,
        load=lambda o: csv_source.load(*_csv_files(o), min_history=o.min_history, max_history=o.max_history),
    ),
}


def get_source(name: str) -> Source:
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(SOURCES)}")
    return SOURCES[name]
