"""Any interaction log: a ``user,item,timestamp`` CSV plus an item-title file -> per-user leave-one-out.

- Interactions: comma-separated ``user,item,timestamp`` (integer timestamps; any order); the first line is
  a header when its timestamp field is not an integer.
- Titles: either ``item,title`` CSV (quoted titles may hold commas; a first line ``item,title``/``id,name``
  is a header) or ``id::title`` lines (LLaRA's ``id2name.txt`` format), recognised by ``::`` on the first line.
- Item ids are arbitrary strings; they become ``0..n-1`` in title-file order (``source_ids`` keeps them).
- Faults raise ValueError naming file, line and fault: malformed line, unknown item (not in the titles),
  missing or empty title, duplicate rows (same user, item, timestamp), empty file. Users too short for a
  leave-one-out split are dropped and counted (never silently).
"""

from __future__ import annotations

import csv
from pathlib import Path

from tqdm import tqdm

from .loo import leave_one_out
from .raw import RawDataset

_TITLE_HEADERS = {("item", "title"), ("item_id", "title"), ("id", "title"), ("id", "name"), ("item", "name"),
                  ("item_id", "name")}


def read_titles(path: Path) -> tuple[dict[int, str], list[str]]:
    """-> ({contiguous id: title}, source ids in that order)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: titles file not found")
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().splitlines()
    first = next((ln for ln in lines if ln.strip()), None)
    if first is None:
        raise ValueError(f"{path}: empty file")
    id2name = "::" in first
    titles: dict[int, str] = {}
    ids: list[str] = []
    where: dict[str, int] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if id2name:
            key, sep, title = line.partition("::")
            fields = [key, title] if sep else [key]
        else:
            fields = next(csv.reader([line]))
        if len(fields) > 2:
            raise ValueError(f"{path}:{lineno}: malformed line ({len(fields)} fields; expected 'item,title' "
                             "with titles holding commas quoted, or 'id::title')")
        key = fields[0].strip()
        title = fields[1].strip() if len(fields) == 2 else ""
        if not ids and (key.lower(), title.lower()) in _TITLE_HEADERS:
            continue  # header line
        if not key:
            raise ValueError(f"{path}:{lineno}: empty item id")
        if not title:
            raise ValueError(f"{path}:{lineno}: missing or empty title for item {key!r}")
        if key in where:
            raise ValueError(f"{path}:{lineno}: duplicate item id {key!r} (first at line {where[key]})")
        where[key] = lineno
        titles[len(ids)] = title
        ids.append(key)
    if not ids:
        raise ValueError(f"{path}: no titles (only a header)")
    return titles, ids


def load(interactions: Path, titles_path: Path, *, min_history: int = 3, max_history: int = 10,
         name: str = "csv") -> RawDataset:
    interactions = Path(interactions)
    if not interactions.exists():
        raise FileNotFoundError(f"{interactions}: interactions file not found")
    titles, source_ids = read_titles(titles_path)
    index = {sid: i for i, sid in enumerate(source_ids)}
    events: dict[str, list[tuple[int, int]]] = {}
    seen: dict[tuple[str, int, int], int] = {}
    with open(interactions, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        for fields in tqdm(reader, desc=f"read {interactions.name}", unit=" rows", disable=None, leave=False):
            lineno = reader.line_num
            if not fields or all(not x.strip() for x in fields):
                continue
            if len(fields) != 3:
                raise ValueError(f"{interactions}:{lineno}: malformed line (expected 3 fields "
                                 f"'user,item,timestamp', got {len(fields)})")
            user, item, ts = (x.strip() for x in fields)
            try:
                t = int(ts)
            except ValueError:
                if lineno == 1 and not seen:
                    continue  # header
                raise ValueError(f"{interactions}:{lineno}: malformed line "
                                 f"(timestamp {ts!r} is not an integer)") from None
            if not user or not item:
                raise ValueError(f"{interactions}:{lineno}: malformed line (empty user or item)")
            if item not in index:
                raise ValueError(f"{interactions}:{lineno}: unknown item id {item!r} (not in {Path(titles_path).name})")
            key = (user, index[item], t)
            if key in seen:
                raise ValueError(f"{interactions}:{lineno}: duplicate row (user {user!r}, item {item!r}, "
                                 f"timestamp {t}; first at line {seen[key]})")
            seen[key] = lineno
            events.setdefault(user, []).append((t, index[item]))
    if not seen:
        raise ValueError(f"{interactions}: empty file (no interactions)")
    ds = leave_one_out(name, titles, events, min_history=min_history, max_history=max_history,
                       source_files=[interactions, Path(titles_path)])
    ds.source_ids = source_ids
    return ds
