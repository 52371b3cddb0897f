"""Raw GroupLens MovieLens 100K (``u.data`` + ``u.item``) -> per-user temporal leave-one-out over all users.

Item ids are ``movie_id - 1`` (as LLaRA), titles follow LLaRA's rule (:mod:`r2rec.data.titles`), and every
rating is kept unless ``min_rating`` says otherwise (LLaRA keeps ratings >= 3). :func:`from_ratings` is shared
with RecBole's copy of the same data (:mod:`r2rec.data.recbole_atomic`), so both copies build one dataset.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from r2rec.errors import InputError, InputNotFound
from r2rec.io import INT64_MAX, check_input, clip, iter_lines

from .loo import leave_one_out
from .raw import RawDataset
from .titles import fill_empty_titles, read_u_item

_INT = re.compile(r"-?[0-9]{1,30}")
# One rating as read from a file: (line number, user id, movie id, rating, timestamp).
Rating = tuple[int, int, int, int, int]


def files(root: Path) -> list[Path]:
    return [Path(root) / "u.data", Path(root) / "u.item"]


def read_u_data(path: Path) -> Iterator[Rating]:
    """``u.data`` (``user item rating timestamp``, whitespace-separated) -> ratings, faults named by line."""
    path = Path(path)
    lines = iter_lines(path, "MovieLens ratings file", encoding="latin-1")
    for lineno, line in tqdm(lines, desc=f"read {path.name}", unit=" lines", disable=None, leave=False):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 4 or not all(_INT.fullmatch(x) for x in fields):
            raise InputError(
                f"malformed line (expected 4 integers 'user item rating timestamp', got {clip(line.strip())})",
                path,
                lineno,
            )
        user, movie, rating, ts = (int(x) for x in fields)
        yield lineno, user, movie, rating, ts


def from_ratings(
    name: str,
    titles: dict[int, str],
    ratings: Iterable[Rating],
    data: Path,
    item_file: Path,
    *,
    min_history: int = 3,
    max_history: int = 10,
    min_rating: int = 0,
) -> RawDataset:
    """Ratings + titles -> the leave-one-out dataset; one body for every file format, so copies agree."""
    untitled = fill_empty_titles(titles)
    events: dict[int, list[tuple[int, int]]] = {}
    seen: dict[tuple[int, int, int], int] = {}
    below = 0
    for lineno, user, movie, rating, ts in ratings:
        item = movie - 1
        if item not in titles:
            raise InputError(f"unknown item id {movie} (not in {Path(item_file).name})", data, lineno)
        if not 0 <= ts <= INT64_MAX:
            raise InputError(f"timestamp {clip(ts)} outside 0..2^63-1", data, lineno)
        key = (user, item, ts)
        if key in seen:
            raise InputError(f"duplicate of line {seen[key]} (user {user}, item {movie}, timestamp {ts})", data, lineno)
        seen[key] = lineno
        if rating < min_rating:
            below += 1
            continue
        events.setdefault(user, []).append((ts, item))
    if not seen:
        raise InputError("empty file", data)
    dropped = {f"ratings_below_{min_rating}": below} if below else {}
    by_user = {str(u): events[u] for u in sorted(events)}
    ds = leave_one_out(
        name,
        titles,
        by_user,
        min_history=min_history,
        max_history=max_history,
        source_files=[Path(data), Path(item_file)],
        dropped=dropped,
    )
    ds.untitled = untitled
    return ds


def load(
    root: Path, *, min_history: int = 3, max_history: int = 10, min_rating: int = 0, name: str = "ml-100k"
) -> RawDataset:
    data, item_file = files(root)
    for p in (data, item_file):
        if not p.exists() and not p.is_symlink():
            raise InputNotFound(f"missing ({name} needs the GroupLens u.data and u.item)", p)
        check_input(p, f"input of {name}")
    return from_ratings(
        name,
        read_u_item(item_file),
        read_u_data(data),
        data,
        item_file,
        min_history=min_history,
        max_history=max_history,
        min_rating=min_rating,
    )
