"""Any interaction log: a ``user,item,timestamp`` CSV plus an item-title file -> per-user leave-one-out.

- Interactions: comma-separated ``user,item,timestamp``, any order; timestamps are integers in 0..2^63-1
  (Unix seconds or any other order key). The first line is a header when its timestamp is no number at all
  and its item is not an item id.
- Titles: either ``item,title`` CSV (quoted titles may hold commas; a first line of column names such as
  ``item,title``, ``id,name`` or ``movie_id,movie_title`` is a header) or ``id::title`` lines (LLaRA's
  ``id2name.txt`` format), recognised by ``::`` on the first line.
- Both files are UTF-8 (a byte-order mark is dropped) with LF or CRLF line endings.
- Item ids are arbitrary strings; they become ``0..n-1`` in title-file order (``source_ids`` keeps them).
- Every fault is an :class:`~r2rec.errors.InputError` naming file, line and fault (:func:`r2rec.io.iter_lines`
  for the faults of the file itself): malformed line or CSV quoting, a timestamp that is not an integer, is
  negative or exceeds int64, unknown item (not in the titles), missing or empty title, a control character in
  a title or id, duplicate item ids, duplicate rows (same user, item, timestamp), empty or header-only file.
  Users too short for a leave-one-out split are dropped and counted (never silently); a log where every user
  is too short is an error.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from r2rec.errors import InputError
from r2rec.io import INT64_MAX, check_input, clip, iter_lines

from .loo import leave_one_out
from .raw import RawDataset
from .titles import check_text

log = logging.getLogger(__name__)

# A first line whose two fields are column names like these is a header (compared lowercased, without
# spaces, '_' and '-'): "item,title", "movie_id,movie_title", "id,name", ...
_ID_HEADERS = {
    "item",
    "itemid",
    "id",
    "movie",
    "movieid",
    "track",
    "trackid",
    "artist",
    "artistid",
    "product",
    "productid",
    "asin",
    "sourceid",
}
_TITLE_HEADERS = {
    "title",
    "name",
    "itemtitle",
    "itemname",
    "movietitle",
    "moviename",
    "tracktitle",
    "trackname",
    "artistname",
    "producttitle",
    "productname",
}
_INT = re.compile(r"[+-]?[0-9]+")


def _column(text: str) -> str:
    return re.sub(r"[\s_-]", "", text.lower())


def _tab_hint(fields: list[str]) -> str:
    return " (the line is tab-separated; fields are separated by commas)" if any("\t" in f for f in fields) else ""


def _csv_fault(e: csv.Error) -> str:
    if "unexpected end of data" in str(e):
        return "malformed CSV line (a quote is opened and never closed)"
    return f"malformed CSV line ({e})"


def _csv_line(line: str, path: Path, lineno: int) -> list[str]:
    try:
        return next(csv.reader([line], strict=True), [])
    except csv.Error as e:
        raise InputError(_csv_fault(e), path, lineno) from None


def read_titles(path: Path) -> tuple[dict[int, str], list[str]]:
    """-> ({contiguous id: title}, source ids in that order)."""
    path = Path(path)
    titles: dict[int, str] = {}
    ids: list[str] = []
    where: dict[str, int] = {}
    id2name: bool | None = None  # decided by the first non-blank line
    header = False
    for lineno, line in iter_lines(path, "titles file"):
        if not line.strip():
            continue
        if id2name is None:
            id2name = "::" in line
        if id2name:
            key, sep, title = line.partition("::")
            fields = [key, title] if sep else [key]
        else:
            fields = _csv_line(line, path, lineno)
        if len(fields) > 2:
            log_like = len(fields) == 3 and (_INT.fullmatch(fields[2].strip()) or _column(fields[2]) == "timestamp")
            raise InputError(
                f"malformed line ({len(fields)} fields; expected 'item,title' with titles holding "
                "commas quoted, or 'id::title')"
                + (" - an interactions log? --titles takes the item titles" if log_like else ""),
                path,
                lineno,
            )
        key = fields[0].strip()
        title = fields[1].strip() if len(fields) == 2 else ""
        if not ids and not header and _column(key) in _ID_HEADERS and _column(title) in _TITLE_HEADERS:
            header = True
            continue
        if not key:
            raise InputError("empty item id", path, lineno)
        if not title:
            raise InputError(f"missing or empty title for item {clip(key)}{_tab_hint(fields)}", path, lineno)
        check_text(key, "item id", path, lineno)
        check_text(title, "title", path, lineno)
        if key in where:
            raise InputError(f"duplicate item id {clip(key)} (first at line {where[key]})", path, lineno)
        where[key] = lineno
        titles[len(ids)] = title
        ids.append(key)
    if not ids:
        raise InputError("no titles (only a header)" if header else "empty file", path)
    return titles, ids


def _timestamp(ts: str, path: Path, lineno: int) -> int:
    """A timestamp field -> int in 0..2^63-1 (the int64 the graph stores; -1 marks "no interaction" there)."""
    if not _INT.fullmatch(ts):
        raise InputError(
            f"malformed line (timestamp {clip(ts)} is not an integer; timestamps are whole "
            "numbers such as Unix seconds)",
            path,
            lineno,
        )
    if len(ts.lstrip("+-0")) > 19 or int(ts) > INT64_MAX:
        raise InputError(f"timestamp {clip(ts)} is too large (at most 2^63-1)", path, lineno)
    t = int(ts)
    if t < 0:
        raise InputError(
            f"timestamp {t} is negative (timestamps order a user's interactions and must be >= 0)", path, lineno
        )
    return t


def _records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each CSV record of the interactions file; csv faults name the line."""
    reader = csv.reader((text + "\n" for _, text in iter_lines(path, "interactions file")), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:  # named at the line where the record starts (where a stray quote opened)
            raise InputError(_csv_fault(e), path, start) from None
        if reader.line_num != start:
            raise InputError(
                "malformed CSV line (a quoted field runs over several lines: a quote never closed?)", path, start
            )
        yield start, fields


def _is_header(item: str, ts: str, index: dict[str, int]) -> bool:
    """The first line is a header when its timestamp is no number at all and its item is not an item id."""
    try:
        float(ts)
        return False
    except ValueError:
        return item not in index


def load(
    interactions: Path, titles_path: Path, *, min_history: int = 3, max_history: int = 10, name: str = "csv"
) -> RawDataset:
    interactions, titles_path = Path(interactions), Path(titles_path)
    check_input(interactions, "interactions file")
    titles, source_ids = read_titles(titles_path)
    index = {sid: i for i, sid in enumerate(source_ids)}
    events: dict[str, list[tuple[int, int]]] = {}
    seen: dict[tuple[str, int, int], int] = {}
    first = True
    for lineno, fields in tqdm(
        _records(interactions), desc=f"read {interactions.name}", unit=" rows", disable=None, leave=False
    ):
        if not fields or all(not x.strip() for x in fields):
            continue
        if len(fields) != 3:
            hint = _tab_hint(fields) or (
                " - a titles file? --interactions takes the user,item,timestamp log"
                if first and len(fields) <= 2
                else ""
            )
            raise InputError(
                f"malformed line (expected 3 fields 'user,item,timestamp', got {len(fields)}){hint}",
                interactions,
                lineno,
            )
        user, item, ts = (x.strip() for x in fields)
        if first:
            first = False
            if _is_header(item, ts, index):
                log.debug(f"{interactions}:{lineno}: header {fields} skipped")
                continue
        t = _timestamp(ts, interactions, lineno)
        if not user or not item:
            raise InputError("malformed line (empty user or item)", interactions, lineno)
        check_text(user, "user id", interactions, lineno)
        if item not in index:
            raise InputError(f"unknown item id {clip(item)} (not in {titles_path.name})", interactions, lineno)
        key = (user, index[item], t)
        if key in seen:
            raise InputError(
                f"duplicate row (user {clip(user)}, item {clip(item)}, timestamp {t}; first at line {seen[key]})",
                interactions,
                lineno,
            )
        seen[key] = lineno
        events.setdefault(user, []).append((t, index[item]))
    if not seen:
        raise InputError("empty file (no interactions)", interactions)
    ds = leave_one_out(
        name, titles, events, min_history=min_history, max_history=max_history, source_files=[interactions, titles_path]
    )
    ds.source_ids = source_ids
    return ds
