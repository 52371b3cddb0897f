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

import numpy as np
from tqdm import tqdm

from r2rec.errors import InputError
from r2rec.io import INT64_MAX, MAX_LINE_BYTES, check_input, clip, iter_lines

from .budget import check_memory, estimate_rows
from .loo import leave_one_out, leave_one_out_sorted
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


# Bytes that send a log to the line-by-line reader (past a header line): C0 controls other than LF (CR, tab, NUL,
# ...), space, double quote, DEL and every non-ASCII byte. A log without them is plain comma-separated ASCII,
# which pyarrow splits exactly as csv.reader does, with nothing to strip, unquote or decode.
_ODD_BYTE = np.zeros(256, dtype=bool)
_ODD_BYTE[:0x20] = True
_ODD_BYTE[0x0A] = False
_ODD_BYTE[[0x20, 0x22, 0x7F]] = True
_ODD_BYTE[0x80:] = True
_SCAN_BYTES = 1 << 26
# Peak memory of the whole prepare stage on a csv log, per row and fixed: measured 0.84 GiB at 1M rows and
# 5.37 GiB at 10M (~540 bytes per extra row; default seeds and candidates, bench/bench_data_scale.py), plus
# headroom. Most of it is one Row object per train sample, which the frozen candidate draw takes.
PREPARE_BYTES_PER_ROW = 650
PREPARE_BASE_BYTES = 400 << 20


def _plain_start(path: Path, index: dict[str, int]) -> int | None:
    """Byte offset where the data of a plain log starts (after a header line, if any), or None when the log
    needs the line-by-line reader: gzip, a byte-order mark, an odd byte (``_ODD_BYTE``), a first line that
    is neither a clean header nor clean data."""
    if path.name.endswith(".gz"):
        return None
    size = path.stat().st_size
    with open(path, "rb") as f:
        first = f.readline(MAX_LINE_BYTES + 1)
    head = np.frombuffer(first[:-1], dtype=np.uint8)
    # A header may hold quotes and spaces (csv.reader unquotes it, as the line reader does); no control byte.
    if not first.endswith(b"\n") or not first.strip() or not first.isascii() or ((head < 0x20) | (head == 0x7F)).any():
        return None
    try:
        fields = next(csv.reader([first.decode()[:-1]], strict=True), [])
    except csv.Error:
        return None
    if len(fields) != 3:
        return None
    start = len(first) if _is_header(fields[1].strip(), fields[2].strip(), index) else 0
    if start < size:
        data = np.memmap(path, dtype=np.uint8, mode="r")
        for lo in range(start, size, _SCAN_BYTES):
            if _ODD_BYTE[data[lo : lo + _SCAN_BYTES]].any():
                return None
        del data
    return start


def _read_plain(path: Path, index: dict[str, int], source_ids: list[str]):
    """Vectorised read of a plain log (pyarrow): ``(user ids in order of first appearance, user code, item,
    timestamp)`` per row, sorted by (user, timestamp, item); None when anything is off (a malformed line, an
    empty field, an unknown item, a timestamp that is not a non-negative int64, a duplicate row), so that the
    line-by-line reader finds the fault and names its line."""
    start = _plain_start(path, index)
    if start is None:
        return None
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    names = ["user", "item", "timestamp"]
    try:
        table = pacsv.read_csv(
            str(path),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=int(start > 0), block_size=1 << 24),
            parse_options=pacsv.ParseOptions(quote_char=False, escape_char=False, ignore_empty_lines=True),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in names},
                null_values=[],
                strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    if table.num_rows == 0 or any(table[c].null_count for c in names):
        return None
    lengths = [pc.min_max(pc.binary_length(table[c])).as_py() for c in names]
    if min(x["min"] for x in lengths) == 0 or sum(x["max"] for x in lengths) + 3 > MAX_LINE_BYTES:
        return None
    # Whole numbers of at most 18 digits: 0..2^63-1 for sure (longer ones, signs: the line reader decides).
    if not pc.all(pc.match_substring_regex(table["timestamp"], r"^[0-9]{1,18}$")).as_py():
        return None
    item = pc.index_in(table["item"], value_set=pa.array(source_ids, pa.string()))
    if item.null_count:
        return None
    item = item.to_numpy().astype(np.int32)
    users = pc.unique(table["user"])  # in order of first appearance, as the line-by-line reader's dict
    user = pc.index_in(table["user"], value_set=users).to_numpy().astype(np.int32)
    ts = pc.cast(table["timestamp"], pa.int64()).to_numpy()
    del table
    order = np.lexsort((item, ts, user))
    user, ts, item = user[order], ts[order], item[order]
    del order
    same = (user[1:] == user[:-1]) & (ts[1:] == ts[:-1]) & (item[1:] == item[:-1])
    if same.any():
        return None
    return users.to_pylist(), user, item, ts


def _sorted_users(user_ids: list[str], user: np.ndarray, item: np.ndarray, ts: np.ndarray):
    """``(user id, items, timestamps)`` per user from the rows sorted by (user, timestamp, item)."""
    bounds = np.concatenate([[0], np.flatnonzero(user[1:] != user[:-1]) + 1, [len(user)]]).tolist()
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        yield user_ids[int(user[lo])], item[lo:hi].tolist(), ts[lo:hi].tolist()


def load(
    interactions: Path, titles_path: Path, *, min_history: int = 3, max_history: int = 10, name: str = "csv"
) -> RawDataset:
    interactions, titles_path = Path(interactions), Path(titles_path)
    check_input(interactions, "interactions file")
    titles, source_ids = read_titles(titles_path)
    index = {sid: i for i, sid in enumerate(source_ids)}
    rows = estimate_rows(interactions)
    check_memory(
        PREPARE_BASE_BYTES + rows * PREPARE_BYTES_PER_ROW,
        interactions,
        f"preparing ~{rows:,} interactions",
        "prepare a sample of the log's users (the split is per user, so that is a smaller dataset of the same "
        "kind), or run where that much memory is free",
    )
    plain = _read_plain(interactions, index, source_ids)
    if plain is not None:
        log.debug(f"{interactions}: read as a plain log ({len(plain[1]):,} rows, {len(plain[0]):,} users)")
        ds = leave_one_out_sorted(
            name,
            titles,
            _sorted_users(*plain),
            min_history=min_history,
            max_history=max_history,
            source_files=[interactions, titles_path],
        )
        ds.source_ids = source_ids
        return ds
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
