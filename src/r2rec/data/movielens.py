"""Raw GroupLens MovieLens 100K (``u.data`` + ``u.item``) -> per-user temporal leave-one-out over all users.

Item ids are ``movie_id - 1`` (as LLaRA), titles follow LLaRA's rule (:mod:`r2rec.data.titles`), and every
rating is kept unless ``min_rating`` says otherwise (LLaRA keeps ratings >= 3).
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from .loo import leave_one_out
from .raw import RawDataset
from .titles import fill_empty_titles, read_u_item


def files(root: Path) -> list[Path]:
    return [Path(root) / "u.data", Path(root) / "u.item"]


def load(root: Path, *, min_history: int = 3, max_history: int = 10, min_rating: int = 0,
         name: str = "ml-100k") -> RawDataset:
    data, item_file = files(root)
    for p in (data, item_file):
        if not p.exists():
            raise FileNotFoundError(f"{p}: missing ({name} needs the GroupLens u.data and u.item)")
    titles = read_u_item(item_file)
    untitled = fill_empty_titles(titles)
    events: dict[int, list[tuple[int, int]]] = {}
    seen: dict[tuple[int, int, int], int] = {}
    below = 0
    with open(data, encoding="latin-1") as f:
        for lineno, line in enumerate(tqdm(f, desc=f"read {data.name}", unit=" lines", disable=None, leave=False), 1):
            if not line.strip():
                continue
            fields = line.split()
            try:
                user, movie, rating, ts = (int(x) for x in fields)
            except ValueError:
                raise ValueError(f"{data}:{lineno}: malformed line (expected 4 integers "
                                 f"'user item rating timestamp', got {line.strip()!r})") from None
            item = movie - 1
            if item not in titles:
                raise ValueError(f"{data}:{lineno}: unknown item id {movie} (not in {item_file.name})")
            key = (user, item, ts)
            if key in seen:
                raise ValueError(f"{data}:{lineno}: duplicate of line {seen[key]} (user {user}, item {movie}, "
                                 f"timestamp {ts})")
            seen[key] = lineno
            if rating < min_rating:
                below += 1
                continue
            events.setdefault(user, []).append((ts, item))
    if not seen:
        raise ValueError(f"{data}: empty file")
    dropped = {f"ratings_below_{min_rating}": below} if below else {}
    by_user = {str(u): events[u] for u in sorted(events)}
    ds = leave_one_out(name, titles, by_user, min_history=min_history, max_history=max_history,
                       source_files=[data, item_file], dropped=dropped)
    ds.untitled = untitled
    return ds
